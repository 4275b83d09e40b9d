"""The GPU benchmark script stays runnable: a CPU smoke run of a few steps."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_gpu_train_script_runs_on_cpu():
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests/benchmarks/gpu_train.py"), "--device", "cpu", "--steps", "1",
         "--batch", "8", "--no-compile", "--backbones", "reference"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "the reference loop" in out.stdout

"""The GPU benchmark script stays runnable, and times pbn's own training step: a CPU smoke run of one step."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_gpu_train_script_runs_on_cpu():
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests/benchmarks/gpu_train.py"), "--device", "cpu", "--steps", "1",
         "--batch", "8", "--no-compile", "--backbones", "compact", "--paintings", "64"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "the reference loop" in out.stdout
    assert "pbn step (fp32 (no autocast on the CPU), channels-last)" in out.stdout


def test_every_benchmark_scripts_imports_of_pbn_resolve():
    """A re-cut of the package must carry the scripts along: each name they import from pbn_cli exists."""
    import ast
    import importlib
    import importlib.util

    missing = []
    for script in sorted((ROOT / "tests/benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pbn_cli"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name) and importlib.util.find_spec(f"{node.module}.{alias.name}") is None:
                        missing.append(f"{script.name}: {node.module}.{alias.name}")
    assert missing == []

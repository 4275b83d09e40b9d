"""Bad numbers and mismatches: one clear line each, exit 2, nothing written.

(NaN losses, --gpu without a GPU, --resume without a checkpoint and eval
without a run have their tests in tests/test_training.py and tests/test_eval.py.)
"""

from __future__ import annotations

import shutil

import pytest
from helpers import invoke, one_error_line

TINY = ["--preset", "quick", "--input-size", "32", "--embedding-dim", "16", "--batch-size", "16", "--device", "cpu"]

CASES = [
    (["train", *TINY, "--margin", "-1"], "--margin must be positive"),
    (["train", *TINY, "--max-minutes", "-1"], "--max-minutes must be positive"),
    (["train", *TINY, "--epochs", "0"], "must be positive"),
    (["train", *TINY, "--lr", "0"], "must be positive"),
    (["train", *TINY, "--embedding-dim", "0"], "--embedding-dim must be at least 1"),
    (["train", *TINY, "--input-size", "16"], "--input-size must be at least 32"),
    (["train", *TINY, "--input-size", "128"], "larger than the cache's 64 px"),
    (["train", *TINY, "--k", "1"], "K >= 2"),
    (["train", *TINY, "--id-weight", "-1"], "--id-weight and --backbone-lr-scale must be >= 0"),
    (["train", *TINY, "--warmup", "1"], "--warmup in [0, 1)"),
    (["train", *TINY, "--mode", "proxy", "--sampler", "random"], "--mode proxy trains on P x K batches"),
    (["train", *TINY, "--mode", "proxy", "--margin", "2"], "cosine margin in [0, 1)"),
    (["eval", "--triplets", "0"], "--triplets must be at least 1"),
    (["eval", "--group-size", "1"], "--group-size must be at least 2"),
    (["eval", "--checkpoint", "newest"], "--checkpoint must be best, last or start"),
    (["eval", "--split", "everything"], "--split must be test, val or train"),
    (["eval", "--device", "tpu"], "unknown device"),
    (["split", "--test-artists", "1.5", "--force"], "--test-artists must be in [0, 1)"),
    (["resize", "--size", "8", "--force"], "--size must be between 16 and 2048"),
    (["train", *TINY, "--run", "r", "--resume", "--input-size", "48"], "was trained with --input-size 32"),
    (["train", *TINY, "--run", "r", "--resume", "--backbone", "resnet18"], "was trained with --backbone compact"),
]


@pytest.fixture(scope="module")
def ws(tmp_path_factory, evaluated_run):
    dst = tmp_path_factory.mktemp("numbers") / "ws"
    shutil.copytree(evaluated_run, dst)
    return dst


@pytest.mark.parametrize("command, says", CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES])
def test_bad_option_is_one_line(ws, command, says):
    before = sorted(p.name for p in (ws / "runs").iterdir())
    result = invoke(*command, "-w", ws)
    assert result.exit_code == 2, result.output
    assert says in one_error_line(result.output)
    assert sorted(p.name for p in (ws / "runs").iterdir()) == before  # no run left behind


def test_a_run_used_on_a_cache_of_another_size(tmp_path, evaluated_run):
    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    assert invoke("resize", "--size", "48", "--force", "-w", ws).exit_code == 0
    for command in (["eval", "--device", "cpu"], ["export", "r", tmp_path / "m.pt"],
                    ["train", *TINY, "--run", "r", "--resume", "--epochs", "2"]):
        result = invoke(*command, "-w", ws)
        assert result.exit_code == 2, result.output
        line = one_error_line(result.output)
        assert "was trained on a 64-px cache but the workspace's cache is now 48 px" in line
        assert "pbn resize --size 64 --force" in line

"""Shared fixtures: small synthetic painting sets made once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pbn_cli.cli import app
from pbn_cli.data.synth import synth

# the suite embeds with PyTorch, as every test's expected figures were written for; tests/test_engine.py runs the
# same fixtures through the onnx engine (the default on a CPU with the extra) and checks it against this one
os.environ["PBN_ENGINE"] = "torch"


@pytest.fixture(scope="session")
def quirky_set(tmp_path_factory) -> Path:
    """8 artists x 6 small paintings plus every quirk (read-only: copy before changing)."""
    out = tmp_path_factory.mktemp("quirky")
    synth(out, artists=8, paintings=6, seed=1, quirks=True, min_size=160, max_size=420)
    return out


@pytest.fixture(scope="session")
def small_set(tmp_path_factory) -> Path:
    """12 artists x 5 small paintings, no quirks."""
    out = tmp_path_factory.mktemp("small")
    synth(out, artists=12, paintings=5, seed=2, min_size=120, max_size=300)
    return out


def prepared_workspace(root: Path, artists: int, paintings: int, seed: int, size: int) -> Path:
    """A workspace with ingest, clean, split and resize done on a fresh synthetic set."""
    from pbn_cli.core.workspace import Workspace
    from pbn_cli.stages.clean import clean
    from pbn_cli.stages.ingest import ingest
    from pbn_cli.stages.resize import resize
    from pbn_cli.stages.split import split

    synth(root / "data", artists=artists, paintings=paintings, seed=seed, min_size=size, max_size=size * 2)
    ws = Workspace(root / "ws")
    ingest(ws, root / "data/train_info.csv")
    clean(ws)
    split(ws)
    resize(ws, size=size)
    return ws.root


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory) -> Path:
    """16 artists x 6 paintings cached at 64 px (read-only: use ``workspace_copy``)."""
    return prepared_workspace(tmp_path_factory.mktemp("tiny"), 16, 6, 4, 64)


@pytest.fixture(scope="session")
def evaluated_run(tmp_path_factory, tiny_workspace) -> Path:
    """A copy of the tiny workspace with run ``r`` trained one quick epoch and evaluated (read-only)."""
    ws = tmp_path_factory.mktemp("evaluated") / "ws"
    shutil.copytree(tiny_workspace, ws)
    runner = CliRunner()
    for args in (["train", "--preset", "quick", "--input-size", "32", "--embedding-dim", "16", "--batch-size", "16",
                  "--epochs", "1", "--device", "cpu", "--run", "r"], ["eval", "--device", "cpu"]):
        result = runner.invoke(app, [*args, "-w", str(ws)])
        assert result.exit_code == 0, result.output
    return ws


@pytest.fixture
def workspace_copy(tmp_path, tiny_workspace) -> Path:
    dst = tmp_path / "ws"
    shutil.copytree(tiny_workspace, dst)
    return dst


@pytest.fixture
def copy_of(tmp_path):
    def _copy(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst, symlinks=True)
        return dst

    return _copy


class Pbn:
    """Runs `pbn` commands in-process against one workspace."""

    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.runner = CliRunner()

    def __call__(self, *args: str, expect: int | None = 0):
        result = self.runner.invoke(app, [*map(str, args), "-w", str(self.workspace)])
        if expect is not None:
            assert result.exit_code == expect, (result.exit_code, result.output, result.exception)
        return result


@pytest.fixture
def pbn(tmp_path) -> Pbn:
    return Pbn(tmp_path / "ws")


def pipeline(pbn: Pbn, data: Path, *stages: str) -> None:
    """Run ingest and the named later stages on ``data``."""
    pbn("ingest", data / "train_info.csv")
    for stage in stages:
        pbn(stage)


@pytest.fixture(autouse=True)
def _no_pbn_env(monkeypatch):
    monkeypatch.delenv("PBN_WORKSPACE", raising=False)
    os.environ.setdefault("COLUMNS", "200")

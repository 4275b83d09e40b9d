"""Shared by the reliability suite: real `pbn` subprocesses, killed on purpose, and checks of what they leave."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from pbn_cli.cli import app


def start(*args: str) -> subprocess.Popen:
    """`python -m pbn_cli ARGS` in its own process."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "pbn_cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def holds_a_lock(root: Path, pid: int) -> bool:
    """Whether process ``pid`` holds (has written itself into) a lock file under ``root``."""
    for lock in list(root.rglob("*.lock")) + list(root.rglob("lock")):
        try:
            if json.loads(lock.read_text() or "{}").get("pid") == pid:
                return True
        except (OSError, ValueError):
            continue
    return False


def wait_for(condition, proc: subprocess.Popen | None = None, timeout: float = 120) -> bool:
    """Poll ``condition`` every 2 ms until true, the process ends, or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.002)
    return False


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL ``proc``; whether it was still running."""
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    return alive


def run_killed(root: Path, args: list, delay: float, started=None) -> bool:
    """Start `pbn ARGS`, wait until it works (``started()``, else it holds a lock under ``root``), sleep ``delay``, SIGKILL.

    Returns whether the kill landed before the process finished on its own.
    """
    proc = start(*args)
    wait_for(started or (lambda: holds_a_lock(root, proc.pid)), proc)
    time.sleep(delay)
    return kill(proc)


def invoke(*args) -> object:
    """`pbn ARGS` in this process (typer's runner): exit code and output."""
    return CliRunner().invoke(app, [*map(str, args)])


def every_parquet_readable(root: Path) -> list[Path]:
    """All Parquet files under ``root`` that pbn would read (temporary files aside); fails on a torn one."""
    files = [p for p in root.rglob("*.parquet") if ".tmp-" not in p.name]
    for path in files:
        pq.read_table(path)
    return files


def one_error_line(output: str) -> str:
    """The output's single `Error:` line; fails on a traceback or more than one error line."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    return errors[0]

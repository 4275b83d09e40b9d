"""One writer at a time: a second is refused naming the first; dead holders' locks are taken over."""

import os
import signal
import subprocess
import sys
import time

import pytest

from pbn_cli.core.errors import LockedError
from pbn_cli.core.locking import hold, holder_of

HOLD_AND_WAIT = """
import sys, time
from pbn_cli.core.locking import hold
with hold(sys.argv[1], "test"):
    print("locked", flush=True)
    time.sleep(60)
"""


def _holder_process(lock):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_AND_WAIT, str(lock)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    lock = tmp_path / "data.lock"
    proc = _holder_process(lock)
    try:
        with pytest.raises(LockedError, match=rf"test is being written by pid {proc.pid} on .* \(`.*`"):
            with hold(lock, "test"):
                pass
        assert holder_of(lock)["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    lock = tmp_path / "data.lock"
    proc = _holder_process(lock)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert holder_of(lock) is None
    with hold(lock, "test"):
        assert holder_of(lock)["pid"] == os.getpid()
    assert holder_of(lock) is None


def test_a_cli_writer_is_refused_while_another_holds_the_workspace(pbn, small_set):
    lock = pbn.workspace / "locks" / "data.lock"
    proc = _holder_process(lock)
    try:
        start = time.monotonic()
        result = pbn("ingest", small_set / "train_info.csv", expect=1)
        assert time.monotonic() - start < 5
        assert result.output.startswith(f"Error: workspace {pbn.workspace} is being written by pid {proc.pid}")
        assert pbn("status").exit_code == 0  # readers take no lock
    finally:
        proc.kill()
        proc.wait()

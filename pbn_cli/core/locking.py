"""One writer per thing written: lock files that name their holder.

A writer takes an exclusive ``flock`` on a lock file and writes its pid,
command and host into it. The kernel drops the lock when the process dies,
however it dies, so a lock left by a killed process is simply taken over;
a second live writer is refused at once with a message naming the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pbn_cli.core.errors import LockedError


def _command() -> str:
    args = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else ["python"]
    if args[0] in ("__main__.py", "-m", "-c"):
        args[0] = "pbn"
    return " ".join(args)


def _describe(holder: dict) -> str:
    if not holder:
        return "another pbn process"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} "
        f"(`{holder.get('command')}`, since {holder.get('since')})"
    )


def holder_of(path: Path) -> dict | None:
    """Who holds the lock at ``path`` now, or None when nobody does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd) as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(f.read() or "{}")
            except ValueError:
                return {}
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return None


def check_free(path: Path, what: str) -> None:
    """Refuse at once, naming the holder, when a live process writes ``what`` (lock at ``path``)."""
    holder = holder_of(Path(path))
    if holder is not None:
        raise LockedError(f"{what} is being written by {_describe(holder)}; wait for it to finish or stop it first")


@contextlib.contextmanager
def hold(path: Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold the lock ``path`` while writing ``what``; refuse if a live process has it.

    ``wait`` queues instead of refusing: for writes that take a moment (a
    read-modify-write of a small file), where a second writer should simply
    go after the first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    f = os.fdopen(fd, "r+")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = json.loads(f.read() or "{}")
        except ValueError:
            holder = {}
        f.close()
        raise LockedError(
            f"{what} is being written by {_describe(holder)}; "
            "wait for it to finish or stop it first"
        ) from None
    try:
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": _command(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        f.seek(0)
        f.truncate()
        f.write(json.dumps(me))
        f.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            f.seek(0)
            f.truncate()
        f.close()  # closing the descriptor releases the flock

"""Run a function over many items on all cores, in processes, in chunks.

Workers are forked before the caller starts a progress bar (whose refresh
thread must not be inherited mid-write), and a chunk's results come back in
one message so per-item overhead stays small. Workers die with their
parent: killed alone, the parent would otherwise leave them blocked on the
work queue, holding the workspace's lock (inherited with its file).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _noop() -> None:
    return None


PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def _bound_to(parent: int, initializer: Callable | None, initargs: tuple) -> None:
    """A worker's start: it dies with ``parent``, then runs the caller's initializer."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), name="pbn-parent-watch", daemon=True).start()  # elsewhere too
    if initializer is not None:
        initializer(*initargs)


def _watch(parent: int) -> None:
    """Exit once ``parent`` is gone (a dead parent's children are re-parented)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


@contextlib.contextmanager
def worker_pool(
    workers: int, initializer: Callable | None = None, initargs: tuple = ()
) -> Iterator[ProcessPoolExecutor | None]:
    """A started process pool, or None when one worker suffices (work runs inline)."""
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield None
        return
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_bound_to,
                               initargs=(os.getpid(), initializer, initargs))
    try:
        for f in [pool.submit(_noop) for _ in range(workers)]:
            f.result()
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def map_chunks(
    pool: ProcessPoolExecutor | None,
    fn: Callable[[Any], Any],
    parts: Iterable[Any],
    on_result: Callable[[int, Any], None],
    max_pending: int = 0,
) -> None:
    """Call ``fn`` on each part (in the pool if any); ``on_result(index, result)`` as each ends. ``parts`` may be a
    generator: it is read as the work goes, so only the parts in flight are in memory.

    At most ``max_pending`` parts are in flight (default: twice the workers),
    so results are consumed as fast as they are made and memory stays bounded.
    """
    if pool is None:
        for i, part in enumerate(parts):
            on_result(i, fn(part))
        return
    limit = max_pending or 2 * pool._max_workers  # noqa: SLF001
    pending: dict[Future, int] = {}
    todo = iter(enumerate(parts))
    for i, part in todo:
        pending[pool.submit(fn, part)] = i
        if len(pending) >= limit:
            break
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            i = pending.pop(fut)
            on_result(i, fut.result())
            nxt = next(todo, None)
            if nxt is not None:
                pending[pool.submit(fn, nxt[1])] = nxt[0]

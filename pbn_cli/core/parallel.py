"""Run a function over many items on all cores, in processes, in chunks.

Workers are forked before the caller starts a progress bar (whose refresh
thread must not be inherited mid-write), and a chunk's results come back in
one message so per-item overhead stays small.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _noop() -> None:
    return None


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
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer, initargs=initargs)
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
    fn: Callable[[Sequence], Any],
    parts: Sequence[Sequence],
    on_result: Callable[[int, Any], None],
    max_pending: int = 0,
) -> None:
    """Call ``fn`` on each part (in the pool if any); ``on_result(index, result)`` as each ends.

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

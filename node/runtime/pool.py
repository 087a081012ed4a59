"""The compute pool: a process pool kept for a Celery worker's lifetime, for the heavy,
embarrassingly parallel parts of protocols, rebuilt when one of its processes dies."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.process
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

_POOL: ProcessPoolExecutor | None = None

# How many times one task may rebuild its compute pool after a pool process died. A process
# killed once (the OOM killer picking the busiest process) is a transient fault; one that dies
# on every rebuild (a real out-of-memory each time) ends the task with a clear refusal.
COMPUTE_POOL_REBUILDS = 3

pool_log = logging.getLogger("pcn.compute-pool")


class ComputePoolFailed(Exception):
    """The compute pool's processes kept dying: more rebuilds than one task may make."""


def _compute_pool(processes: int) -> ProcessPoolExecutor:
    """The worker's pool, created on first use and again after a broken one was dropped."""
    global _POOL
    if _POOL is None:
        # Celery's prefork children are flagged daemonic (so they die with their master), and
        # multiprocessing refuses children to daemonic processes. The compute pool's processes
        # read their work from a pipe to this process and exit when it closes, so they cannot
        # outlive it: lifting the flag for this process is safe.
        # Billiard (Celery's multiprocessing) also leaves its own AuthenticationString on the
        # process, which the standard library refuses to pickle into a spawned child.
        # (`_config` is private to multiprocessing: typeshed does not declare it.)
        me = multiprocessing.current_process()
        me._config["daemon"] = False  # type: ignore[attr-defined]
        me._config["authkey"] = multiprocessing.process.AuthenticationString(os.urandom(32))  # type: ignore[attr-defined]
        _POOL = ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn"))
    return _POOL


def _drop_pool(pool: ProcessPoolExecutor) -> None:
    """Forget a broken pool, so that neither this task nor the worker's next one uses it, and
    end every process it started.

    The executor's own clean-up is not enough: its manager thread terminates the processes it
    knows of when it finds the pool broken, without the lock `submit` holds, so a process that
    `submit` spawns in that moment (pools spawn on demand) is never terminated. It lives on,
    idle, with the worker's memory, and is mistaken for the live pool by whoever looks at the
    worker's children. The caller is the pool's only submitter and its `submit` has returned,
    so every process the pool started is in `_processes` now (private to concurrent.futures:
    the only list of them)."""
    global _POOL
    if _POOL is pool:
        _POOL = None
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.kill()
    for proc in processes:
        proc.join(timeout=5)


def compute_pool_map(
    processes: int,
    on_rebuild: Callable[[int, str], None] | None = None,
    max_rebuilds: int = COMPUTE_POOL_REBUILDS,
) -> Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]] | None:
    """A parallel map over a process pool kept for the worker's lifetime, for the heavy,
    embarrassingly parallel parts of protocols (blinding buckets, encrypting chunks).
    `spawn`ed children: the worker process has threads (lock renewal, HTTP), so forking it
    is unsafe. 0 or 1 process: no pool.

    A pool process that dies (SIGKILL, the OOM killer) breaks the whole pool: the map is run
    again on a new pool. Mapped functions are pure and results come back in order, so the
    protocol gets exactly what an undisturbed map returns. Each rebuild is reported to
    `on_rebuild(rebuilds_so_far, why)`; after `max_rebuilds` of them (per returned map, i.e.
    per task run) ComputePoolFailed is raised instead."""
    if processes <= 1:
        return None
    rebuilds = 0

    def pmap(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        nonlocal rebuilds
        while True:
            pool = _compute_pool(processes)
            try:
                return list(pool.map(fn, items))
            except BrokenProcessPool as exc:
                _drop_pool(pool)
                if rebuilds >= max_rebuilds:
                    raise ComputePoolFailed(
                        f"compute pool processes died {rebuilds + 1} times (out of memory?); "
                        f"gave up after {max_rebuilds} rebuilds"
                    ) from exc
                rebuilds += 1
                pool_log.warning("compute pool broken (%s); rebuilding it (%d/%d)", exc, rebuilds, max_rebuilds)
                if on_rebuild is not None:
                    on_rebuild(rebuilds, str(exc))

    return pmap

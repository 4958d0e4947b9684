"""Fan a list of independent jobs out to worker processes (spawn: safe with threads and ROS)."""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any


def run_in_processes(fn: Callable[..., Any], jobs: Iterable[tuple], on_result: Callable[[Any], None], *,
                     workers: int, initializer: Callable | None = None, initargs: tuple = ()) -> None:
    """Call ``fn(*job)`` for every job in ``workers`` spawned processes; ``on_result`` gets each
    result as it completes. The first exception in a worker is raised here; on an error or Ctrl-C
    the queued jobs are dropped and the running ones are let finish (nothing is left half-done)."""
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer, initargs=initargs)
    try:
        pending = {pool.submit(fn, *job) for job in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                if fut.exception() is not None:
                    raise fut.exception()
                on_result(fut.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

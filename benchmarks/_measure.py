"""Helpers for benchmarks: run a function in a fresh process and report its time and peak RSS."""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import time
from collections.abc import Callable
from typing import Any


def _child(fn: Callable[..., Any], args: tuple, queue: mp.Queue) -> None:
    started = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB
    queue.put({"seconds": seconds, "peak_rss_gb": peak_gb, "result": result})


def measure(fn: Callable[..., Any], *args: Any) -> dict:
    """Run ``fn(*args)`` in a fresh process (own peak RSS); return seconds, peak_rss_gb, result."""
    ctx = mp.get_context("fork")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"benchmark child failed with exit code {proc.exitcode}")
    return out


def emit(figures: dict) -> None:
    """The last line of every benchmark: one JSON object with its figures."""
    print(json.dumps(figures, sort_keys=True))

"""Dynamic batching on the event loop: requests that arrive together are scored together.

The work of one scoring request is mostly fixed cost (Arrow and NumPy calls on tiny arrays,
LightGBM's per-call setup), so sixteen leads in one pass of the shared feature code cost
little more than one. :class:`Coalescer` gives each request an awaitable answer and runs the
work once for everything queued, as soon as the loop has read and parsed what had arrived:
there is no timer and no waiting for a batch to fill, so a lone request is served at once
(sequential latency unchanged), and under load each batch holds the requests that arrived
while the previous one ran (Triton's or TF Serving's dynamic batching, with no queue delay).

The work runs on the event loop itself: it is CPU-bound and short, one core serves it, and a
thread hop per batch would only add latency. ``max_batch`` bounds one batch's time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
Item = TypeVar("Item")
Result = TypeVar("Result")

Work = Callable[[Sequence[Item]], Sequence["Result | BaseException"]]


class Coalescer(Generic[Item, Result]):
    """``await submit(item)`` -> ``work([..., item, ...])``'s answer for ``item``.

    ``work`` gets the items queued since the last call, in arrival order, and returns one
    result per item, or an exception for an item that failed on its own; an exception raised
    by ``work`` itself fails every item of that batch (and no other).
    """

    def __init__(
        self,
        work: Work,
        max_batch: int = 64,
        on_batch: Callable[[int], None] | None = None,
        settle_turns: int = 2,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.work, self.max_batch, self.on_batch = work, max_batch, on_batch
        self.settle_turns = settle_turns
        self._queue: list[tuple[Item, asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._queue.append((item, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Take batches until the queue is empty, each once the queue has stopped growing."""
        try:
            while self._queue:
                # one loop turn polls the sockets and runs the requests read; while the queue
                # still grows, requests are being parsed. It is settled after ``settle_turns``
                # quiet turns (microseconds when nothing else is going on).
                quiet = 0
                while quiet < self.settle_turns and len(self._queue) < self.max_batch:
                    size = len(self._queue)
                    await asyncio.sleep(0)
                    quiet = quiet + 1 if len(self._queue) == size else 0
                self._run()
        finally:
            self._drainer = None

    def _run(self) -> None:
        batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        live = [(item, fut) for item, fut in batch if not fut.cancelled()]  # client gone
        if not live:
            return
        if self.on_batch is not None:
            self.on_batch(len(live))
        try:
            results = self.work([item for item, _ in live])
            if len(results) != len(live):
                raise RuntimeError(f"batch work returned {len(results)} results for {len(live)} items")
        except Exception as exc:  # handed to every caller of this batch
            log.warning("batch of %d failed: %s", len(live), type(exc).__name__)
            results = [exc] * len(live)
        for (_, fut), result in zip(live, results, strict=True):
            if fut.cancelled():
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

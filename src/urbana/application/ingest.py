"""Group commit: many concurrent requests, one `save()` per batch, one writer thread.

Every `save()` takes the event store's table lock, so one transaction per webhook
would cap throughput at one commit per request. The committer collects what
arrives within a short window (or until the batch is full), runs the batch
function once in its own thread, and resolves each caller's future when the
batch has committed: an answer always means durable. The event loop never
blocks on the synchronous store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

C = TypeVar("C")
R = TypeVar("R")


class CommitterClosed(Exception):
    """The committer is shutting down and takes no more work."""


class GroupCommitter(Generic[C, R]):
    """Batches commands for a synchronous batch function run by one writer thread."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[C]], list[R]],
        *,
        window_ms: float = 2.0,
        max_batch: int = 256,
        name: str = "writer",
    ) -> None:
        self._run_batch = run_batch
        self._window = window_ms / 1000.0
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[C, asyncio.Future[R]] | None] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0
        self.items = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="group-committer")

    async def submit(self, command: C) -> R:
        """Queue one command; returns its result once its batch has committed."""
        if self._closed or self._task is None:
            raise CommitterClosed("writer is not running")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((command, future))
        return await future

    async def aclose(self) -> None:
        """Finish what is queued, then stop."""
        self._closed = True
        await self._queue.put(None)
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = time.monotonic() + self._window
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            live = [(c, f) for c, f in batch if not f.cancelled()]
            if not live:
                continue
            commands = [c for c, _ in live]
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, commands)
            except Exception as exc:  # each caller gets the failure of its batch
                log.warning("batch of %d failed: %s", len(commands), exc)
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(commands)
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)
        while not self._queue.empty():
            leftover = self._queue.get_nowait()
            if leftover is not None and not leftover[1].done():
                leftover[1].set_exception(CommitterClosed("writer stopped"))

"""Group commit: many concurrent requests, one `save()` per batch, one writer thread.

Every `save()` takes the event store's table lock, so one transaction per webhook
would cap throughput at one commit per request. The committer collects what
arrives within a short window (or until the batch is full), runs the batch
function once in its own thread, and resolves each caller's future when the
batch has committed: an answer always means durable. The event loop never
blocks on the synchronous store.

Nobody waits for the store longer than a `StoreGate` allows: a caller whose batch
has not committed in time gets `StoreUnavailable` (a 503 upstream; the gateway
retries, and the store dedupes what did commit after all).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from urbana.errors import Unavailable

log = logging.getLogger(__name__)

C = TypeVar("C")
R = TypeVar("R")


class StoreUnavailable(Unavailable):
    """The store did not answer in time, or is known to be down: try again later.

    The store's adapters raise it for the database library's faults; the gate raises it
    for a wait that ran out.
    """


class StoreGate:
    """How long a caller waits for the store, and whether it waits at all.

    A caller waits at most `wait_s`. Once a call is stuck or failed with a store fault
    (`is_fault`: a `StoreUnavailable`), the store is taken as down and callers are
    refused at once, rather than queued behind a batch that cannot commit; one caller
    every `probe_s` is let through, and the first call that succeeds brings the store back.
    """

    def __init__(
        self,
        wait_s: float = 2.0,
        *,
        probe_s: float = 1.0,
        is_fault: Callable[[BaseException], bool] = lambda exc: isinstance(exc, StoreUnavailable),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wait_s = wait_s
        self._probe_s = probe_s
        self._is_fault = is_fault
        self._clock = clock
        self._down_since: float | None = None
        self._next_probe = 0.0
        self.refused = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def admit(self) -> None:
        """Raise `StoreUnavailable` unless the store is up or this caller is the probe."""
        if self._down_since is None:
            return
        now = self._clock()
        if now < self._next_probe:
            self.refused += 1
            raise StoreUnavailable(f"the store is down (for {now - self._down_since:.1f}s)")
        self._next_probe = now + self._probe_s

    def failed(self, exc: BaseException | None = None) -> None:
        """A wait ran out (no `exc`) or a call raised `exc`; store faults take it down."""
        if exc is not None and not self._is_fault(exc):
            return
        if self._down_since is None:
            now = self._clock()
            why = f"{type(exc).__name__}: {exc}" if exc else f"no answer within {self.wait_s}s"
            log.warning("the store is down (%s): refusing work until it answers", why)
            self._down_since = now
            self._next_probe = now + self._probe_s

    def succeeded(self) -> None:
        if self._down_since is not None:
            log.info("the store answers again after %.1fs", self._clock() - self._down_since)
            self._down_since = None

    async def call(self, fn: Callable[..., R], *args: Any) -> R:
        """Run a synchronous store call in a thread, within the wait."""
        self.admit()
        try:
            result = await asyncio.wait_for(asyncio.to_thread(fn, *args), self.wait_s)
        except TimeoutError as exc:
            # Also a TimeoutError raised inside `fn`: either way the store did not answer.
            self.failed()
            raise StoreUnavailable(f"no answer from the store within {self.wait_s}s") from exc
        except Exception as exc:
            if self._is_fault(exc):
                self.failed(exc)
            else:
                self.succeeded()  # the store answered; the call refused (a domain error)
            raise
        self.succeeded()
        return result


class GroupCommitter(Generic[C, R]):
    """Batches commands for a synchronous batch function run by one writer thread."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[C]], list[R]],
        *,
        window_ms: float = 2.0,
        max_batch: int = 256,
        name: str = "writer",
        gate: StoreGate | None = None,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._on_commit = on_commit or (lambda items: None)  # each batch's size, for metrics
        self.gate = gate or StoreGate()
        self._window = window_ms / 1000.0
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[C, asyncio.Future[R]] | None] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._running_since: float | None = None  # when the batch in flight was started
        self.batches = 0
        self.items = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="group-committer")

    async def submit(self, command: C) -> R:
        """Queue one command; returns its result once its batch has committed."""
        return (await self.submit_all([command]))[0]

    async def submit_all(self, commands: Sequence[C]) -> list[R]:
        """Queue commands (one request's); their results once committed, within the wait.

        Raises `StoreUnavailable` at once while the store is down, or when the wait runs
        out; what was queued and not yet taken by the writer is then dropped.
        """
        if self._closed or self._task is None:
            raise Unavailable("the ingest writer is not running (shutting down?)")
        if not commands:
            return []
        self.gate.admit()
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = []
        for command in commands:
            future: asyncio.Future[R] = loop.create_future()
            self._queue.put_nowait((command, future))
            futures.append(future)
        try:
            _, pending = await asyncio.wait(futures, timeout=self.gate.wait_s)
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        failures = [f.exception() for f in futures if f.done()]  # retrieved, so never logged
        if pending:
            for future in pending:
                future.cancel()
            if self._stuck():
                self.gate.failed()
            raise StoreUnavailable(f"no commit within {self.gate.wait_s}s")
        for failure in failures:
            if failure is not None:
                raise failure
        return [future.result() for future in futures]

    def _stuck(self) -> bool:
        """Whether the batch in flight has run for half the wait (a commit takes ms).

        Callers that merely queued behind a busy but working writer get their 503 without
        taking the store down for everyone else.
        """
        started = self._running_since
        return started is not None and time.monotonic() - started >= self.gate.wait_s / 2

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
            self._running_since = time.monotonic()
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, commands)
            except Exception as exc:  # each caller gets the failure of its batch
                log.warning("batch of %d failed: %s", len(commands), exc)
                self.gate.failed(exc)
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                self._running_since = None
            self.gate.succeeded()
            self.batches += 1
            self.items += len(commands)
            self._on_commit(len(commands))
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)
        while not self._queue.empty():
            leftover = self._queue.get_nowait()
            if leftover is not None and not leftover[1].done():
                leftover[1].set_exception(Unavailable("the ingest writer stopped"))

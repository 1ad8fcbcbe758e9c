"""A circuit breaker that callers wait on: one per tenant channel in the dispatcher.

    closed --(N consecutive transient failures, or a Retry-After)--> open
    open --(the open period ends)--> half-open: one caller probes, the others wait
    half-open --(the probe succeeds)--> closed: every waiter goes
    half-open --(the probe fails)--> open again, for twice as long (capped)

While the gateway is down, queued messages wait here instead of each hammering it
with its own retries; the first message sent after the open period is the probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable


class ChannelBreaker:
    def __init__(
        self,
        *,
        failures: int = 5,
        open_s: float = 5.0,
        max_open_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or open_s <= 0 or max_open_s < open_s:
            raise ValueError("failures >= 1 and 0 < open_s <= max_open_s are required")
        self._threshold = failures
        self._base_open = open_s
        self._max_open = max_open_s
        self._clock = clock
        self._failures = 0
        self._open_for = open_s
        self._open_until: float | None = None  # None: closed
        self._probing = False
        self._changed = asyncio.Event()

    @property
    def state(self) -> str:
        if self._open_until is None:
            return "closed"
        if self._probing or self._clock() >= self._open_until:
            return "half_open"
        return "open"

    async def admit(self, within_s: float) -> bool:
        """Wait (up to `within_s` seconds) until a call may go out; False if it may not."""
        deadline = self._clock() + max(within_s, 0.0)
        while True:
            now = self._clock()
            if self._open_until is None:
                return True
            if not self._probing and now >= self._open_until:
                self._probing = True  # this caller is the half-open probe
                return True
            wake = deadline if self._probing else min(deadline, self._open_until)
            if now >= deadline:
                return False
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=max(wake - now, 0.0))

    def success(self) -> None:
        """The gateway answered (even with a refusal): it is up."""
        was_open = self._open_until is not None
        self._failures = 0
        self._open_for = self._base_open
        self._open_until = None
        self._probing = False
        if was_open:
            self._notify()

    def failure(self, retry_after: float | None = None) -> None:
        """A transient fault of the whole channel; `retry_after` is the gateway's own wait."""
        self._failures += 1
        now = self._clock()
        if self._probing:
            self._open_for = min(self._open_for * 2, self._max_open)
            self._open(now + max(self._open_for, retry_after or 0.0))
        elif retry_after is not None and retry_after > 0:
            # The gateway said how long to stay away: everyone on this channel waits.
            until = now + min(retry_after, self._max_open)
            self._open(max(until, self._open_until or until))
        elif self._failures >= self._threshold and self._open_until is None:
            self._open(now + self._open_for)

    def release(self) -> None:
        """An admitted caller made no call (cancelled, or the message moved on)."""
        if self._probing:
            self._probing = False
            self._notify()

    def _open(self, until: float) -> None:
        self._open_until = until
        self._probing = False
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

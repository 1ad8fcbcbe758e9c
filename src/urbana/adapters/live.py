"""The live feed: the store's notification log, fanned out to the attendants connected here.

One per API process (attendants connect to any of them, so the feed reads what every
process wrote: the store, never the memory of the writer). It follows the log as the
relay does (`urbana.adapters.postgres.log`, LISTEN/NOTIFY plus catch-up reads and a
timed poll as a fallback), turns each event into its `LiveEvent`
(`urbana.application.live`) and hands it to the subscribers of the event's tenant whose
role sees that type.

    async with LiveFeed(database_url=url, schema=schema) as feed:
        async for item in feed.subscribe(tenant_id, role, last_event_id):
            ...  # a LiveEvent, or a Heartbeat when nothing happened for a while

Resuming. A subscriber that names the position it saw last (`Last-Event-ID`) first
reads the log itself from that position up to where the feed stands, then takes the
feed's events after it. Both come in position order and it skips anything at or below
what it yielded, so nothing is missed and nothing repeated, also on another process or
after a restart: the log is the source, not the feed's memory. A subscriber that does
not name one starts at the feed's position (what happens from now on).

A subscriber that falls behind. Each has a bounded queue. When the feed finds it full,
it drops that subscriber's queue (the others are never waited for) and tells it; the
subscriber then reads what it missed from the log, as on a resume, and rejoins. A slow
client costs log reads, never memory or other clients' latency, and still misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar
from uuid import UUID

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from urbana.adapters.lifecycle import Service
from urbana.adapters.postgres.log import AsyncLogReader, listen_channel
from urbana.adapters.retry import Stopped, retrying
from urbana.application.envelope import Envelope
from urbana.application.live import (
    LIVE_SOURCES,
    Heartbeat,
    LiveEvent,
    live_event,
    visible_to,
)
from urbana.config import conninfo
from urbana.errors import Unavailable, UrbanaError

log = logging.getLogger(__name__)
T = TypeVar("T")

ERASURE_SOURCE = "Lead.SubjectErased"
APPLICATION_NAME = "urbana-live"  # how the feed's connections show in pg_stat_activity
HEARTBEAT_S = 15.0  # under the idle timeouts of common proxies (nginx: 60 s)
QUEUE_SIZE = 1_000  # events a subscriber may have waiting before it is dropped to the log
_WAIT_SLICE = 0.25  # how often a sleeping follower looks at its stop event
# While nobody is subscribed here the follower reads only erasures, which can wait this
# long: reading after each of a busy store's commits cost the API a tenth of its CPU.
UNWATCHED_PAUSE_S = 0.2


class LiveFeedError(UrbanaError):
    """The feed is not running (not started, or closed)."""


class LiveFeedUnavailable(Unavailable):
    """The log could not be read for a subscriber's catch-up (PostgreSQL is unreachable).

    The subscriber's stream ends; its client reconnects with `Last-Event-ID`.
    """


class _Behind:
    """Put in a subscriber's dropped queue: read the log from your last position."""


_BEHIND: Final = _Behind()


class _Subscriber:
    __slots__ = ("queue", "role", "tenant")

    def __init__(self, tenant: str, role: str, size: int) -> None:
        self.tenant = tenant
        self.role = role
        self.queue: asyncio.Queue[LiveEvent | _Behind] = asyncio.Queue(size)


class LiveFeed(Service):
    """Follows the notification log and fans its live events out (see module docstring)."""

    def __init__(
        self,
        *,
        database_url: str,
        schema: str | None,
        heartbeat_s: float = HEARTBEAT_S,
        queue_size: int = QUEUE_SIZE,
        poll_interval: float = 1.0,
        unwatched_pause: float = UNWATCHED_PAUSE_S,
        batch_size: int = 500,
        catch_up_connections: int = 2,
        on_erased: Callable[[Envelope], Awaitable[None]] | None = None,
    ) -> None:
        if queue_size < 1 or batch_size < 1 or heartbeat_s <= 0:
            raise ValueError("queue_size and batch_size >= 1, heartbeat_s > 0 are required")
        self._url = conninfo(database_url, schema)
        self._heartbeat_s = heartbeat_s
        self._queue_size = queue_size
        self._poll_interval = poll_interval
        self._unwatched_pause = unwatched_pause
        self._batch_size = batch_size
        # The follower also reads erasures: this process forgets the subject on each
        # (`on_erased`; see docs/architecture.md, Privacy).
        self._on_erased = on_erased
        self._follower_log = AsyncLogReader(
            schema, handles=LIVE_SOURCES | {ERASURE_SOURCE}, event_ids=False
        )
        # While nobody is subscribed here, only erasures are decoded: every other event
        # would become a live event for no one (most API processes, most of the time).
        self._erasures_log = AsyncLogReader(
            schema, handles=frozenset({ERASURE_SOURCE}), event_ids=False
        )
        self._catch_up_log = AsyncLogReader(schema, handles=LIVE_SOURCES, event_ids=False)
        # Catch-up reads of resuming subscribers share a few connections: a reconnect
        # storm queues on them instead of opening one connection per client.
        self._pool = AsyncConnectionPool(
            self._url,
            min_size=0,
            max_size=catch_up_connections,
            kwargs={"autocommit": True, "application_name": APPLICATION_NAME},
            open=False,
        )
        self._subscribers: dict[str, set[_Subscriber]] = {}
        self._stop = asyncio.Event()
        self._watched = asyncio.Event()  # set by a subscription, to end an unwatched pause
        self._task: asyncio.Task[None] | None = None
        self._conn: AsyncConnection[Any] | None = None
        self._listener: AsyncConnection[Any] | None = None

        # Metrics (read them, or `metrics()`).
        self.position = 0  # every live event up to here was handed to the subscribers
        self.dispatched = 0  # live events put in subscribers' queues
        self.fell_behind = 0  # times a subscriber's queue was full and it went to the log
        self.caught_up = 0  # live events subscribers read from the log (resumes, falling behind)
        self.errors = 0  # times the follower lost PostgreSQL

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start at the end of the log, then follow it in a task of its own."""
        if self._task is not None:
            return
        await self._pool.open()
        self._stop.clear()
        conn = await self._connect()
        self.position = await self._follower_log.head(conn)
        self._task = asyncio.create_task(self._follow(), name="live-feed")
        self._task.add_done_callback(_log_if_crashed)
        log.info("live feed follows the log after position %d", self.position)

    async def aclose(self) -> None:
        """Stop following and close the connections (subscribers' streams then end)."""
        self._stop.set()
        self._watched.set()  # ends a pause
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        await self._disconnect()
        await self._pool.close()
        for subscribers in self._subscribers.values():
            for subscriber in subscribers:
                _drop(subscriber)  # their next read finds the feed closed
        self._subscribers.clear()

    @property
    def following(self) -> bool:
        """Whether the feed follows the log (started, and not stopped or crashed)."""
        return self._task is not None and not self._task.done()

    def metrics(self) -> dict[str, Any]:
        """Position, subscribers and how often they fell behind, for /metrics."""
        return {
            "position": self.position,
            "subscribers": sum(len(s) for s in self._subscribers.values()),
            "dispatched": self.dispatched,
            "fell_behind": self.fell_behind,
            "caught_up": self.caught_up,
            "errors": self.errors,
            "following": self.following,
        }

    # --------------------------------------------------------------- subscribing

    async def subscribe(
        self, tenant_id: UUID | str, role: str, last_event_id: int | None = None
    ) -> AsyncGenerator[LiveEvent | Heartbeat, None]:
        """The tenant's live events `role` sees, after `last_event_id` (None: from now).

        Ends with `LiveFeedError` when the feed closes and `LiveFeedUnavailable` when a
        catch-up read fails; the client then reconnects with the last id it got.
        """
        if self._task is None:
            raise LiveFeedError("the live feed is not started")
        subscriber = _Subscriber(str(tenant_id), str(role), self._queue_size)
        last = self.position if last_event_id is None else await self._resume_at(last_event_id)
        try:
            while True:
                # Registered first, then the log read up to the feed's position: events
                # after it are in the queue, so the two together leave no gap.
                self._register(subscriber)
                upto = self.position
                if last < upto:
                    async for event in self._read_log(subscriber, last, upto):
                        last = event.id
                        yield event
                    last = upto
                while True:
                    try:
                        async with asyncio.timeout(self._heartbeat_s):
                            item = await subscriber.queue.get()
                    except TimeoutError:
                        # An empty queue while registered: everything up to the feed's
                        # position that this subscriber sees has been yielded. (An event
                        # may have arrived as the wait timed out: then it is not empty.)
                        if subscriber.queue.empty():
                            last = max(last, self.position)
                        yield Heartbeat(last)
                        continue
                    if isinstance(item, _Behind):
                        if self._task is None:
                            raise LiveFeedError("the live feed was closed")
                        break  # to the log from `last`, then rejoin
                    if item.id > last:
                        last = item.id
                        yield item
        finally:
            self._unregister(subscriber)

    async def _resume_at(self, last_event_id: int) -> int:
        """Where a resuming subscriber starts: its id, but never past the end of the log.

        An id beyond the end (another database, a made-up header) would otherwise hide
        every event up to it.
        """
        position = max(0, last_event_id)
        if position <= self.position:
            return position
        head = await self._read(self._catch_up_log.head)
        return min(position, head)

    async def _read_log(
        self, subscriber: _Subscriber, after: int, upto: int
    ) -> AsyncIterator[LiveEvent]:
        """The subscriber's live events stored after `after`, up to `upto`, from the log."""
        while after < upto:
            page = await self._read(
                functools.partial(
                    self._catch_up_log.page, after=after, limit=self._batch_size, upto=upto
                )
            )
            if page is None:
                return
            after = page.last
            for event in _visible(page.envelopes, subscriber):
                self.caught_up += 1
                yield event

    async def _read(self, query: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """One catch-up read on a pooled connection; faults as `LiveFeedUnavailable`."""
        try:
            async with self._pool.connection() as conn:
                return await query(conn)
        except (psycopg.OperationalError, TimeoutError) as exc:
            raise LiveFeedUnavailable(f"the event log cannot be read: {exc}") from exc

    def _register(self, subscriber: _Subscriber) -> None:
        self._subscribers.setdefault(subscriber.tenant, set()).add(subscriber)
        self._watched.set()

    def _unregister(self, subscriber: _Subscriber) -> None:
        subscribers = self._subscribers.get(subscriber.tenant)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._subscribers[subscriber.tenant]

    # ------------------------------------------------------------------ following

    async def _follow(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    await self._follow_until_fault()
                except psycopg.Error as exc:
                    # PostgreSQL restarted or the network dropped: subscribers keep their
                    # queues (and heartbeats) while the follower reconnects.
                    self.errors += 1
                    log.warning("live feed lost PostgreSQL (%s); reconnecting", exc)
                    await self._disconnect()
                    async for attempt in retrying(psycopg.OperationalError, stop=self._stop):
                        with attempt:
                            await self._connect()
        except Stopped:
            pass

    async def _follow_until_fault(self) -> None:
        conn = await self._connect()
        listener = await self._listen()
        while not self._stop.is_set():
            watched = bool(self._subscribers)
            reader = self._follower_log if watched else self._erasures_log
            page = await reader.page(conn, self.position, self._batch_size)
            if page is None:
                await self._wait_for_notify(listener)
                if not self._subscribers:
                    await self._unwatched_wait()
                continue
            for envelope in page.envelopes:
                if envelope.type == "SubjectErased":
                    await self._forget(envelope)
                    continue
                event = live_event(envelope)
                if event is not None:
                    self._dispatch(event)
            if not watched and self._subscribers:
                # Someone subscribed while this page was read for erasures only: they
                # start at the feed's position, so read the page again, in full (its
                # erasures are forgotten twice, which is harmless).
                continue
            self.position = page.last

    async def _forget(self, envelope: Envelope) -> None:
        if self._on_erased is None:
            return
        try:
            await self._on_erased(envelope)
        except Exception:
            # The caches it clears also expire on their own; the feed must go on.
            log.exception("forgetting erased subject %s failed", envelope.stream_id)

    def _dispatch(self, event: LiveEvent) -> None:
        """Hand one event to its tenant's subscribers; never waits for any of them."""
        for subscriber in tuple(self._subscribers.get(event.tenant_id, ())):
            if not visible_to(subscriber.role, event.type):
                continue
            try:
                subscriber.queue.put_nowait(event)
                self.dispatched += 1
            except asyncio.QueueFull:
                self.fell_behind += 1
                self._unregister(subscriber)
                _drop(subscriber)

    async def _unwatched_wait(self) -> None:
        """Let the commits of the next `unwatched_pause` gather into one read of erasures;
        a subscription (or the stop) ends the pause at once."""
        self._watched.clear()
        if self._subscribers or self._stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._unwatched_pause):
                await self._watched.wait()

    async def _wait_for_notify(self, listener: AsyncConnection[Any]) -> None:
        """Return on a NOTIFY, after `poll_interval` (fallback poll), or when stopped."""
        deadline = time.monotonic() + self._poll_interval
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            async for _ in listener.notifies(timeout=min(_WAIT_SLICE, remaining), stop_after=1):
                return

    async def _connect(self) -> AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await AsyncConnection.connect(
                self._url, autocommit=True, application_name=APPLICATION_NAME
            )
        return self._conn

    async def _listen(self) -> AsyncConnection[Any]:
        if self._listener is None or self._listener.closed:
            listener = await AsyncConnection.connect(
                self._url, autocommit=True, application_name=APPLICATION_NAME
            )
            await listener.execute(listen_channel())
            self._listener = listener
        return self._listener

    async def _disconnect(self) -> None:
        for conn in (self._conn, self._listener):
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
        self._conn = self._listener = None


def _log_if_crashed(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the live feed stopped following the log", exc_info=task.exception())


def _visible(envelopes: list[Envelope], subscriber: _Subscriber) -> list[LiveEvent]:
    out = []
    for envelope in envelopes:
        if envelope.tenant_id != subscriber.tenant:
            continue
        event = live_event(envelope)
        if event is not None and visible_to(subscriber.role, event.type):
            out.append(event)
    return out


def _drop(subscriber: _Subscriber) -> None:
    """Empty a subscriber's queue and leave it the word to go to the log."""
    queue = subscriber.queue
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(_BEHIND)

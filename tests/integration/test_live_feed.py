"""The live feed on real PostgreSQL: fan-out by tenant and role, resume without gap or
repeat (also on a new feed after a restart), heartbeats, and slow subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from uuid import UUID, uuid4

import psycopg
import pytest

from urbana.adapters.live import APPLICATION_NAME, LiveFeed, LiveFeedError
from urbana.adapters.postgres.log import LogReader
from urbana.adapters.postgres.store import Store
from urbana.application.live import (
    HANDOFF_REQUESTED,
    LEAD_UPDATED,
    MESSAGE_CREATED,
    Heartbeat,
    LiveEvent,
    live_event,
    visible_to,
)
from urbana.config import conninfo
from urbana.domain.conversation import Conversation
from urbana.domain.lead import Lead

pytestmark = pytest.mark.integration

# Only a guard against a hang: no assertion depends on how long anything takes.
GUARD_S = 60.0


class Leads:
    """One tenant's leads and conversations, each change saved on its own (one position)."""

    def __init__(self, store: Store, tenant_id: UUID) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.conversations: list[Conversation] = []

    def start(self) -> Conversation:
        phone = f"55119{random.randrange(10**8):08d}"
        lead = Lead.create(self.tenant_id, f"phone:{phone}", phone=phone, name="Maria Souza")
        conv = Conversation.start(self.tenant_id, "cloud", phone, lead.id)
        self.store.app.save(lead, conv)
        self.conversations.append(conv)
        return conv

    def message(self, conv: Conversation, text: str = "quero saber o preço") -> None:
        conv.receive(
            provider_message_id=f"wamid.{uuid4().hex}",
            kind="text",
            sent_at=datetime.now(UTC),
            text=text,
            contact_name="Maria Souza",
        )
        self.store.app.save(conv)

    def handoff(self, conv: Conversation) -> None:
        conv.request_handoff(reason="lead_request", summary="Cliente Maria quer falar com alguém")
        self.store.app.save(conv)

    def score(self, conv: Conversation, delta: int) -> None:
        lead = self.store.app.get(Lead, conv.lead_id)
        lead.score_by(delta, "interesse")
        self.store.app.save(lead)


def expected(store: Store, tenant_id: UUID, role: str, after: int) -> list[LiveEvent]:
    """What a subscriber should get: the tenant's live events after `after`, from the log."""
    reader = LogReader(store.schema)
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        envelopes = [e for page in reader.pages(conn.cursor(), after) for e in page.envelopes]
    events = [live_event(e) for e in envelopes if e.tenant_id == str(tenant_id)]
    return [e for e in events if e is not None and visible_to(role, e.type)]


def feed_on(store: Store, **options: float) -> LiveFeed:
    return LiveFeed(database_url=store.url, schema=store.schema, **options)  # type: ignore[arg-type]


Stream = AsyncGenerator[LiveEvent | Heartbeat, None]


async def next_item(stream: Stream) -> LiveEvent | Heartbeat:
    return await anext(stream)


async def take(stream: Stream, n: int) -> list[LiveEvent]:
    """The next `n` live events of a subscription (heartbeats passed over)."""
    out: list[LiveEvent] = []
    async with asyncio.timeout(GUARD_S):
        async for item in stream:
            if isinstance(item, LiveEvent):
                out.append(item)
                if len(out) == n:
                    break
    return out


async def registered(feed: LiveFeed, count: int) -> None:
    """Wait until `count` subscribers are registered with the feed."""
    async with asyncio.timeout(GUARD_S):
        # The feed has no event for this; its metric is what a test can watch.
        while feed.metrics()["subscribers"] < count:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_subscriber_gets_its_tenants_events_and_no_personal_data(store: Store) -> None:
    mine, other = Leads(store, uuid4()), Leads(store, uuid4())
    async with feed_on(store) as feed:
        stream = feed.subscribe(mine.tenant_id, "attendant")
        first = asyncio.create_task(take(stream, 6))
        await registered(feed, 1)
        for leads in (other, mine):
            conv = await asyncio.to_thread(leads.start)
            await asyncio.to_thread(leads.message, conv)
            await asyncio.to_thread(leads.handoff, conv)
            await asyncio.to_thread(leads.score, conv, 15)
        got = await first
        await stream.aclose()

    conv_id = str(mine.conversations[0].id)
    assert {e.tenant_id for e in got} == {str(mine.tenant_id)}
    assert [e.type for e in got] == [
        LEAD_UPDATED,  # created
        "conversation.updated",  # started
        MESSAGE_CREATED,
        HANDOFF_REQUESTED,
        LEAD_UPDATED,  # scored
        LEAD_UPDATED,  # moved to engaged
    ]
    assert [e.id for e in got] == sorted(e.id for e in got)
    message, handoff = got[2], got[3]
    assert message.data == {
        "conversation_id": conv_id,
        "lead_id": str(mine.conversations[0].lead_id),
        "seq": 1,
        "kind": "text",
        "author": "lead",
    }
    assert handoff.data["reason"] == "lead_request"
    assert handoff.data["status"] == "waiting_human"
    assert got[4].data["score"] == 15
    assert got[5].data["stage"] == "engaged"
    keys = {key for e in got for key in e.data}
    assert not keys & {"text", "summary", "name", "phone", "contact", "contact_name", "key"}
    values = repr([e.data for e in got])
    for personal in ("Maria", "preço", mine.conversations[0].contact):
        assert personal not in values


async def test_an_analyst_sees_only_the_pipeline_and_an_unknown_role_nothing(
    store: Store,
) -> None:
    leads = Leads(store, uuid4())
    async with feed_on(store, heartbeat_s=0.05) as feed:
        analyst = feed.subscribe(leads.tenant_id, "analyst")
        stranger = feed.subscribe(leads.tenant_id, "visitor")
        analyst_got = asyncio.create_task(take(analyst, 2))
        stranger_first = asyncio.create_task(next_item(stranger))
        await registered(feed, 2)
        conv = await asyncio.to_thread(leads.start)
        await asyncio.to_thread(leads.message, conv)
        await asyncio.to_thread(leads.score, conv, 5)
        got = await analyst_got
        # The stranger's feed moved past every one of those events and showed none.
        async with asyncio.timeout(GUARD_S):
            item = await stranger_first
            while not (isinstance(item, Heartbeat) and item.position >= got[-1].id):
                assert isinstance(item, Heartbeat)
                item = await anext(stranger)
        await analyst.aclose()
        await stranger.aclose()
    assert [e.type for e in got] == [LEAD_UPDATED, LEAD_UPDATED]


async def test_an_idle_subscription_gets_heartbeats_at_its_position(store: Store) -> None:
    leads = Leads(store, uuid4())
    await asyncio.to_thread(leads.start)
    async with feed_on(store, heartbeat_s=0.05) as feed:
        stream = feed.subscribe(leads.tenant_id, "attendant")
        async with asyncio.timeout(GUARD_S):
            beats = [await anext(stream), await anext(stream)]
        await stream.aclose()
        assert beats == [Heartbeat(feed.position), Heartbeat(feed.position)]


async def test_reconnecting_with_the_last_id_misses_nothing_and_repeats_nothing(
    store: Store,
) -> None:
    """Many events from a concurrent writer; the client drops and resumes at random points."""
    rng = random.Random(11)
    mine, other = Leads(store, uuid4()), Leads(store, uuid4())

    def write(n: int) -> None:
        for _ in range(n):
            leads = rng.choice((mine, other))
            if not leads.conversations or rng.random() < 0.1:
                leads.start()
                continue
            conv = rng.choice(leads.conversations)
            if rng.random() < 0.2:
                leads.score(conv, rng.randint(1, 9))
            else:
                leads.message(conv)

    async with feed_on(store, heartbeat_s=0.05) as feed:
        start = feed.position
        writer = asyncio.create_task(asyncio.to_thread(write, 300))
        got: list[LiveEvent] = []
        last: int | None = start
        reconnects = 0
        async with asyncio.timeout(GUARD_S):
            while True:
                stream = feed.subscribe(mine.tenant_id, "attendant", last)
                want = rng.randint(1, 12)
                async for item in stream:
                    if isinstance(item, LiveEvent):
                        got.append(item)
                        last = item.id
                        want -= 1
                        if want == 0:
                            break
                    elif writer.done():
                        break  # idle after the writer finished: everything is in
                await stream.aclose()
                reconnects += 1
                if writer.done() and len(got) >= len(
                    expected(store, mine.tenant_id, "attendant", start)
                ):
                    break
        await writer

    want_all = expected(store, mine.tenant_id, "attendant", start)
    assert reconnects > 10
    assert [e.id for e in got] == [e.id for e in want_all]
    assert got == want_all


async def test_a_new_feed_after_a_restart_resumes_from_the_last_id(store: Store) -> None:
    leads = Leads(store, uuid4())
    conv = await asyncio.to_thread(leads.start)
    before = feed_on(store)
    await before.start()
    start = before.position
    stream = before.subscribe(leads.tenant_id, "supervisor")
    first = asyncio.create_task(take(stream, 2))
    await registered(before, 1)
    await asyncio.to_thread(leads.message, conv)  # message + nothing else
    await asyncio.to_thread(leads.score, conv, 3)
    seen = await first
    await stream.aclose()
    await before.aclose()  # the API process goes away

    for _ in range(5):  # while no feed runs
        await asyncio.to_thread(leads.message, conv)
    after = feed_on(store)
    await after.start()
    try:
        resumed = after.subscribe(leads.tenant_id, "supervisor", seen[-1].id)
        missed = await take(resumed, 5)
        await asyncio.to_thread(leads.handoff, conv)  # live, on the new feed
        live = await take(resumed, 1)
        await resumed.aclose()
    finally:
        await after.aclose()

    assert seen + missed + live == expected(store, leads.tenant_id, "supervisor", start)
    assert [e.data.get("seq") for e in missed] == [2, 3, 4, 5, 6]
    assert live[0].type == HANDOFF_REQUESTED


async def test_a_slow_subscriber_blocks_no_one_and_still_misses_nothing(store: Store) -> None:
    leads = Leads(store, uuid4())
    conv = await asyncio.to_thread(leads.start)
    async with feed_on(store, queue_size=2) as feed:
        start = feed.position
        fast = feed.subscribe(leads.tenant_id, "attendant")
        slow = feed.subscribe(leads.tenant_id, "attendant")
        fast_got = asyncio.create_task(take(fast, 20))
        slow_first = asyncio.create_task(next_item(slow))  # registered, then never read
        await registered(feed, 2)
        for _ in range(20):
            await asyncio.to_thread(leads.message, conv)
        got_fast = await fast_got
        # The slow one was dropped to the log while the fast one got everything.
        assert feed.fell_behind >= 1
        async with asyncio.timeout(GUARD_S):
            first = await slow_first
        got_slow = [first, *await take(slow, 19)]
        await fast.aclose()
        await slow.aclose()
    want = expected(store, leads.tenant_id, "attendant", start)
    assert got_fast == want
    assert got_slow == want
    assert feed.caught_up >= 1


async def test_an_id_beyond_the_end_of_the_log_resumes_at_the_end(store: Store) -> None:
    leads = Leads(store, uuid4())
    conv = await asyncio.to_thread(leads.start)
    async with feed_on(store) as feed:
        stream = feed.subscribe(leads.tenant_id, "admin", 10**12)
        got = asyncio.create_task(take(stream, 1))
        await registered(feed, 1)
        await asyncio.to_thread(leads.message, conv)
        event = (await got)[0]
        await stream.aclose()
    assert event.type == MESSAGE_CREATED


async def test_a_closed_feed_ends_its_subscriptions(store: Store) -> None:
    leads = Leads(store, uuid4())
    feed = feed_on(store)
    await feed.start()
    stream = feed.subscribe(leads.tenant_id, "attendant")
    pending = asyncio.create_task(next_item(stream))
    await registered(feed, 1)
    await feed.aclose()
    with pytest.raises(LiveFeedError, match="closed"):
        async with asyncio.timeout(GUARD_S):
            await pending
    with contextlib.suppress(LiveFeedError):
        await stream.aclose()


async def test_the_feed_reconnects_when_postgresql_drops_it_and_misses_nothing(
    store: Store,
) -> None:
    leads = Leads(store, uuid4())
    conv = await asyncio.to_thread(leads.start)
    async with feed_on(store, poll_interval=0.1) as feed:
        start = feed.position
        stream = feed.subscribe(leads.tenant_id, "attendant")
        first = asyncio.create_task(take(stream, 1))
        await registered(feed, 1)
        await asyncio.to_thread(leads.message, conv)
        got = await first

        def drop_the_feeds_connections() -> int:
            with psycopg.connect(conninfo(store.url, store.schema), autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s AND pid <> pg_backend_pid()",
                    (APPLICATION_NAME,),
                ).fetchall()
            return len(rows)

        assert await asyncio.to_thread(drop_the_feeds_connections) >= 2  # reader, listener
        for _ in range(3):
            await asyncio.to_thread(leads.message, conv)
        got += await take(stream, 3)
        await stream.aclose()
        assert feed.errors >= 1
    assert got == expected(store, leads.tenant_id, "attendant", start)


async def test_a_subscription_ends_the_pause_of_a_feed_nobody_watched(store: Store) -> None:
    """Unwatched, the feed reads erasures only, after a pause that lets commits gather:
    a subscriber arriving then gets its events at once, not after the pause (an hour
    here, beyond the guard)."""
    leads = Leads(store, uuid4())
    async with feed_on(store, unwatched_pause=3600.0) as feed:
        conv = await asyncio.to_thread(leads.start)  # read by a feed nobody watches
        await asyncio.sleep(0.3)  # now in its pause (if not yet, the test is only weaker)
        stream = feed.subscribe(leads.tenant_id, "attendant")
        first = asyncio.create_task(next_item(stream))
        await registered(feed, 1)
        await asyncio.to_thread(leads.message, conv)
        got: list[LiveEvent | Heartbeat] = [await first]
        async with asyncio.timeout(GUARD_S):
            while not any(isinstance(e, LiveEvent) and e.type == MESSAGE_CREATED for e in got):
                got.append(await next_item(stream))
        await stream.aclose()
    assert [
        e.data["seq"] for e in got if isinstance(e, LiveEvent) and e.type == MESSAGE_CREATED
    ] == [1]

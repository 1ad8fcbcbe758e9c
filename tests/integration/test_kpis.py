"""The KPIs against a conversation set computed by hand.

Seven conversations of one tenant over two UTC days, as event sequences with chosen
times, go through the real KPI projection (the Kafka runner's unit of work, in several
batchings, with redeliveries) into real PostgreSQL; `kpis_by_day` must answer exactly
the figures worked out below, event by event. The definitions are those of
`urbana.projections.kpis`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest

from urbana.adapters.llm.openai_llm import OpenAILLM
from urbana.adapters.postgres.replay import replay
from urbana.adapters.postgres.store import Store
from urbana.application.app import ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.application.envelope import Envelope
from urbana.application.responder import Responder
from urbana.config import conninfo
from urbana.projections import queries
from urbana.projections.apply import apply_tracked
from urbana.projections.kpis import COUNTERS, Kpis

pytestmark = pytest.mark.integration

DAY_1 = date(2025, 3, 3)
DAY_2 = date(2025, 3, 4)


class Script:
    """Envelopes of one tenant's conversations, each stream numbered in order."""

    def __init__(self) -> None:
        self.tenant_id = str(uuid4())
        self.events: list[tuple[str, Envelope]] = []
        self.versions: dict[str, int] = {}

    def conversation(self) -> str:
        return str(uuid4())

    def __call__(self, conv: str, day: date, clock: str, type_: str, **data: Any) -> None:
        self.versions[conv] = version = self.versions.get(conv, 0) + 1
        stamp = f"{day.isoformat()}T{clock}+00:00"
        envelope = Envelope(
            event_id=str(uuid4()),
            type=type_,
            aggregate="Conversation",
            schema_version=1,
            stream_id=conv,
            stream_version=version,
            position=0,  # numbered once every stream is written, in time order
            tenant_id=self.tenant_id,
            occurred_at=stamp,
            data=data,
            encrypted=None,
        )
        self.events.append((stamp, envelope))

    def reply(self, conv: str, day: date, clock: str, tokens: tuple[int, int, str]) -> None:
        """The AI's answer as the store records it: AIReplyGenerated, then its message."""
        usage = {"tokens_in": tokens[0], "tokens_out": tokens[1], "cost_usd": tokens[2]}
        self(conv, day, clock, "AIReplyGenerated", intent="faq", confidence=0.9, usage=usage)
        self(conv, day, clock, "OutboundMessageQueued", author="ai", outbound_id=str(uuid4()))

    def system(self, conv: str, day: date, clock: str) -> None:
        self(conv, day, clock, "OutboundMessageQueued", author="system", outbound_id=str(uuid4()))

    def human(self, conv: str, day: date, clock: str) -> None:
        self(conv, day, clock, "OutboundMessageQueued", author="human", outbound_id=str(uuid4()))

    def ordered(self) -> list[Envelope]:
        """Every envelope in time order (stable), numbered 1, 2, ... as the store would."""
        ordered = sorted(self.events, key=lambda pair: pair[0])
        return [replace(e, position=n) for n, (_, e) in enumerate(ordered, start=1)]


def two_days() -> Script:
    s = Script()
    d1, d2 = DAY_1, DAY_2

    # A: the AI answers two bursts and the conversation is closed: resolved by the AI.
    a = s.conversation()
    s(a, d1, "09:00:00", "ConversationStarted")
    s(a, d1, "09:00:00", "MessageReceived")
    s(a, d1, "09:00:30", "MessageReceived")  # same burst: the clock runs from 09:00:00
    s.reply(a, d1, "09:00:40", (100, 20, "0.001"))  # first response 40 s
    s(a, d1, "09:10:00", "MessageReceived")
    s.reply(a, d1, "09:12:00", (50, 10, "0.0005"))  # 120 s
    s(a, d1, "09:30:00", "ConversationClosed", by="ana", resolution="resolved")  # 1800 s

    # B: every model failed. The generic answer is recorded as AIReplyGenerated, then
    # the transition message and the handoff (llm_failure): a system message, not an AI
    # reply. An attendant takes over, answers twice, closes.
    b = s.conversation()
    s(b, d1, "10:00:00", "ConversationStarted")
    s(b, d1, "10:00:00", "MessageReceived")
    s.reply(b, d1, "10:00:20", (30, 5, "0.0002"))  # 20 s: the lead got an answer
    s.system(b, d1, "10:00:20")
    s(b, d1, "10:00:20", "HandoffRequested", reason="llm_failure")
    s(b, d1, "10:05:00", "HandoffAccepted", attendant="ana")
    s.human(b, d1, "10:06:00")  # no burst pending: not a first response
    s(b, d1, "10:20:00", "MessageReceived")
    s.human(b, d1, "10:25:00")  # 300 s
    s(b, d1, "11:00:00", "ConversationClosed", by="ana", resolution="resolved")  # 3600 s

    # C: the guard refuses an answer (fallback + transition + handoff), the attendant
    # gives it back, the AI hands off again (twice handed off on day 1, one conversation),
    # taken over and closed after midnight; reopened on day 2, handed off twice more.
    c = s.conversation()
    s(c, d1, "23:50:00", "ConversationStarted")
    s(c, d1, "23:50:00", "MessageReceived")
    s.reply(c, d1, "23:51:00", (80, 15, "0.0008"))  # 60 s
    s(c, d1, "23:52:00", "MessageReceived")
    s(c, d1, "23:52:30", "AIReplyRejected", reason="prompt_leak")
    s.system(c, d1, "23:52:30")  # the fallback answer: 30 s
    s.system(c, d1, "23:52:30")  # the transition message
    s(c, d1, "23:52:30", "HandoffRequested", reason="prompt_leak")
    s(c, d1, "23:55:00", "ReturnedToAI", answered_seq=2)  # not a KPI event
    s(c, d1, "23:58:00", "MessageReceived")
    s.reply(c, d1, "23:59:00", (80, 15, "0.0008"))  # 60 s
    s.system(c, d1, "23:59:00")
    s(c, d1, "23:59:00", "HandoffRequested", reason="hot_lead")
    s(c, d2, "00:10:00", "HandoffAccepted", attendant="ana")
    s(c, d2, "00:20:00", "ConversationClosed", by="ana", resolution="resolved")  # 1800 s
    s(c, d2, "08:00:00", "ConversationReopened")
    s(c, d2, "08:00:00", "MessageReceived")
    s.reply(c, d2, "08:01:00", (40, 8, "0.0004"))  # 60 s
    s(c, d2, "08:05:00", "MessageReceived")
    s.reply(c, d2, "08:05:10", (40, 8, "0.0004"))  # 10 s
    s.system(c, d2, "08:05:10")
    s(c, d2, "08:05:10", "HandoffRequested", reason="explicit_request")
    s(c, d2, "08:10:00", "ReturnedToAI", answered_seq=5)
    s(c, d2, "08:15:00", "MessageReceived")
    s.reply(c, d2, "08:15:20", (40, 8, "0.0004"))  # 20 s
    s.system(c, d2, "08:15:20")
    s(c, d2, "08:15:20", "HandoffRequested", reason="hot_lead")
    s(c, d2, "08:30:00", "ConversationClosed", by="ana", resolution="resolved")  # 1800 s

    # D: the business phone answers by itself: a human from the start, no AI decision.
    d = s.conversation()
    s(d, d2, "09:00:00", "ConversationStarted")
    s(d, d2, "09:00:00", "MessageReceived")
    s(d, d2, "09:03:00", "HandoffAccepted", attendant="business_phone")
    s.human(d, d2, "09:03:00")  # 180 s
    s(d, d2, "09:10:00", "ConversationClosed", by="ana", resolution="resolved")  # 600 s

    # E: a message nobody answered.
    e = s.conversation()
    s(e, d1, "12:00:00", "ConversationStarted")
    s(e, d1, "12:00:00", "MessageReceived")

    # F: the AI answers and hands off; its answer fails to send.
    f = s.conversation()
    s(f, d2, "11:00:00", "ConversationStarted")
    s(f, d2, "11:00:00", "MessageReceived")
    s.reply(f, d2, "11:00:30", (10, 2, "0.0001"))  # 30 s
    s.system(f, d2, "11:00:30")
    s(f, d2, "11:00:30", "HandoffRequested", reason="explicit_request")
    s(f, d2, "11:01:00", "OutboundMessageFailed", reason="gateway", code="131026")

    # G: written late on day 1, answered after midnight, closed: resolved by the AI.
    g = s.conversation()
    s(g, d1, "22:00:00", "ConversationStarted")
    s(g, d1, "22:00:00", "MessageReceived")
    s.reply(g, d2, "00:30:00", (60, 12, "0.0006"))  # 9000 s, counted on day 2
    s(g, d2, "01:00:00", "ConversationClosed", by="ana", resolution="resolved")  # 10800 s
    return s


EXPECTED: dict[date, dict[str, Any]] = {
    DAY_1: {
        "counts": {
            "conversations_started": 5,  # A B C E G
            "inbound": 10,  # A 3, B 2, C 3, E 1, G 1
            "ai_replies": 4,  # A 2, C 2; B's generic answer is not one
            "ai_rejected": 1,  # C
            "human_replies": 2,  # B
            "system_messages": 5,  # B: generic + transition; C: fallback + 2 transitions
            "handoffs": 3,  # B 1, C 2
            "takeovers": 1,  # B
            "resolved": 2,  # A B
            "reopened": 0,
            "failed_outbound": 0,
            "llm_failures": 1,  # B
            "ai_handled": 3,  # A B C
            "handed_off": 2,  # B C (C twice, counted once)
            "ai_closed": 2,  # A B
            "ai_resolved": 1,  # A
            "resolution_ms_sum": (1800 + 3600) * 1000,
            "frt_count": 7,
            "frt_ms_sum": (40 + 120 + 20 + 300 + 60 + 30 + 60) * 1000,
            "frt_lt_1m": 3,  # 40 20 30
            "frt_lt_5m": 3,  # 120 60 60
            "frt_lt_15m": 1,  # 300 (not under 5 minutes)
            "frt_lt_1h": 0,
            "frt_lt_4h": 0,
            "frt_ge_4h": 0,
            "tokens_in": 100 + 50 + 30 + 80 + 80,
            "tokens_out": 20 + 10 + 5 + 15 + 15,
        },
        "cost_usd": Decimal("0.0033"),
        "avg_first_response_s": 90.0,  # 630 / 7
        "avg_resolution_s": 2700.0,  # 5400 / 2
        "handoff_rate": 2 / 3,
        "ai_resolution_rate": 1 / 2,
        # responses: AI 40 120 60 60 (B's 20 was the generic answer: system, with C's
        # fallback 30); human 300. percentile_cont: 0.9 of the way is 60 + 0.7 * 60.
        "ai_first_response_p50_s": 60.0,
        "ai_first_response_p90_s": 102.0,
        "human_first_response_p50_s": 300.0,
        "human_first_response_p90_s": 300.0,
    },
    DAY_2: {
        "counts": {
            "conversations_started": 2,  # D F
            "inbound": 5,  # C 3, D 1, F 1
            "ai_replies": 5,  # C 3, F 1, G 1
            "ai_rejected": 0,
            "human_replies": 1,  # D
            "system_messages": 3,  # C 2 transitions, F 1
            "handoffs": 3,  # C 2, F 1
            "takeovers": 2,  # C (00:10), D
            "resolved": 4,  # C twice, D, G
            "reopened": 1,  # C
            "failed_outbound": 1,  # F
            "llm_failures": 0,
            "ai_handled": 3,  # C F G (C's takeover at 00:10 is not an AI decision)
            "handed_off": 2,  # C F
            "ai_closed": 3,  # C's two stretches, G (not D: no AI decision)
            "ai_resolved": 1,  # G
            "resolution_ms_sum": (1800 + 1800 + 600 + 10800) * 1000,
            "frt_count": 6,
            "frt_ms_sum": (60 + 10 + 20 + 180 + 30 + 9000) * 1000,
            "frt_lt_1m": 3,  # 10 20 30
            "frt_lt_5m": 2,  # 60 180
            "frt_lt_15m": 0,
            "frt_lt_1h": 0,
            "frt_lt_4h": 1,  # 9000
            "frt_ge_4h": 0,
            "tokens_in": 40 * 3 + 10 + 60,
            "tokens_out": 8 * 3 + 2 + 12,
        },
        "cost_usd": Decimal("0.0019"),
        "avg_first_response_s": 1550.0,  # 9300 / 6
        "avg_resolution_s": 3750.0,  # 15000 / 4
        "handoff_rate": 2 / 3,  # not 3 handoffs / 2 conversations started
        "ai_resolution_rate": 1 / 3,
        # responses: AI 10 20 30 60 9000; human 180. p90: 60 + 0.6 * (9000 - 60)
        "ai_first_response_p50_s": 30.0,
        "ai_first_response_p90_s": 5424.0,
        "human_first_response_p50_s": 180.0,
        "human_first_response_p90_s": 180.0,
    },
}


def partition_of(e: Envelope, partitions: int) -> int:
    return int(UUID(e.stream_id)) % partitions


def deliveries(events: Sequence[Envelope], plan: str) -> Iterator[dict[int, list[Envelope]]]:
    """Batches as the Kafka runner would get them: per partition, in each one's order."""
    if plan == "one batch":
        groups = [list(events)]
    elif plan == "one event at a time":
        groups = [[e] for e in events]
    else:  # chunks of 5, each delivered twice (a runner that crashed before its commit)
        chunks = [list(events[i : i + 5]) for i in range(0, len(events), 5)]
        groups = [chunk for chunk in chunks for _ in range(2)]
    for group in groups:
        batch: dict[int, list[Envelope]] = {}
        for e in group:
            batch.setdefault(partition_of(e, 3), []).append(e)
        yield batch


async def kpi_days(store: Store, tenant_id: str) -> dict[date, queries.KpiDay]:
    async with await psycopg.AsyncConnection.connect(
        conninfo(store.url, store.schema), autocommit=True
    ) as conn:
        days = await queries.kpis_by_day(conn, tenant_id, DAY_1, DAY_2)
    return {d.day: d for d in days if d.day is not None}  # a day's figures name their day


def figures(day: queries.KpiDay) -> dict[str, Any]:
    return {
        "counts": day.counts,
        "cost_usd": day.cost_usd,
        "avg_first_response_s": day.avg_first_response_s,
        "avg_resolution_s": day.avg_resolution_s,
        "handoff_rate": day.handoff_rate,
        "ai_resolution_rate": day.ai_resolution_rate,
        "ai_first_response_p50_s": day.ai_first_response_p50_s,
        "ai_first_response_p90_s": day.ai_first_response_p90_s,
        "human_first_response_p50_s": day.human_first_response_p50_s,
        "human_first_response_p90_s": day.human_first_response_p90_s,
    }


@pytest.mark.parametrize("plan", ["one batch", "one event at a time", "chunks delivered twice"])
async def test_kpis_of_a_hand_computed_conversation_set(store: Store, plan: str) -> None:
    script = two_days()
    projection = Kpis()
    async with await psycopg.AsyncConnection.connect(conninfo(store.url, store.schema)) as conn:
        for batch in deliveries(script.ordered(), plan):
            await apply_tracked(conn, projection, batch)

    days = await kpi_days(store, script.tenant_id)

    assert sorted(days) == [DAY_1, DAY_2]
    for on, expected in EXPECTED.items():
        got = figures(days[on])
        assert got.pop("counts") == expected["counts"], on
        assert got == pytest.approx({k: v for k, v in expected.items() if k != "counts"}), on
        assert days[on].first_response == {
            b: expected["counts"][b] for b in days[on].first_response
        }

    async with await psycopg.AsyncConnection.connect(
        conninfo(store.url, store.schema), autocommit=True
    ) as conn:
        totals = (await queries.kpi_report(conn, script.tenant_id, DAY_1, DAY_2)).totals
    both = {c: EXPECTED[DAY_1]["counts"][c] + EXPECTED[DAY_2]["counts"][c] for c in COUNTERS}
    assert totals.counts == both
    assert totals.cost_usd == Decimal("0.0052")
    assert totals.handoff_rate == pytest.approx(4 / 6)
    assert totals.avg_first_response_s == pytest.approx((630 + 9300) / 13)
    # over both days: AI 10 20 30 40 60 60 60 120 9000, human 180 300
    assert (totals.ai_first_response_p50_s, totals.ai_first_response_p90_s) == pytest.approx(
        (60.0, 120 + 0.2 * (9000 - 120))
    )
    assert (
        totals.human_first_response_p50_s,
        totals.human_first_response_p90_s,
    ) == pytest.approx((240.0, 180 + 0.9 * 120))


def inbound(contact: str, text: str) -> InboundMessage:
    return InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=contact,
        phone=contact,
        sent_at=datetime.now(UTC),
        kind="text",
        text=text,
        contact_name="Cliente",
    )


async def test_the_generic_answer_after_every_model_failed_is_not_an_ai_reply(
    store: Store,
) -> None:
    tenant_id, _ = store.app.register_tenant(f"Loja {uuid4().hex[:8]}")
    got = store.app.receive_message(
        ReceiveMessage(tenant_id, "cloud", inbound("5511987650001", "Oi"))
    )
    async with httpx.AsyncClient() as http:
        # Nothing listens there: both models fail at once, the last resort answers.
        llm = OpenAILLM(http, api_key="sk-test", base_url="http://127.0.0.1:9/v1", attempts=1)
        responded = await Responder(store.app, llm).respond(got.conversation_id)
    assert (responded.action, responded.detail) == ("handoff", "llm_failure")
    names = [type(e).__name__ for e in store.app.stream(got.conversation_id)]
    assert "AIReplyGenerated" in names  # how the store records the generic answer

    replay(store.url, store.schema, ["kpis"])
    async with await psycopg.AsyncConnection.connect(
        conninfo(store.url, store.schema), autocommit=True
    ) as conn:
        days = await queries.kpis_by_day(conn, tenant_id, date.min, date.max)

    # One day, unless the test ran across midnight: add the days up.
    counts = {name: sum(d.counts[name] for d in days) for name in days[0].counts}
    assert (counts["ai_replies"], counts["system_messages"], counts["llm_failures"]) == (0, 2, 1)
    assert (counts["ai_handled"], counts["handed_off"], counts["handoffs"]) == (1, 1, 1)
    assert counts["frt_count"] == 1  # the lead did get an answer

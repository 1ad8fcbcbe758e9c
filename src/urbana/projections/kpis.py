"""KPIs per tenant per day (UTC), as help-desk tools define them (DESIGN §7).

Counters: conversations started, inbound messages, AI replies (and replies the guard
rejected), human replies, system messages, handoffs requested, takeovers (a human
took the thread), resolved (closed), reopened, failed sends; tokens and cost from
`AIReplyGenerated.usage`; first-response time.

First-response time: from the first inbound message of a burst (the first inbound
after the conversation's last outbound, or since it started) to the next outbound
message of any author. It is counted on the day of the response, in buckets
(<1m, <5m, <15m, <1h, <4h, >=4h) plus count and total, so averages and distributions
add up over days. A burst closed without an answer has no response time.

Every daily column is a sum, merged with `+` in SQL: the per-conversation pending
burst (`kpi_conversations`) is the only state, and it belongs to the conversation's
stream. Cost is summed as `numeric`, so totals do not depend on the order of addition.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from urbana.application.envelope import Envelope
from urbana.projections.base import Load, Row, Write, parse_time, upsert_sql

BUCKETS: tuple[tuple[str, float], ...] = (
    ("frt_lt_1m", 60),
    ("frt_lt_5m", 300),
    ("frt_lt_15m", 900),
    ("frt_lt_1h", 3600),
    ("frt_lt_4h", 14400),
    ("frt_ge_4h", float("inf")),
)

COUNTERS: tuple[str, ...] = (
    "conversations_started",
    "inbound",
    "ai_replies",
    "ai_rejected",
    "human_replies",
    "system_messages",
    "handoffs",
    "takeovers",
    "resolved",
    "reopened",
    "failed_outbound",
    "frt_count",
    "frt_ms_sum",
    *(b for b, _ in BUCKETS),
    "tokens_in",
    "tokens_out",
)

DAILY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("tenant_id", "uuid"),
    ("day", "date"),
    *((c, "bigint") for c in COUNTERS),
    ("cost_usd", "numeric"),
)
STATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "uuid"),
    ("tenant_id", "uuid"),
    ("pending_since", "timestamptz"),
    ("last_position", "bigint"),
)

_DAILY_UPSERT = upsert_sql(
    "kpi_daily",
    DAILY_COLUMNS,
    ("tenant_id", "day"),
    {c: f"t.{c} + EXCLUDED.{c}" for c, _ in DAILY_COLUMNS[2:]},
)
_STATE_UPSERT = upsert_sql("kpi_conversations", STATE_COLUMNS, ("id",))
_INDEX = {c: i for i, (c, _) in enumerate(DAILY_COLUMNS)}

_TOKENS_IN = ("tokens_in", "prompt_tokens", "input_tokens")
_TOKENS_OUT = ("tokens_out", "completion_tokens", "output_tokens")
_COST = ("cost_usd", "cost")


def bucket_for(seconds: float) -> str:
    """The first-response-time bucket a duration falls in."""
    for name, limit in BUCKETS:
        if seconds < limit:
            return name
    return BUCKETS[-1][0]


def _number(usage: dict[str, Any], keys: tuple[str, ...]) -> Decimal:
    for key in keys:
        value = usage.get(key)
        if value is None or isinstance(value, bool):
            continue
        try:
            return Decimal(str(value))
        except (InvalidOperation, ValueError):
            continue
    return Decimal(0)


def usage_figures(usage: object) -> tuple[int, int, Decimal]:
    """(tokens in, tokens out, cost in USD) from an `AIReplyGenerated.usage`, leniently."""
    if not isinstance(usage, dict):
        return 0, 0, Decimal(0)
    tokens_in = _number(usage, _TOKENS_IN)
    tokens_out = _number(usage, _TOKENS_OUT)
    return int(tokens_in), int(tokens_out), _number(usage, _COST)


class _Day:
    __slots__ = ("values",)

    def __init__(self, tenant_id: str, day: date) -> None:
        self.values: list[Any] = [tenant_id, day, *([0] * len(COUNTERS)), Decimal(0)]

    def add(self, column: str, amount: int | Decimal = 1) -> None:
        self.values[_INDEX[column]] += amount


class Kpis:
    name: ClassVar[str] = "kpis"
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[str, ...]] = ("kpi_daily", "kpi_conversations")
    handles: ClassVar[frozenset[str]] = frozenset(
        "Conversation." + t
        for t in (
            "ConversationStarted",
            "MessageReceived",
            "AIReplyGenerated",
            "AIReplyRejected",
            "OutboundMessageQueued",
            "OutboundMessageFailed",
            "HandoffRequested",
            "HandoffAccepted",
            "ConversationClosed",
            "ConversationReopened",
        )
    )

    def ddl(self) -> list[str]:
        counters = ", ".join(f"{c} bigint NOT NULL DEFAULT 0" for c in COUNTERS)
        return [
            "CREATE TABLE IF NOT EXISTS {kpi_daily} (tenant_id uuid NOT NULL, day date NOT NULL, "
            f"{counters}, cost_usd numeric NOT NULL DEFAULT 0, "
            "CONSTRAINT {kpi_daily}_pkey PRIMARY KEY (tenant_id, day))",
            "CREATE TABLE IF NOT EXISTS {kpi_conversations} (id uuid, tenant_id uuid, "
            "pending_since timestamptz, last_position bigint, "
            "CONSTRAINT {kpi_conversations}_pkey PRIMARY KEY (id))",
        ]

    def loads(self, envelopes: Sequence[Envelope]) -> list[Load]:
        ids = list(dict.fromkeys(e.stream_id for e in envelopes if e.type != "ConversationStarted"))
        if not ids:
            return []
        return [
            Load(
                "kpi_conversations",
                "SELECT id::text, tenant_id::text, pending_since, last_position "
                "FROM {kpi_conversations} WHERE id = ANY(%s::uuid[])",
                (ids,),
            )
        ]

    def fold(self, envelopes: Sequence[Envelope], loaded: dict[str, list[Row]]) -> list[Write]:
        state: dict[str, list[Any]] = {r[0]: list(r) for r in loaded.get("kpi_conversations", [])}
        touched: dict[str, None] = {}
        days: dict[tuple[str, date], _Day] = {}
        for e in envelopes:
            conv = state.get(e.stream_id)
            if e.type == "ConversationStarted":
                conv = [e.stream_id, e.tenant_id or e.data.get("tenant_id"), None, None]
                state[e.stream_id] = conv
            elif conv is None:
                continue
            tenant_id = conv[1]
            if tenant_id is None:
                continue
            on = day_of(e.occurred_at)
            key = (tenant_id, on)
            day = days.get(key)
            if day is None:
                day = days[key] = _Day(tenant_id, on)
            _count(day, conv, e)
            conv[3] = e.position
            touched[e.stream_id] = None
        writes = []
        if days:
            rows = [tuple(d.values) for d in days.values()]
            writes.append(Write("kpi_daily", DAILY_COLUMNS, _DAILY_UPSERT, rows))
        if touched:
            rows = [tuple(state[c]) for c in touched]
            writes.append(Write("kpi_conversations", STATE_COLUMNS, _STATE_UPSERT, rows))
        return writes


def day_of(occurred_at: str) -> date:
    """The UTC day of an ISO timestamp (no datetime parsing when it is already UTC)."""
    if occurred_at.endswith("+00:00") and occurred_at[10:11] == "T":
        cached = _DAYS.get(occurred_at[:10])
        if cached is None:
            cached = _DAYS[occurred_at[:10]] = date.fromisoformat(occurred_at[:10])
        return cached
    return parse_time(occurred_at).date()


_DAYS: dict[str, date] = {}


def _count(day: _Day, conv: list[Any], e: Envelope) -> None:
    t = e.type
    if t == "ConversationStarted":
        day.add("conversations_started")
    elif t == "MessageReceived":
        day.add("inbound")
        if conv[2] is None:
            conv[2] = parse_time(e.occurred_at)
    elif t == "AIReplyGenerated":
        day.add("ai_replies")
        tokens_in, tokens_out, cost = usage_figures(e.data.get("usage"))
        day.add("tokens_in", tokens_in)
        day.add("tokens_out", tokens_out)
        day.add("cost_usd", cost)
    elif t == "AIReplyRejected":
        day.add("ai_rejected")
    elif t == "OutboundMessageQueued":
        author = e.data.get("author")
        if author == "human":
            day.add("human_replies")
        elif author != "ai":  # AI replies are counted on AIReplyGenerated
            day.add("system_messages")
        pending: datetime | None = conv[2]
        if pending is not None:
            elapsed = max(0.0, (parse_time(e.occurred_at) - pending).total_seconds())
            day.add("frt_count")
            day.add("frt_ms_sum", round(elapsed * 1000))
            day.add(bucket_for(elapsed))
            conv[2] = None
    elif t == "OutboundMessageFailed":
        day.add("failed_outbound")
    elif t == "HandoffRequested":
        day.add("handoffs")
    elif t == "HandoffAccepted":
        day.add("takeovers")
    elif t == "ConversationClosed":
        day.add("resolved")
        conv[2] = None
    elif t == "ConversationReopened":
        day.add("reopened")

"""KPIs per tenant per day (UTC), defined once here (the README repeats them).

A *stretch* of a conversation runs from `ConversationStarted` (or `ConversationReopened`)
to `ConversationClosed`. A conversation *the AI handled* on a day is one in which the AI
took at least one decision that day: it answered a burst (`AIReplyGenerated`), had its
answer refused by the guard (`AIReplyRejected`), or handed off (`HandoffRequested`, which
only ever leaves AI mode).

First response time
    From the first inbound message of a burst (the first inbound after the conversation's
    last outbound, or since it started) to the next outbound message of any author (AI,
    system or human): how long the lead waited for an answer. Counted on the day of the
    response, as `frt_count`, `frt_ms_sum` and buckets (<1m, <5m, <15m, <1h, <4h, >=4h),
    so averages and distributions add up over days. A burst closed unanswered has none.
    Each response is also kept as a row of `kpi_responses` (its day, its responder:
    `ai`, `human` or `system`, and the milliseconds), from which the queries compute
    exact medians and 90th percentiles, the AI's and the attendants' apart, over any
    range of days.
Resolution time
    From the start of a stretch to its `ConversationClosed`, counted on the day of the
    close: `resolution_ms_sum` over `resolved` (every close counts once).
Handoff rate
    Conversations handed off / conversations the AI handled, per day:
    `handed_off / ai_handled`. Each counts a conversation at most once a day, and every
    conversation handed off that day was handled by the AI that day, so the rate is
    within [0, 1]. `handoffs` still counts every `HandoffRequested`.
AI resolution rate
    Of the stretches the AI took part in that were closed that day (`ai_closed`), the
    share in which no human took part, i.e. no handoff was requested and no attendant took
    over (`ai_resolved`): `ai_resolved / ai_closed`, within [0, 1].

Other counters: conversations started, inbound messages, AI replies, replies the guard
rejected, human replies, system messages, takeovers (a human took a thread nobody held:
`HandoffAccepted`, or `ConversationAssigned` / a transfer to a user when no attendant held
it; a reassignment is not one), reopened,
failed sends, bursts every model failed on (`llm_failures`); tokens and cost from
`AIReplyGenerated.usage`.

When every model failed, the responder records the engine's generic answer as an
`AIReplyGenerated` followed, in the same transaction, by `HandoffRequested` with reason
`llm_failure`. That answer is not the AI's: the handoff moves it from `ai_replies` to
`system_messages` on the day it was counted (its tokens and cost stay: they were spent),
and its `kpi_responses` row from `ai` to `system`.

Console conversations (the tenant testing its bot: the panel's Testar, `urbana chat`) are
not leads: none of their events count.

Every daily column is a sum, merged with `+` in SQL, so partitions applied in any order
give the same rows; the per-conversation state (`kpi_conversations`: the pending burst,
the stretch, the days already counted) is the only state, and it belongs to the
conversation's stream. Cost is summed as `numeric`, so totals do not depend on the order
of addition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from urbana.application.envelope import Envelope
from urbana.domain.channels import CONSOLE
from urbana.domain.reply import LLM_FAILURE
from urbana.projections.base import Load, Row, Write, event_names, parse_time, upsert_sql

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
    "llm_failures",
    "ai_handled",
    "handed_off",
    "ai_closed",
    "ai_resolved",
    "resolution_ms_sum",
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
    ("pending_since", "timestamptz"),  # first inbound of the unanswered burst
    ("last_position", "bigint"),
    ("opened_at", "timestamptz"),  # start of the current stretch
    ("ai_day", "date"),  # last day counted in ai_handled
    ("handoff_day", "date"),  # last day counted in handed_off
    ("ai_reply_day", "date"),  # day of an AI reply whose outcome may still hand off
    ("ai_in_stretch", "boolean"),
    ("human_in_stretch", "boolean"),
    ("assigned", "boolean"),  # an attendant holds it
    ("reply_position", "bigint"),  # that AI reply's response row (see ai_reply_day)
    ("reply_ms", "bigint"),
)
# Positions in a state row (the order of STATE_COLUMNS).
(
    _TENANT,
    _PENDING,
    _POSITION,
    _OPENED,
    _AI_DAY,
    _HANDOFF_DAY,
    _REPLY_DAY,
    _AI_IN,
    _HUMAN_IN,
    _ASSIGNED,
    _REPLY_POSITION,
    _REPLY_MS,
) = range(1, 13)

RESPONSE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("conversation_id", "uuid"),
    ("position", "bigint"),  # the responding OutboundMessageQueued
    ("tenant_id", "uuid"),
    ("day", "date"),
    ("responder", "text"),  # ai | human | system
    ("ms", "bigint"),
)
_RESPONSE_UPSERT = upsert_sql("kpi_responses", RESPONSE_COLUMNS, ("conversation_id", "position"))

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
    # 2: stretches, per-day distinct conversations; 3: response rows, assignments
    version: ClassVar[int] = 3
    tables: ClassVar[tuple[str, ...]] = ("kpi_daily", "kpi_conversations", "kpi_responses")
    handles: ClassVar[frozenset[str]] = event_names(
        "Conversation",
        "ConversationStarted",
        "MessageReceived",
        "AIReplyGenerated",
        "AIReplyRejected",
        "OutboundMessageQueued",
        "OutboundMessageFailed",
        "HandoffRequested",
        "HandoffAccepted",
        "ConversationAssigned",
        "ConversationTransferred",
        "ReturnedToQueue",
        "ReturnedToAI",
        "ConversationClosed",
        "ConversationReopened",
    )

    def ddl(self) -> list[str]:
        counters = ", ".join(f"{c} bigint NOT NULL DEFAULT 0" for c in COUNTERS)
        state = ", ".join(f"{c} {kind}" for c, kind in STATE_COLUMNS)
        responses = ", ".join(f"{c} {kind}" for c, kind in RESPONSE_COLUMNS)
        return [
            "CREATE TABLE IF NOT EXISTS {kpi_daily} (tenant_id uuid NOT NULL, day date NOT NULL, "
            f"{counters}, cost_usd numeric NOT NULL DEFAULT 0, "
            "CONSTRAINT {kpi_daily}_pkey PRIMARY KEY (tenant_id, day))",
            f"CREATE TABLE IF NOT EXISTS {{kpi_conversations}} ({state}, "
            "CONSTRAINT {kpi_conversations}_pkey PRIMARY KEY (id))",
            f"CREATE TABLE IF NOT EXISTS {{kpi_responses}} ({responses}, "
            "CONSTRAINT {kpi_responses}_pkey PRIMARY KEY (conversation_id, position))",
            "CREATE INDEX IF NOT EXISTS {kpi_responses}_day_idx "
            "ON {kpi_responses} (tenant_id, day, responder)",
        ]

    def loads(self, envelopes: Sequence[Envelope]) -> list[Load]:
        ids = list(dict.fromkeys(e.stream_id for e in envelopes if e.type != "ConversationStarted"))
        if not ids:
            return []
        columns = ", ".join(c + "::text" if kind == "uuid" else c for c, kind in STATE_COLUMNS)
        return [
            Load(
                "kpi_conversations",
                f"SELECT {columns} FROM {{kpi_conversations}} WHERE id = ANY(%s::uuid[])",  # noqa: S608
                (ids,),
            )
        ]

    def fold(self, envelopes: Sequence[Envelope], loaded: dict[str, list[Row]]) -> list[Write]:
        state: dict[str, list[Any]] = {r[0]: list(r) for r in loaded.get("kpi_conversations", [])}
        touched: dict[str, None] = {}
        days: dict[tuple[str, date], _Day] = {}
        responses: dict[tuple[str, int], Row] = {}

        def day_for(tenant_id: str, on: date) -> _Day:
            day = days.get((tenant_id, on))
            if day is None:
                day = days[(tenant_id, on)] = _Day(tenant_id, on)
            return day

        for e in envelopes:
            conv = state.get(e.stream_id)
            if e.type == "ConversationStarted":
                if e.data.get("channel") == CONSOLE:
                    continue  # a console test: without a state row, none of it counts
                conv = [e.stream_id, e.tenant_id or e.data.get("tenant_id"), None, None]
                conv += [parse_time(e.occurred_at), None, None, None, False, False, False]
                conv += [None, None]
                state[e.stream_id] = conv
            elif conv is None:
                continue
            tenant_id = conv[_TENANT]
            if tenant_id is None:
                continue
            _count(conv, e, tenant_id, day_of(e.occurred_at), day_for, responses)
            conv[_POSITION] = e.position
            touched[e.stream_id] = None
        writes = []
        if days:
            rows = [tuple(d.values) for d in days.values()]
            writes.append(Write("kpi_daily", DAILY_COLUMNS, _DAILY_UPSERT, rows))
        if touched:
            rows = [tuple(state[c]) for c in touched]
            writes.append(Write("kpi_conversations", STATE_COLUMNS, _STATE_UPSERT, rows))
        if responses:
            rows = list(responses.values())
            writes.append(Write("kpi_responses", RESPONSE_COLUMNS, _RESPONSE_UPSERT, rows))
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


_AI_DECISIONS = frozenset({"AIReplyGenerated", "AIReplyRejected", "HandoffRequested"})


def _count(
    conv: list[Any],
    e: Envelope,
    tenant_id: str,
    on: date,
    day_for: Callable[[str, date], _Day],
    responses: dict[tuple[str, int], Row],
) -> None:
    """Fold one event of a conversation into its state, the tenant's counters of `on`
    and the response rows."""
    t = e.type
    day = day_for(tenant_id, on)
    reply_day: date | None = conv[_REPLY_DAY]
    if t != "OutboundMessageQueued":
        # An AI reply's outcome (its message, the transition, the handoff) is recorded
        # in one transaction: any other event means that outcome is complete.
        conv[_REPLY_DAY] = None
    if t in _AI_DECISIONS:
        if conv[_AI_DAY] != on:
            day.add("ai_handled")
            conv[_AI_DAY] = on
        conv[_AI_IN] = True
    if t == "ConversationStarted":
        day.add("conversations_started")
    elif t == "MessageReceived":
        day.add("inbound")
        if conv[_PENDING] is None:
            conv[_PENDING] = parse_time(e.occurred_at)
    elif t == "AIReplyGenerated":
        day.add("ai_replies")
        tokens_in, tokens_out, cost = usage_figures(e.data.get("usage"))
        day.add("tokens_in", tokens_in)
        day.add("tokens_out", tokens_out)
        day.add("cost_usd", cost)
        conv[_REPLY_DAY] = on
        conv[_REPLY_POSITION] = conv[_REPLY_MS] = None
    elif t == "AIReplyRejected":
        day.add("ai_rejected")
    elif t == "OutboundMessageQueued":
        author = e.data.get("author")
        if author == "human":
            day.add("human_replies")
        elif author != "ai":  # AI replies are counted on AIReplyGenerated
            day.add("system_messages")
        pending: datetime | None = conv[_PENDING]
        if pending is not None:
            elapsed = max(0.0, (parse_time(e.occurred_at) - pending).total_seconds())
            ms = round(elapsed * 1000)
            day.add("frt_count")
            day.add("frt_ms_sum", ms)
            day.add(bucket_for(elapsed))
            conv[_PENDING] = None
            responder = author if author in ("ai", "human") else "system"
            responses[(e.stream_id, e.position)] = (
                e.stream_id,
                e.position,
                tenant_id,
                on,
                responder,
                ms,
            )
            if author == "ai":
                conv[_REPLY_POSITION], conv[_REPLY_MS] = e.position, ms
    elif t == "OutboundMessageFailed":
        day.add("failed_outbound")
    elif t == "HandoffRequested":
        day.add("handoffs")
        if conv[_HANDOFF_DAY] != on:
            day.add("handed_off")
            conv[_HANDOFF_DAY] = on
        conv[_HUMAN_IN] = True
        if e.data.get("reason") == LLM_FAILURE:
            day.add("llm_failures")
            if reply_day is not None:  # the generic answer, recorded as the AI's reply
                replied = day_for(tenant_id, reply_day)
                replied.add("ai_replies", -1)
                replied.add("system_messages")
                position = conv[_REPLY_POSITION]
                if position is not None:
                    responses[(e.stream_id, position)] = (
                        e.stream_id,
                        position,
                        tenant_id,
                        reply_day,
                        "system",
                        conv[_REPLY_MS],
                    )
    elif t == "HandoffAccepted":
        day.add("takeovers")
        conv[_HUMAN_IN] = conv[_ASSIGNED] = True
    elif t == "ConversationAssigned" or (t == "ConversationTransferred" and e.data.get("to_user")):
        if not conv[_ASSIGNED]:
            day.add("takeovers")
        conv[_HUMAN_IN] = conv[_ASSIGNED] = True
    elif t in ("ConversationTransferred", "ReturnedToQueue", "ReturnedToAI"):
        conv[_ASSIGNED] = False
    elif t == "ConversationClosed":
        day.add("resolved")
        conv[_ASSIGNED] = False
        opened: datetime | None = conv[_OPENED]
        if opened is not None:
            elapsed = max(0.0, (parse_time(e.occurred_at) - opened).total_seconds())
            day.add("resolution_ms_sum", round(elapsed * 1000))
        if conv[_AI_IN]:
            day.add("ai_closed")
            if not conv[_HUMAN_IN]:
                day.add("ai_resolved")
        conv[_PENDING] = None
    elif t == "ConversationReopened":
        day.add("reopened")
        conv[_OPENED] = parse_time(e.occurred_at)
        conv[_AI_IN] = conv[_HUMAN_IN] = False

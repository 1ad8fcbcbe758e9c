"""Projection folds on hand-made envelopes: no database, no broker."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from urbana.application.envelope import Envelope
from urbana.projections.apply import fresh_events
from urbana.projections.base import Write
from urbana.projections.conversation_events import advance
from urbana.projections.conversation_tables import (
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    NOTE_COLUMNS,
)
from urbana.projections.conversation_view import ConversationView
from urbana.projections.kpis import COUNTERS, DAILY_COLUMNS, Kpis, bucket_for, usage_figures
from urbana.projections.lead_pipeline import ACTIVITY_COLUMNS, OWN_COLUMNS, LeadPipeline
from urbana.projections.schema import FLOOR
from urbana.projections.team import ASSIGNMENT_COLUMNS, Team
from urbana.projections.team import OWN_COLUMNS as TEAM_COLUMNS
from urbana.projections.workspace import CANNED_COLUMNS, QUEUE_COLUMNS, Workspace

TENANT = str(uuid4())
CONV = str(uuid4())
LEAD = str(uuid4())


class Events:
    """Envelopes of one conversation, with increasing positions and clock."""

    def __init__(self) -> None:
        self.position = 0
        self.minute: float = 0

    def __call__(
        self,
        type_: str,
        aggregate: str = "Conversation",
        stream: str = CONV,
        minute: float | None = None,
        **data: Any,
    ) -> Envelope:
        self.position += 1
        if minute is not None:
            self.minute = minute
        seconds = round(self.minute * 60)
        hh, mm, ss = 10 + seconds // 3600, seconds // 60 % 60, seconds % 60
        stamp = f"2025-03-01T{hh:02d}:{mm:02d}:{ss:02d}+00:00"
        return Envelope(
            event_id=str(uuid4()),
            type=type_,
            aggregate=aggregate,
            schema_version=1,
            stream_id=stream,
            stream_version=self.position,
            position=self.position,
            tenant_id=TENANT,
            occurred_at=stamp,
            data=data,
            encrypted={"key_id": LEAD, "fields": ["text"], "ciphertext": "c2VhbGVk"},
        )


def rows_of(write: Write, columns: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
    names = [c for c, _ in columns]
    assert write.columns == columns
    return [dict(zip(names, values, strict=True)) for values in write.rows]


def conversation_after(events: list[Envelope]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    writes = ConversationView().fold(events, {})
    conv = rows_of(writes[0], CONVERSATION_COLUMNS)[0]
    messages = (
        {m["msg_key"]: m for m in rows_of(writes[1], MESSAGE_COLUMNS)} if len(writes) > 1 else {}
    )
    return conv, messages


def started(e: Events) -> Envelope:
    return e("ConversationStarted", tenant_id=TENANT, channel="cloud", lead_id=LEAD)


def received(e: Events, seq: int, **kw: Any) -> Envelope:
    return e(
        "MessageReceived", seq=seq, kind="text", lead_id=LEAD, provider_message_id=f"w{seq}", **kw
    )


def queued(e: Events, oid: str, author: str, **kw: Any) -> Envelope:
    return e("OutboundMessageQueued", outbound_id=oid, author=author, lead_id=LEAD, **kw)


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        ("queued", "sent", "sent"),
        ("sent", "read", "read"),
        ("read", "delivered", "read"),
        ("delivered", "sent", "delivered"),
        ("read", "failed", "read"),
        ("delivered", "failed", "failed"),
        ("failed", "read", "failed"),
        ("queued", "cancelled", "cancelled"),
        ("sent", "cancelled", "sent"),
        ("cancelled", "sent", "cancelled"),
    ],
)
def test_delivery_status_only_moves_forward(current: str, new: str, expected: str) -> None:
    assert advance(current, new) == expected


def test_late_delivered_does_not_undo_read() -> None:
    e = Events()
    _, messages = conversation_after(
        [
            started(e),
            received(e, 1),
            queued(e, "o1", "ai"),
            e("OutboundMessageSent", outbound_id="o1", provider_message_id="wamid.o1"),
            e("MessageRead", outbound_id="o1", at="2025-03-01T10:05:00+00:00"),
            e("MessageDelivered", outbound_id="o1", at="2025-03-01T10:04:00+00:00"),
        ]
    )
    out = messages["out:o1"]
    assert (out["status"], out["provider_message_id"]) == ("read", "wamid.o1")
    assert out["read_at"] == "2025-03-01T10:05:00+00:00"


def test_a_failed_message_shows_its_error_until_it_is_retried_and_sent() -> None:
    e = Events()
    events = [
        started(e),
        received(e, 1),
        queued(e, "o1", "ai"),
        e("OutboundSendAttempted", outbound_id="o1", attempt=1, at="2025-03-01T10:00:00+00:00"),
        e("OutboundMessageFailed", outbound_id="o1", reason="gave up: HTTP 500", code="131000"),
    ]
    _, messages = conversation_after(events)
    assert (messages["out:o1"]["status"], messages["out:o1"]["error"]) == (
        "failed",
        "131000: gave up: HTTP 500",
    )
    events.append(e("OutboundMessageRetried", outbound_id="o1", by="cli", previous_reason="x"))
    _, messages = conversation_after(events)
    assert (messages["out:o1"]["status"], messages["out:o1"]["error"]) == ("queued", None)
    events.append(e("OutboundMessageSent", outbound_id="o1", provider_message_id="wamid.o1"))
    _, messages = conversation_after(events)
    assert messages["out:o1"]["status"] == "sent"


def test_unread_counts_inbound_since_the_last_ai_or_human_reply() -> None:
    e = Events()
    conv, _ = conversation_after(
        [started(e), received(e, 1), received(e, 2), queued(e, "o1", "ai"), received(e, 3)]
    )
    assert conv["unread"] == 1
    e2 = Events()
    conv, _ = conversation_after(
        [started(e2), received(e2, 1), queued(e2, "o1", "system"), received(e2, 2)]
    )
    assert conv["unread"] == 2  # a system notice is not an answer
    e3 = Events()
    conv, _ = conversation_after(
        [started(e3), received(e3, 1), e3("ConversationClosed", by="x", resolution="r")]
    )
    assert (conv["unread"], conv["status"]) == (0, "closed")


def test_handoff_flow_sets_status_assignee_and_reason() -> None:
    e = Events()
    history = [
        started(e),
        received(e, 1),
        e("HandoffRequested", reason="angry", summary=None, lead_id=LEAD),
    ]
    conv, _ = conversation_after(history)
    assert (conv["status"], conv["handoff_reason"], conv["handoffs"]) == (
        "waiting_human",
        "angry",
        1,
    )
    assert conv["summary_sealed"] is not None
    conv, _ = conversation_after([*history, e("HandoffAccepted", attendant="ana")])
    assert (conv["status"], conv["assignee"]) == ("human", "ana")
    conv, _ = conversation_after(
        [*history, e("HandoffAccepted", attendant="ana"), e("ReturnedToAI", answered_seq=1)]
    )
    assert (conv["status"], conv["assignee"], conv["handoff_reason"]) == ("ai", None, None)


def test_assignment_transfer_and_the_inactivity_rule_show_status_and_assignee() -> None:
    e = Events()
    history = [
        started(e),
        received(e, 1),
        e("HandoffRequested", reason="angry", summary=None, lead_id=LEAD),
        e("ConversationAssigned", assignee="ana", by=None, queue="q-sac"),
    ]
    conv, _ = conversation_after(history)
    assert (conv["status"], conv["assignee"]) == ("human", "ana")
    history.append(
        e("ConversationTransferred", to_user="bia", to_queue=None, by="ana", note_id=None)
    )
    conv, _ = conversation_after(history)
    assert (conv["status"], conv["assignee"]) == ("human", "bia")
    history.append(e("ReturnedToQueue", queue="q-sac", reason="inactivity"))
    conv, _ = conversation_after(history)
    assert (conv["status"], conv["assignee"]) == ("waiting_human", None)
    history.append(e("ConversationAssigned", assignee="cris", by="sup", queue="q-sac"))
    history.append(
        e("ConversationTransferred", to_user=None, to_queue="q-x", by="cris", note_id=None)
    )
    conv, _ = conversation_after(history)
    assert (conv["status"], conv["assignee"]) == ("waiting_human", None)


def test_the_conversation_view_subscribes_to_the_assignment_events() -> None:
    handled = ConversationView.handles
    for name in ("ConversationAssigned", "ConversationTransferred", "ReturnedToQueue"):
        assert "Conversation." + name in handled


def test_messages_keep_the_sealed_blob_not_the_text() -> None:
    e = Events()
    _, messages = conversation_after([started(e), received(e, 1)])
    assert (
        messages["in:1"]["sealed"]
        == f'{{"key_id":"{LEAD}","fields":["text"],"ciphertext":"c2VhbGVk"}}'
    )
    assert (messages["in:1"]["direction"], messages["in:1"]["author"]) == ("in", "lead")


def test_events_of_an_unseen_conversation_are_ignored() -> None:
    e = Events()
    assert ConversationView().fold([received(e, 1)], {}) == []


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [
        (0, "frt_lt_1m"),
        (59.9, "frt_lt_1m"),
        (60, "frt_lt_5m"),
        (899, "frt_lt_15m"),
        (3599, "frt_lt_1h"),
        (3600, "frt_lt_4h"),
        (14400, "frt_ge_4h"),
        (10**7, "frt_ge_4h"),
    ],
)
def test_first_response_buckets(seconds: float, bucket: str) -> None:
    assert bucket_for(seconds) == bucket


def kpis_after(events: list[Envelope]) -> dict[str, Any]:
    writes = Kpis().fold(events, {})
    (day,) = rows_of(writes[0], DAILY_COLUMNS)
    return day


def test_first_response_time_runs_from_the_first_inbound_of_a_burst() -> None:
    e = Events()
    day = kpis_after(
        [
            started(e),
            received(e, 1, minute=0),
            received(e, 2, minute=3),  # same burst: does not restart the clock
            queued(e, "o1", "ai", minute=7),  # 7 minutes after the first inbound
            queued(e, "o2", "system", minute=8),  # not a new response
            received(e, 3, minute=20),
            queued(e, "o3", "human", minute=20.5),
            received(e, 4, minute=30),
            e("ConversationClosed", by="ana", resolution="resolved", minute=31),  # unanswered
        ]
    )
    assert day["frt_count"] == 2
    assert (day["frt_lt_15m"], day["frt_lt_1m"]) == (1, 1)
    assert day["frt_ms_sum"] == 7 * 60_000 + 30_000
    assert (day["inbound"], day["human_replies"], day["system_messages"], day["resolved"]) == (
        4,
        1,
        1,
        1,
    )


def test_an_assignment_counts_as_a_takeover_and_a_human_in_the_conversation() -> None:
    e = Events()
    day = kpis_after(
        [
            started(e),
            received(e, 1, minute=0),
            e("HandoffRequested", reason="explicit_request", summary=None, lead_id=LEAD),
            e("ConversationAssigned", assignee="ana", by=None, queue=None, minute=2),
            e("ConversationClosed", by="ana", resolution="resolved", minute=5),
        ]
    )
    assert (day["takeovers"], day["resolved"], day["ai_resolved"]) == (1, 1, 0)


def test_usage_is_read_leniently() -> None:
    assert usage_figures({"tokens_in": 10, "tokens_out": 4, "cost_usd": 0.25}) == (
        10,
        4,
        Decimal("0.25"),
    )
    assert usage_figures({"prompt_tokens": 3, "completion_tokens": "2", "cost": "1e-3"}) == (
        3,
        2,
        Decimal("0.001"),
    )
    assert usage_figures({"input_tokens": None, "cost_usd": "n/a"}) == (0, 0, Decimal(0))
    assert usage_figures(None) == (0, 0, Decimal(0))


def test_kpi_tokens_and_cost_add_up_exactly() -> None:
    e = Events()
    history = [started(e), received(e, 1)]
    for i in range(3):
        history.append(
            e(
                "AIReplyGenerated",
                reply_to_seq=1,
                intent="x",
                confidence=0.9,
                lead_id=LEAD,
                usage={"tokens_in": 100 + i, "tokens_out": 10, "cost_usd": 0.1},
            )
        )
    day = kpis_after(history)
    assert (day["ai_replies"], day["tokens_in"], day["tokens_out"]) == (3, 303, 30)
    assert day["cost_usd"] == Decimal("0.3")
    assert set(COUNTERS) <= set(day)


def test_lead_activity_comes_from_its_conversations_and_merges_commutatively() -> None:
    e = Events()
    writes = LeadPipeline().fold(
        [
            started(e),
            received(e, 1, minute=1),
            e("LeadCreated", aggregate="Lead", stream=LEAD, tenant_id=TENANT, minute=1),
            e(
                "LeadScored",
                aggregate="Lead",
                stream=LEAD,
                delta=20,
                score=20,
                reason="x",
                minute=2,
            ),
            e(
                "LeadStageChanged",
                aggregate="Lead",
                stream=LEAD,
                from_stage="new",
                to_stage="engaged",
                reason="x",
            ),
            received(e, 2, minute=5),
        ],
        {},
    )
    own = rows_of(writes[0], OWN_COLUMNS)[0]
    activity = rows_of(writes[1], ACTIVITY_COLUMNS)[0]
    assert (own["score"], own["stage"], own["tenant_id"]) == (20, "engaged", TENANT)
    assert (activity["id"], activity["conversations"], activity["messages_in"]) == (LEAD, 1, 2)
    assert activity["last_activity_at"] == "2025-03-01T10:05:00+00:00"
    assert "GREATEST(t.last_activity_at" in writes[1].sql
    assert "t.messages_in + EXCLUDED.messages_in" in writes[1].sql


def test_tracking_skips_redeliveries_and_what_a_replay_covered() -> None:
    e = Events()
    batch = [e("MessageRead", outbound_id="x", at="t") for _ in range(6)]  # positions 1..6
    p0 = [batch[0], batch[2], batch[0], batch[4]]  # 1, 3, redelivered 1, 5
    p1 = [batch[1], batch[3], batch[5]]  # 2, 4, 6
    fresh, positions, skipped = fresh_events({0: p0, 1: p1}, {FLOOR: 2, 1: 4})
    assert [f.position for f in fresh] == [3, 5, 6]
    assert positions == {0: 5, 1: 6}
    assert skipped == 4


def test_queues_assignments_and_transfers_move_ownership() -> None:
    e = Events()
    history = [
        started(e),
        received(e, 1, sent_at="2025-03-01T09:59:00+00:00"),
        e("HandoffRequested", reason="pricing", summary=None, lead_id=LEAD, queue="vendas"),
    ]
    conv, _ = conversation_after(history)
    assert (conv["status"], conv["queue"], conv["assignee"]) == ("waiting_human", "vendas", None)
    assert conv["waiting_since"] == history[-1].occurred_at
    assert conv["last_inbound_at"] == "2025-03-01T09:59:00+00:00"
    history.append(e("ConversationAssigned", assignee="u1", by=None, queue=None))
    conv, _ = conversation_after(history)
    assert (conv["status"], conv["assignee"], conv["queue"]) == ("human", "u1", "vendas")
    assert (conv["waiting_since"], conv["assigned_at"]) == (None, history[-1].occurred_at)
    history.append(e("ConversationTransferred", to_user=None, to_queue="suporte", by="u1"))
    conv, _ = conversation_after(history)
    assert (conv["status"], conv["assignee"], conv["queue"]) == ("waiting_human", None, "suporte")
    assert conv["waiting_since"] == history[-1].occurred_at
    history.append(e("ConversationTransferred", to_user="u2", to_queue=None, by="u9"))
    conv, _ = conversation_after(history)
    assert (conv["status"], conv["assignee"], conv["queue"]) == ("human", "u2", "suporte")
    history.append(e("ReturnedToQueue", queue=None, reason="inactivity"))
    conv, _ = conversation_after(history)
    assert (conv["status"], conv["assignee"], conv["queue"]) == ("waiting_human", None, "suporte")
    assert conv["handoff_reason"] == "pricing"
    history.append(e("ConversationClosed", by="u2", resolution="resolved"))
    conv, _ = conversation_after(history)
    assert (conv["status"], conv["assignee"], conv["queue"], conv["waiting_since"]) == (
        "closed",
        None,
        None,
        None,
    )
    assert conv["last_position"] == history[-1].position


def test_labels_notes_and_ai_intents() -> None:
    e = Events()
    history = [
        started(e),
        received(e, 1),
        e("LabelsChanged", added=["vip", "b"], removed=[], by="u1"),
        e("LabelsChanged", added=["c"], removed=["b", "absent"], by="u1"),
        e("NoteAdded", note_id="n1", author="u1", lead_id=LEAD),
        e("AIReplyGenerated", reply_to_seq=1, intent="pricing", confidence=0.7, lead_id=LEAD),
        queued(e, "o1", "ai"),
        queued(e, "o2", "system"),
    ]
    writes = ConversationView().fold(history, {})
    conv = rows_of(writes[0], CONVERSATION_COLUMNS)[0]
    messages = {m["msg_key"]: m for m in rows_of(writes[1], MESSAGE_COLUMNS)}
    (note,) = rows_of(writes[2], NOTE_COLUMNS)
    assert conv["labels"] == ["c", "vip"]
    assert (conv["last_intent"], conv["last_confidence"]) == ("pricing", 0.7)
    assert (messages["out:o1"]["intent"], messages["out:o1"]["confidence"]) == ("pricing", 0.7)
    assert (messages["out:o2"]["intent"], messages["out:o2"]["confidence"]) == (None, None)
    assert (note["note_id"], note["author"], note["tenant_id"]) == ("n1", "u1", TENANT)
    assert note["sealed"] is not None  # the text stays sealed
    assert conv["contact_sealed"] is None  # this inbound named no contact


def test_team_rows_from_user_streams_and_assignments() -> None:
    e = Events()
    user, other = str(uuid4()), str(uuid4())
    writes = Team().fold(
        [
            e("UserInvited", "User", user, email="a@x", name="Ana", role="attendant"),
            e("UserQueuesChanged", "User", user, queues=["b", "a", "b"]),
            e("AvailabilityChanged", "User", user, availability="online"),
            e("HandoffAccepted", attendant="business_phone"),
            e("ConversationAssigned", minute=5, assignee=user, by=None, queue=None),
            e("ConversationTransferred", minute=3, to_user=other, to_queue=None, by=user),
            e("UserDisabled", "User", user, by=other),
        ],
        {},
    )
    (own,) = rows_of(writes[0], TEAM_COLUMNS)
    assert (own["role"], own["queues"], own["disabled"], own["availability"]) == (
        "attendant",
        ["a", "b"],
        True,
        "offline",
    )
    assert "password_hash" not in own
    assigned = {r["id"]: r for r in rows_of(writes[1], ASSIGNMENT_COLUMNS)}
    assert set(assigned) == {user, other}  # the business phone is no user
    assert assigned[user]["last_assigned_at"] == "2025-03-01T10:05:00+00:00"


def test_takeovers_count_a_conversation_nobody_held() -> None:
    e = Events()
    day = kpis_after(
        [
            started(e),
            received(e, 1),
            e("ConversationAssigned", assignee="u1", by=None, queue=None),
            e("ConversationAssigned", assignee="u2", by="sup", queue=None),  # reassigned
            e("ConversationTransferred", to_user="u3", to_queue=None, by="u2"),
            e("ReturnedToQueue", queue="q", reason="inactivity"),
            e("ConversationAssigned", assignee="u1", by=None, queue=None),
        ]
    )
    assert day["takeovers"] == 2


def test_workspace_keeps_the_last_word_per_queue_and_shortcut() -> None:
    e = Events()
    writes = Workspace().fold(
        [
            e("QueueCreated", "Tenant", TENANT, queue_id="q1", name="Vendas", intents=["b", "a"]),
            e("QueueChanged", "Tenant", TENANT, queue_id="q1", name=None, intents=["c"]),
            e("CannedResponseSaved", "Tenant", TENANT, shortcut="/a", text="um"),
            e("CannedResponseSaved", "Tenant", TENANT, shortcut="/b", text="dois"),
            e("CannedResponseRemoved", "Tenant", TENANT, shortcut="/a"),
            e("CannedResponseSaved", "Tenant", TENANT, shortcut="/b", text="três"),
        ],
        {},
    )
    queues, saved, removed = writes
    (queue,) = rows_of(queues, QUEUE_COLUMNS)
    assert (queue["queue_id"], queue["name"], queue["intents"]) == ("q1", "Vendas", ["c"])
    assert [(r["shortcut"], r["text"]) for r in rows_of(saved, CANNED_COLUMNS)] == [("/b", "três")]
    assert removed.rows == [(TENANT, "/a")]
    assert removed.sql.startswith("DELETE")

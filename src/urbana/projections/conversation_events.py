"""What each event does to the conversation view's rows (see `conversation_view`).

Unread = inbound messages since the last AI or human outbound (system notices do
not count as an answer); closing a conversation clears it.
Delivery status only moves forward: queued < sent < delivered < read; failed and
cancelled are final (failed is refused after read, cancelled only leaves queued),
except that `OutboundMessageRetried` puts a failed message back to queued. A failed
message's `error` is "<code>: <reason>" (the gateway's code when it gave one).

Ownership. `HandoffAccepted`, `ConversationAssigned` and a transfer to a user give the
conversation an assignee and make it human; `HandoffRequested`, `ReturnedToQueue` and a
transfer to a queue leave it waiting in a queue (`waiting_since` is when it started
waiting) with no assignee; returning to the AI and closing clear both.
"""

from __future__ import annotations

from typing import Any

import orjson

from urbana.application.envelope import Envelope
from urbana.projections.base import Row, parse_time
from urbana.projections.conversation_tables import (
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    NOTE_COLUMNS,
    C,
    M,
    N,
)

RANK = {"queued": 0, "sent": 1, "delivered": 2, "read": 3}
FINAL = frozenset({"failed", "cancelled"})


def advance(current: str, new: str) -> str:
    """The delivery status after `new` arrives: forward only, final states stay."""
    if current in FINAL or current == new:
        return current
    if new == "failed":
        return current if current == "read" else new
    if new == "cancelled":
        return new if current == "queued" else current
    if current not in RANK or new not in RANK:
        return current
    return new if RANK[new] > RANK[current] else current


STATUS_EVENTS = frozenset(
    {
        "OutboundMessageSent",
        "OutboundMessageFailed",
        "OutboundMessageRetried",
        "OutboundMessageCancelled",
        "MessageDelivered",
        "MessageRead",
    }
)


def _sealed(envelope: Envelope) -> str | None:
    return orjson.dumps(envelope.encrypted).decode() if envelope.encrypted else None


def new_conversation(e: Envelope) -> list[Any]:
    row: list[Any] = [None] * len(CONVERSATION_COLUMNS)
    row[C["id"]] = e.stream_id
    row[C["tenant_id"]] = e.tenant_id or e.data.get("tenant_id")
    row[C["lead_id"]] = e.data.get("lead_id")
    row[C["channel"]] = e.data.get("channel")
    row[C["status"]] = "ai"
    row[C["labels"]] = []
    for counter in ("unread", "handoffs", "inbound_count", "outbound_count"):
        row[C[counter]] = 0
    row[C["started_at"]] = e.occurred_at
    row[C["activity_at"]] = e.occurred_at
    return row


def _new_message(conv: list[Any], e: Envelope, key: str) -> list[Any]:
    row: list[Any] = [None] * len(MESSAGE_COLUMNS)
    row[M["conversation_id"]] = e.stream_id
    row[M["msg_key"]] = key
    row[M["tenant_id"]] = conv[C["tenant_id"]]
    row[M["sealed"]] = _sealed(e)
    row[M["at"]] = e.occurred_at
    row[M["position"]] = e.position
    row[M["updated_at"]] = e.occurred_at
    return row


def new_note(conv: list[Any], e: Envelope) -> Row:
    row: list[Any] = [None] * len(NOTE_COLUMNS)
    row[N["conversation_id"]] = e.stream_id
    row[N["note_id"]] = str(e.data["note_id"])
    row[N["tenant_id"]] = conv[C["tenant_id"]]
    row[N["author"]] = e.data.get("author")
    row[N["sealed"]] = _sealed(e)
    row[N["at"]] = e.occurred_at
    row[N["position"]] = e.position
    return tuple(row)


def _last_message(conv: list[Any], e: Envelope, direction: str, author: str, kind: str) -> None:
    conv[C["last_message_at"]] = e.occurred_at
    conv[C["activity_at"]] = e.occurred_at
    conv[C["last_message_direction"]] = direction
    conv[C["last_message_author"]] = author
    conv[C["last_message_kind"]] = kind
    conv[C["last_message_sealed"]] = _sealed(e)


def _later(current: str | None, new: str | None) -> str | None:
    """The later of two timestamps written in different forms (ISO, PostgreSQL text)."""
    if new is None:
        return current
    if current is None or parse_time(str(new)) > parse_time(str(current)):
        return str(new)
    return current


def _assign(conv: list[Any], e: Envelope, assignee: str | None, queue: str | None) -> None:
    conv[C["status"]] = "human"
    conv[C["assignee"]] = assignee
    conv[C["assigned_at"]] = e.occurred_at
    conv[C["waiting_since"]] = None
    if queue:
        conv[C["queue"]] = queue


def _wait(conv: list[Any], e: Envelope, queue: str | None) -> None:
    conv[C["status"]] = "waiting_human"
    conv[C["assignee"]] = None
    conv[C["assigned_at"]] = None
    conv[C["waiting_since"]] = e.occurred_at
    if queue:
        conv[C["queue"]] = queue


def _release(conv: list[Any]) -> None:
    """Nobody owns it and it waits in no queue (back to the AI, or closed)."""
    for column in ("assignee", "assigned_at", "waiting_since", "queue", "handoff_reason"):
        conv[C[column]] = None


def apply_conversation(
    conv: list[Any], e: Envelope, messages: dict[tuple[str, str], list[Any]]
) -> tuple[str, str] | None:
    """Apply one event to the conversation row; the key of the message it touched."""
    t, d = e.type, e.data
    if t == "MessageReceived":
        key = f"in:{d['seq']}"
        msg = _new_message(conv, e, key)
        msg[M["seq"]] = d["seq"]
        msg[M["direction"]] = "in"
        msg[M["author"]] = "lead"
        msg[M["kind"]] = d.get("kind")
        msg[M["status"]] = "received"
        msg[M["provider_message_id"]] = d.get("provider_message_id")
        msg[M["media_mime"]] = d.get("media_mime")
        msg[M["reply_to"]] = d.get("reply_to")
        msg[M["sent_at"]] = d.get("sent_at")
        messages[(e.stream_id, key)] = msg
        if conv[C["status"]] == "closed":
            conv[C["status"]] = "ai"
            conv[C["closed_at"]] = None
        conv[C["unread"]] += 1
        conv[C["inbound_count"]] += 1
        conv[C["last_inbound_at"]] = _later(conv[C["last_inbound_at"]], d.get("sent_at"))
        if e.encrypted and "contact_name" in e.encrypted.get("fields", ()):
            conv[C["contact_sealed"]] = _sealed(e)
        _last_message(conv, e, "in", "lead", d.get("kind") or "text")
        return (e.stream_id, key)
    if t == "AIReplyGenerated":
        # Recorded just before the reply's OutboundMessageQueued (same transaction),
        # which takes these two into its message row.
        conv[C["last_intent"]] = d.get("intent")
        conv[C["last_confidence"]] = d.get("confidence")
        conv[C["last_passages"]] = orjson.dumps(d.get("passages") or []).decode()
        return None
    if t == "OutboundMessageQueued":
        key = "out:" + d["outbound_id"]
        author = d.get("author") or "system"
        external = d.get("external_provider_id")
        msg = _new_message(conv, e, key)
        msg[M["outbound_id"]] = d["outbound_id"]
        msg[M["direction"]] = "out"
        msg[M["author"]] = author
        msg[M["attendant"]] = d.get("attendant")
        msg[M["kind"]] = "text"
        msg[M["status"]] = "sent" if external else "queued"
        msg[M["provider_message_id"]] = external
        msg[M["sent_at"]] = e.occurred_at if external else None
        if author == "ai":
            msg[M["intent"]] = conv[C["last_intent"]]
            msg[M["confidence"]] = conv[C["last_confidence"]]
            msg[M["passages"]] = conv[C["last_passages"]]
        messages[(e.stream_id, key)] = msg
        conv[C["outbound_count"]] += 1
        if author in ("ai", "human"):
            conv[C["unread"]] = 0
        _last_message(conv, e, "out", author, "text")
        return (e.stream_id, key)
    if t in STATUS_EVENTS:
        key = "out:" + d["outbound_id"]
        msg_or_none = messages.get((e.stream_id, key))
        if msg_or_none is None:
            return None
        _apply_status(msg_or_none, e)
        return (e.stream_id, key)
    if t == "HandoffRequested":
        _wait(conv, e, d.get("queue"))
        conv[C["handoff_reason"]] = d.get("reason")
        conv[C["summary_sealed"]] = _sealed(e)
        conv[C["handoffs"]] += 1
    elif t == "HandoffAccepted":
        _assign(conv, e, d.get("attendant"), None)
    elif t == "ConversationAssigned":
        _assign(conv, e, d.get("assignee"), d.get("queue"))
    elif t == "ConversationTransferred":
        if d.get("to_user"):
            _assign(conv, e, d["to_user"], d.get("to_queue"))
        else:
            _wait(conv, e, d.get("to_queue"))
    elif t == "ReturnedToQueue":
        _wait(conv, e, d.get("queue"))
    elif t == "LabelsChanged":
        removed = set(d.get("removed") or ())
        labels = set(conv[C["labels"]] or ()) | set(d.get("added") or ())
        conv[C["labels"]] = sorted(labels - removed)
    elif t == "ReturnedToAI":
        conv[C["status"]] = "ai"
        _release(conv)
    elif t == "ConversationClosed":
        conv[C["status"]] = "closed"
        _release(conv)
        conv[C["unread"]] = 0
        conv[C["closed_at"]] = e.occurred_at
    elif t == "ConversationReopened":
        conv[C["status"]] = "ai"
        conv[C["closed_at"]] = None
    return None


def _apply_status(msg: list[Any], e: Envelope) -> None:
    t, d = e.type, e.data
    if t == "OutboundMessageRetried":
        # The one way out of "failed": queued again by an operator, the error cleared.
        if msg[M["status"]] == "failed":
            msg[M["status"]] = "queued"
            msg[M["error"]] = None
            msg[M["updated_at"]] = e.occurred_at
        return
    status = {
        "OutboundMessageSent": "sent",
        "OutboundMessageFailed": "failed",
        "OutboundMessageCancelled": "cancelled",
        "MessageDelivered": "delivered",
        "MessageRead": "read",
    }[t]
    current = msg[M["status"]]
    new = advance(current, status)
    msg[M["updated_at"]] = e.occurred_at
    if new == current:
        return
    msg[M["status"]] = new
    if status == "sent":
        msg[M["provider_message_id"]] = d.get("provider_message_id")
        msg[M["sent_at"]] = e.occurred_at
    elif status == "delivered":
        msg[M["delivered_at"]] = d.get("at") or e.occurred_at
    elif status == "read":
        msg[M["read_at"]] = d.get("at") or e.occurred_at
        if msg[M["delivered_at"]] is None:
            msg[M["delivered_at"]] = d.get("at") or e.occurred_at
    elif status in ("failed", "cancelled"):
        code = d.get("code")
        reason = d.get("reason") or status
        msg[M["error"]] = f"{code}: {reason}" if code else reason

"""Conversation view: what attendants see.

See docs/architecture.md, "Read models and replay".

`conversations`: one row per conversation: status, assignee, queue, labels, the
contact's name, since when it waits for a human, the lead's last inbound time (the
24-hour window), the AI's last intent and confidence, the last message, unread count,
handoff reason and summary. `messages`: every inbound and outbound message with
direction, author, delivery status and, for an AI reply, its intent and confidence.
`notes`: the attendants' private notes (never sent to the lead).

Personal text is never stored in clear here. The row keeps the envelope's sealed
blob (`encrypted`: subject key id, field names, ciphertext) as jsonb, and
`urbana.projections.queries` decrypts it when serving. Erasing a lead destroys its
key (crypto-shredding), so its text in these tables becomes unreadable at once, with
no rewrite of the read model: queries then serve `ERASED`.

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
`last_position` is the global position of the last event applied to a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import orjson

from urbana.application.envelope import Envelope
from urbana.projections.base import Load, Row, Write, parse_time, upsert_sql

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


CONVERSATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "uuid"),
    ("tenant_id", "uuid"),
    ("lead_id", "uuid"),
    ("channel", "text"),
    ("status", "text"),
    ("assignee", "text"),
    ("queue", "text"),
    ("labels", "text[]"),
    ("contact_sealed", "jsonb"),  # the latest MessageReceived that named the contact
    ("waiting_since", "timestamptz"),
    ("assigned_at", "timestamptz"),
    ("last_inbound_at", "timestamptz"),  # the lead's latest sent_at: the 24-hour window
    ("last_intent", "text"),
    ("last_confidence", "double precision"),
    ("last_message_at", "timestamptz"),
    ("last_message_direction", "text"),
    ("last_message_author", "text"),
    ("last_message_kind", "text"),
    ("last_message_sealed", "jsonb"),
    ("activity_at", "timestamptz"),  # last message, or the start: the list's sort key
    ("unread", "int"),
    ("handoff_reason", "text"),
    ("summary_sealed", "jsonb"),
    ("handoffs", "int"),
    ("inbound_count", "int"),
    ("outbound_count", "int"),
    ("started_at", "timestamptz"),
    ("closed_at", "timestamptz"),
    ("updated_at", "timestamptz"),
    ("last_position", "bigint"),
)

MESSAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("conversation_id", "uuid"),
    ("msg_key", "text"),  # "in:<seq>" or "out:<outbound id>"
    ("tenant_id", "uuid"),
    ("seq", "int"),
    ("outbound_id", "text"),
    ("direction", "text"),  # in | out
    ("author", "text"),  # lead | ai | human | system
    ("attendant", "text"),
    ("kind", "text"),
    # received (inbound) | queued | sent | delivered | read | failed | cancelled
    ("status", "text"),
    ("provider_message_id", "text"),
    ("error", "text"),
    ("sealed", "jsonb"),
    ("media_mime", "text"),
    ("reply_to", "text"),
    ("intent", "text"),  # an AI reply's: from its AIReplyGenerated
    ("confidence", "double precision"),
    ("sent_at", "timestamptz"),
    ("delivered_at", "timestamptz"),
    ("read_at", "timestamptz"),
    ("at", "timestamptz"),
    ("position", "bigint"),  # the event that created it: the thread's order
    ("last_position", "bigint"),
    ("updated_at", "timestamptz"),
)

NOTE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("conversation_id", "uuid"),
    ("note_id", "text"),
    ("tenant_id", "uuid"),
    ("author", "text"),
    ("sealed", "jsonb"),
    ("at", "timestamptz"),
    ("position", "bigint"),
)


def _select(columns: Sequence[tuple[str, str]]) -> str:
    """Select list that reads timestamps and jsonb back as text (written back unchanged)."""
    return ", ".join(
        f"{c}::text" if kind in ("timestamptz", "jsonb", "uuid") else c for c, kind in columns
    )


def _sealed(envelope: Envelope) -> str | None:
    return orjson.dumps(envelope.encrypted).decode() if envelope.encrypted else None


def _columns(columns: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{c} {kind}" for c, kind in columns)


_C = {c: i for i, (c, _) in enumerate(CONVERSATION_COLUMNS)}
_M = {c: i for i, (c, _) in enumerate(MESSAGE_COLUMNS)}
_N = {c: i for i, (c, _) in enumerate(NOTE_COLUMNS)}

_CONVERSATION_UPSERT = upsert_sql("conversations", CONVERSATION_COLUMNS, ("id",))
_MESSAGE_UPSERT = upsert_sql("messages", MESSAGE_COLUMNS, ("conversation_id", "msg_key"))
_NOTE_UPSERT = upsert_sql("notes", NOTE_COLUMNS, ("conversation_id", "note_id"))


class ConversationView:
    name: ClassVar[str] = "conversation_view"
    # 2: queue, labels, contact, waiting_since, 24-hour window, intents, notes, positions
    version: ClassVar[int] = 2
    tables: ClassVar[tuple[str, ...]] = ("conversations", "messages", "notes")
    handles: ClassVar[frozenset[str]] = frozenset(
        "Conversation." + t
        for t in (
            "ConversationStarted",
            "MessageReceived",
            "AIReplyGenerated",
            "OutboundMessageQueued",
            "OutboundMessageSent",
            "OutboundMessageFailed",
            "OutboundMessageCancelled",
            "OutboundMessageRetried",
            "MessageDelivered",
            "MessageRead",
            "HandoffRequested",
            "HandoffAccepted",
            "ConversationAssigned",
            "ConversationTransferred",
            "ReturnedToQueue",
            "NoteAdded",
            "LabelsChanged",
            "ReturnedToAI",
            "ConversationClosed",
            "ConversationReopened",
        )
    )

    def ddl(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {{conversations}} ({_columns(CONVERSATION_COLUMNS)}, "
            "CONSTRAINT {conversations}_pkey PRIMARY KEY (id))",
            "CREATE INDEX IF NOT EXISTS {conversations}_tenant_idx "
            "ON {conversations} (tenant_id, activity_at DESC, id DESC)",
            "CREATE INDEX IF NOT EXISTS {conversations}_status_idx "
            "ON {conversations} (tenant_id, status, activity_at DESC, id DESC)",
            "CREATE INDEX IF NOT EXISTS {conversations}_assignee_idx "
            "ON {conversations} (tenant_id, assignee, activity_at DESC, id DESC)",
            "CREATE INDEX IF NOT EXISTS {conversations}_queue_idx "
            "ON {conversations} (tenant_id, waiting_since, id) WHERE status = 'waiting_human'",
            "CREATE INDEX IF NOT EXISTS {conversations}_labels_idx "
            "ON {conversations} USING gin (labels)",
            f"CREATE TABLE IF NOT EXISTS {{messages}} ({_columns(MESSAGE_COLUMNS)}, "
            "CONSTRAINT {messages}_pkey PRIMARY KEY (conversation_id, msg_key))",
            "CREATE INDEX IF NOT EXISTS {messages}_conv_idx "
            "ON {messages} (conversation_id, position)",
            f"CREATE TABLE IF NOT EXISTS {{notes}} ({_columns(NOTE_COLUMNS)}, "
            "CONSTRAINT {notes}_pkey PRIMARY KEY (conversation_id, note_id))",
            "CREATE INDEX IF NOT EXISTS {notes}_conv_idx ON {notes} (conversation_id, position)",
        ]

    def loads(self, envelopes: Sequence[Envelope]) -> list[Load]:
        conversation_ids: dict[str, None] = {}
        message_keys: dict[tuple[str, str], None] = {}
        created: set[str] = set()
        for e in envelopes:
            conversation_ids[e.stream_id] = None
            if e.type == "OutboundMessageQueued":
                created.add(e.stream_id + "out:" + e.data["outbound_id"])
            elif e.type in _STATUS_EVENTS:
                key = "out:" + e.data["outbound_id"]
                if e.stream_id + key not in created:
                    message_keys[(e.stream_id, key)] = None
        loads = [
            Load(
                "conversations",
                f"SELECT {_select(CONVERSATION_COLUMNS)} FROM {{conversations}} "  # noqa: S608
                "WHERE id = ANY(%s::uuid[])",
                (list(conversation_ids),),
            )
        ]
        if message_keys:
            conv_ids, keys = zip(*message_keys, strict=True)
            loads.append(
                Load(
                    "messages",
                    f"SELECT {_select(MESSAGE_COLUMNS)} FROM {{messages}} "  # noqa: S608
                    "WHERE (conversation_id, msg_key) IN "
                    "(SELECT * FROM unnest(%s::uuid[], %s::text[]))",
                    (list(conv_ids), list(keys)),
                )
            )
        return loads

    def fold(self, envelopes: Sequence[Envelope], loaded: dict[str, list[Row]]) -> list[Write]:
        conversations: dict[str, list[Any]] = {
            r[0]: list(r) for r in loaded.get("conversations", [])
        }
        messages: dict[tuple[str, str], list[Any]] = {
            (r[0], r[1]): list(r) for r in loaded.get("messages", [])
        }
        notes: dict[tuple[str, str], Row] = {}
        touched_c: dict[str, None] = {}
        touched_m: dict[tuple[str, str], None] = {}
        for e in envelopes:
            conv = conversations.get(e.stream_id)
            if e.type == "ConversationStarted":
                conv = _new_conversation(e)
                conversations[e.stream_id] = conv
            elif conv is None:
                continue  # its start was never seen: nothing to attach it to
            touched_c[e.stream_id] = None
            if e.type == "NoteAdded":
                note = _note(conv, e)
                notes[(e.stream_id, note[_N["note_id"]])] = note
            key = _apply_conversation(conv, e, messages)
            if key is not None:
                touched_m[key] = None
                messages[key][_M["last_position"]] = e.position
            conv[_C["updated_at"]] = e.occurred_at
            conv[_C["last_position"]] = e.position
        writes: list[Write] = []
        if touched_c:
            rows = [tuple(conversations[c]) for c in touched_c]
            writes.append(Write("conversations", CONVERSATION_COLUMNS, _CONVERSATION_UPSERT, rows))
        if touched_m:
            rows = [tuple(messages[k]) for k in touched_m]
            writes.append(Write("messages", MESSAGE_COLUMNS, _MESSAGE_UPSERT, rows))
        if notes:
            writes.append(Write("notes", NOTE_COLUMNS, _NOTE_UPSERT, list(notes.values())))
        return writes


_STATUS_EVENTS = frozenset(
    {
        "OutboundMessageSent",
        "OutboundMessageFailed",
        "OutboundMessageRetried",
        "OutboundMessageCancelled",
        "MessageDelivered",
        "MessageRead",
    }
)


def _new_conversation(e: Envelope) -> list[Any]:
    row: list[Any] = [None] * len(CONVERSATION_COLUMNS)
    row[_C["id"]] = e.stream_id
    row[_C["tenant_id"]] = e.tenant_id or e.data.get("tenant_id")
    row[_C["lead_id"]] = e.data.get("lead_id")
    row[_C["channel"]] = e.data.get("channel")
    row[_C["status"]] = "ai"
    row[_C["labels"]] = []
    for counter in ("unread", "handoffs", "inbound_count", "outbound_count"):
        row[_C[counter]] = 0
    row[_C["started_at"]] = e.occurred_at
    row[_C["activity_at"]] = e.occurred_at
    return row


def _new_message(conv: list[Any], e: Envelope, key: str) -> list[Any]:
    row: list[Any] = [None] * len(MESSAGE_COLUMNS)
    row[_M["conversation_id"]] = e.stream_id
    row[_M["msg_key"]] = key
    row[_M["tenant_id"]] = conv[_C["tenant_id"]]
    row[_M["sealed"]] = _sealed(e)
    row[_M["at"]] = e.occurred_at
    row[_M["position"]] = e.position
    row[_M["updated_at"]] = e.occurred_at
    return row


def _note(conv: list[Any], e: Envelope) -> Row:
    row: list[Any] = [None] * len(NOTE_COLUMNS)
    row[_N["conversation_id"]] = e.stream_id
    row[_N["note_id"]] = str(e.data["note_id"])
    row[_N["tenant_id"]] = conv[_C["tenant_id"]]
    row[_N["author"]] = e.data.get("author")
    row[_N["sealed"]] = _sealed(e)
    row[_N["at"]] = e.occurred_at
    row[_N["position"]] = e.position
    return tuple(row)


def _last_message(conv: list[Any], e: Envelope, direction: str, author: str, kind: str) -> None:
    conv[_C["last_message_at"]] = e.occurred_at
    conv[_C["activity_at"]] = e.occurred_at
    conv[_C["last_message_direction"]] = direction
    conv[_C["last_message_author"]] = author
    conv[_C["last_message_kind"]] = kind
    conv[_C["last_message_sealed"]] = _sealed(e)


def _later(current: str | None, new: str | None) -> str | None:
    """The later of two timestamps written in different forms (ISO, PostgreSQL text)."""
    if new is None:
        return current
    if current is None or parse_time(str(new)) > parse_time(str(current)):
        return str(new)
    return current


def _assign(conv: list[Any], e: Envelope, assignee: str | None, queue: str | None) -> None:
    conv[_C["status"]] = "human"
    conv[_C["assignee"]] = assignee
    conv[_C["assigned_at"]] = e.occurred_at
    conv[_C["waiting_since"]] = None
    if queue:
        conv[_C["queue"]] = queue


def _wait(conv: list[Any], e: Envelope, queue: str | None) -> None:
    conv[_C["status"]] = "waiting_human"
    conv[_C["assignee"]] = None
    conv[_C["assigned_at"]] = None
    conv[_C["waiting_since"]] = e.occurred_at
    if queue:
        conv[_C["queue"]] = queue


def _release(conv: list[Any]) -> None:
    """Nobody owns it and it waits in no queue (back to the AI, or closed)."""
    for column in ("assignee", "assigned_at", "waiting_since", "queue", "handoff_reason"):
        conv[_C[column]] = None


def _apply_conversation(
    conv: list[Any], e: Envelope, messages: dict[tuple[str, str], list[Any]]
) -> tuple[str, str] | None:
    """Apply one event to the conversation row; the key of the message it touched."""
    t, d = e.type, e.data
    if t == "MessageReceived":
        key = f"in:{d['seq']}"
        msg = _new_message(conv, e, key)
        msg[_M["seq"]] = d["seq"]
        msg[_M["direction"]] = "in"
        msg[_M["author"]] = "lead"
        msg[_M["kind"]] = d.get("kind")
        msg[_M["status"]] = "received"
        msg[_M["provider_message_id"]] = d.get("provider_message_id")
        msg[_M["media_mime"]] = d.get("media_mime")
        msg[_M["reply_to"]] = d.get("reply_to")
        msg[_M["sent_at"]] = d.get("sent_at")
        messages[(e.stream_id, key)] = msg
        if conv[_C["status"]] == "closed":
            conv[_C["status"]] = "ai"
            conv[_C["closed_at"]] = None
        conv[_C["unread"]] += 1
        conv[_C["inbound_count"]] += 1
        conv[_C["last_inbound_at"]] = _later(conv[_C["last_inbound_at"]], d.get("sent_at"))
        if e.encrypted and "contact_name" in e.encrypted.get("fields", ()):
            conv[_C["contact_sealed"]] = _sealed(e)
        _last_message(conv, e, "in", "lead", d.get("kind") or "text")
        return (e.stream_id, key)
    if t == "AIReplyGenerated":
        # Recorded just before the reply's OutboundMessageQueued (same transaction),
        # which takes these two into its message row.
        conv[_C["last_intent"]] = d.get("intent")
        conv[_C["last_confidence"]] = d.get("confidence")
        return None
    if t == "OutboundMessageQueued":
        key = "out:" + d["outbound_id"]
        author = d.get("author") or "system"
        external = d.get("external_provider_id")
        msg = _new_message(conv, e, key)
        msg[_M["outbound_id"]] = d["outbound_id"]
        msg[_M["direction"]] = "out"
        msg[_M["author"]] = author
        msg[_M["attendant"]] = d.get("attendant")
        msg[_M["kind"]] = "text"
        msg[_M["status"]] = "sent" if external else "queued"
        msg[_M["provider_message_id"]] = external
        msg[_M["sent_at"]] = e.occurred_at if external else None
        if author == "ai":
            msg[_M["intent"]] = conv[_C["last_intent"]]
            msg[_M["confidence"]] = conv[_C["last_confidence"]]
        messages[(e.stream_id, key)] = msg
        conv[_C["outbound_count"]] += 1
        if author in ("ai", "human"):
            conv[_C["unread"]] = 0
        _last_message(conv, e, "out", author, "text")
        return (e.stream_id, key)
    if t in _STATUS_EVENTS:
        key = "out:" + d["outbound_id"]
        msg_or_none = messages.get((e.stream_id, key))
        if msg_or_none is None:
            return None
        _apply_status(msg_or_none, e)
        return (e.stream_id, key)
    if t == "HandoffRequested":
        _wait(conv, e, d.get("queue"))
        conv[_C["handoff_reason"]] = d.get("reason")
        conv[_C["summary_sealed"]] = _sealed(e)
        conv[_C["handoffs"]] += 1
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
        labels = set(conv[_C["labels"]] or ()) | set(d.get("added") or ())
        conv[_C["labels"]] = sorted(labels - removed)
    elif t == "ReturnedToAI":
        conv[_C["status"]] = "ai"
        _release(conv)
    elif t == "ConversationClosed":
        conv[_C["status"]] = "closed"
        _release(conv)
        conv[_C["unread"]] = 0
        conv[_C["closed_at"]] = e.occurred_at
    elif t == "ConversationReopened":
        conv[_C["status"]] = "ai"
        conv[_C["closed_at"]] = None
    return None


def _apply_status(msg: list[Any], e: Envelope) -> None:
    t, d = e.type, e.data
    if t == "OutboundMessageRetried":
        # The one way out of "failed": queued again by an operator, the error cleared.
        if msg[_M["status"]] == "failed":
            msg[_M["status"]] = "queued"
            msg[_M["error"]] = None
            msg[_M["updated_at"]] = e.occurred_at
        return
    status = {
        "OutboundMessageSent": "sent",
        "OutboundMessageFailed": "failed",
        "OutboundMessageCancelled": "cancelled",
        "MessageDelivered": "delivered",
        "MessageRead": "read",
    }[t]
    current = msg[_M["status"]]
    new = advance(current, status)
    msg[_M["updated_at"]] = e.occurred_at
    if new == current:
        return
    msg[_M["status"]] = new
    if status == "sent":
        msg[_M["provider_message_id"]] = d.get("provider_message_id")
        msg[_M["sent_at"]] = e.occurred_at
    elif status == "delivered":
        msg[_M["delivered_at"]] = d.get("at") or e.occurred_at
    elif status == "read":
        msg[_M["read_at"]] = d.get("at") or e.occurred_at
        if msg[_M["delivered_at"]] is None:
            msg[_M["delivered_at"]] = d.get("at") or e.occurred_at
    elif status in ("failed", "cancelled"):
        code = d.get("code")
        reason = d.get("reason") or status
        msg[_M["error"]] = f"{code}: {reason}" if code else reason

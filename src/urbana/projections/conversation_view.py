"""Conversation view: what attendants see.

See docs/architecture.md, "Read models and replay".

`conversations`: one row per conversation: status, assignee, queue, labels, the
contact's name, since when it waits for a human, the lead's last inbound time (the
24-hour window), the AI's last intent and confidence, the last message, unread count,
handoff reason and summary. `messages`: every inbound and outbound message with
direction, author, delivery status and, for an AI reply, its intent, confidence and the
knowledge passages it was given.
`notes`: the attendants' private notes (never sent to the lead).

Personal text is never stored in clear here. The row keeps the envelope's sealed
blob (`encrypted`: subject key id, field names, ciphertext) as jsonb, and
`urbana.projections.queries` decrypts it when serving. Erasing a lead destroys its
key (crypto-shredding), so its text in these tables becomes unreadable at once, with
no rewrite of the read model: queries then serve `ERASED`.

`last_position` is the global position of the last event applied to a row. The
tables' columns are in `conversation_tables`; what each event does to the rows
(unread, delivery status, ownership) is in `conversation_events`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from urbana.application.envelope import Envelope
from urbana.projections.base import Load, Row, Write, event_names, upsert_sql
from urbana.projections.conversation_events import (
    STATUS_EVENTS,
    apply_conversation,
    new_conversation,
    new_note,
)
from urbana.projections.conversation_tables import (
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    NOTE_COLUMNS,
    C,
    M,
    N,
)


def _select(columns: Sequence[tuple[str, str]]) -> str:
    """Select list that reads timestamps and jsonb back as text (written back unchanged)."""
    return ", ".join(
        f"{c}::text" if kind in ("timestamptz", "jsonb", "uuid") else c for c, kind in columns
    )


def _columns(columns: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{c} {kind}" for c, kind in columns)


_CONVERSATION_UPSERT = upsert_sql("conversations", CONVERSATION_COLUMNS, ("id",))
_MESSAGE_UPSERT = upsert_sql("messages", MESSAGE_COLUMNS, ("conversation_id", "msg_key"))
_NOTE_UPSERT = upsert_sql("notes", NOTE_COLUMNS, ("conversation_id", "note_id"))


class ConversationView:
    name: ClassVar[str] = "conversation_view"
    # 2: queue, labels, contact, waiting_since, 24-hour window, intents, notes, positions
    # 3: the passages each AI reply was given (AIReplyGenerated version 3), and
    # `erased_conversations`: the conversations of erased subjects (ids only), so their
    # events, which Kafka may deliver after the erasure (another partition), stay out.
    version: ClassVar[int] = 3
    tables: ClassVar[tuple[str, ...]] = (
        "conversations",
        "messages",
        "notes",
        "erased_conversations",
    )
    handles: ClassVar[frozenset[str]] = event_names(
        "Conversation",
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
    ) | {"Lead.SubjectErased"}

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
            "CREATE TABLE IF NOT EXISTS {erased_conversations} (id uuid, tenant_id uuid, "
            "CONSTRAINT {erased_conversations}_pkey PRIMARY KEY (id))",
        ]

    def loads(self, envelopes: Sequence[Envelope]) -> list[Load]:
        conversation_ids: dict[str, None] = {}
        message_keys: dict[tuple[str, str], None] = {}
        created: set[str] = set()
        for e in envelopes:
            conversation_ids[e.stream_id] = None
            if e.type == "OutboundMessageQueued":
                created.add(e.stream_id + "out:" + e.data["outbound_id"])
            elif e.type in STATUS_EVENTS:
                key = "out:" + e.data["outbound_id"]
                if e.stream_id + key not in created:
                    message_keys[(e.stream_id, key)] = None
        loads = [
            Load(
                "conversations",
                f"SELECT {_select(CONVERSATION_COLUMNS)} FROM {{conversations}} "  # noqa: S608
                "WHERE id = ANY(%s::uuid[])",
                (list(conversation_ids),),
            ),
            Load(
                "erased",
                "SELECT id::text FROM {erased_conversations} WHERE id = ANY(%s::uuid[])",
                (list(conversation_ids),),
            ),
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
        erased: dict[str, str | None] = {}  # conversation id -> tenant, erased in this batch
        before = {r[0] for r in loaded.get("erased", [])}
        for e in envelopes:
            if e.type == "SubjectErased":
                _forget(e, conversations, touched_c, touched_m, notes, erased)
                continue
            if e.stream_id in erased or e.stream_id in before:
                continue  # an erased subject's conversation: whatever arrives, it stays out
            conv = conversations.get(e.stream_id)
            if e.type == "ConversationStarted":
                conv = new_conversation(e)
                conversations[e.stream_id] = conv
            elif conv is None:
                continue  # its start was never seen: nothing to attach it to
            touched_c[e.stream_id] = None
            if e.type == "NoteAdded":
                note = new_note(conv, e)
                notes[(e.stream_id, note[N["note_id"]])] = note
            key = apply_conversation(conv, e, messages)
            if key is not None:
                touched_m[key] = None
                messages[key][M["last_position"]] = e.position
            conv[C["updated_at"]] = e.occurred_at
            conv[C["last_position"]] = e.position
        writes: list[Write] = []
        if touched_c:
            rows = [tuple(conversations[c]) for c in touched_c]
            writes.append(Write("conversations", CONVERSATION_COLUMNS, _CONVERSATION_UPSERT, rows))
        if touched_m:
            rows = [tuple(messages[k]) for k in touched_m]
            writes.append(Write("messages", MESSAGE_COLUMNS, _MESSAGE_UPSERT, rows))
        if notes:
            writes.append(Write("notes", NOTE_COLUMNS, _NOTE_UPSERT, list(notes.values())))
        if erased:
            rows = [(c,) for c in erased]
            writes.extend(Write(t, _ERASED_COLUMNS, sql, rows) for t, sql in _ERASE_SQL)
            tombstones = [(c, tenant) for c, tenant in erased.items()]
            writes.append(
                Write("erased_conversations", _TOMBSTONE_COLUMNS, _TOMBSTONE_SQL, tombstones)
            )
        return writes


_TOMBSTONE_COLUMNS: tuple[tuple[str, str], ...] = (("id", "uuid"), ("tenant_id", "uuid"))
_TOMBSTONE_SQL = (
    "INSERT INTO {erased_conversations} (id, tenant_id) "
    "SELECT id, tenant_id FROM {stage} ON CONFLICT (id) DO NOTHING"
)
# An erased subject's conversations leave the view: rows, messages and notes.
_ERASED_COLUMNS: tuple[tuple[str, str], ...] = (("conversation_id", "uuid"),)
_ERASE_SQL = tuple(
    (table, f"DELETE FROM {{{table}}} t USING {{stage}} s WHERE t.{column} = s.conversation_id")  # noqa: S608
    for table, column in (
        ("messages", "conversation_id"),
        ("notes", "conversation_id"),
        ("conversations", "id"),
    )
)


def _forget(
    e: Envelope,
    conversations: dict[str, list[Any]],
    touched_c: dict[str, None],
    touched_m: dict[tuple[str, str], None],
    notes: dict[tuple[str, str], Row],
    erased: dict[str, str | None],
) -> None:
    """`SubjectErased`: drop the subject's conversations from what this batch writes.

    Their later events find no row and are skipped, as in a batch of their own.
    """
    for cid in e.data.get("conversation_ids") or []:
        erased[cid] = e.tenant_id
        conversations.pop(cid, None)
        touched_c.pop(cid, None)
        for key in [k for k in touched_m if k[0] == cid]:
            touched_m.pop(key)
        for key in [k for k in notes if k[0] == cid]:
            notes.pop(key)

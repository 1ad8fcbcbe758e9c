"""The conversation view's tables: their columns, in the order of a row's values.

The projection (`conversation_view`) creates and writes them; the folds
(`conversation_events`) address a row's values through `C`, `M` and `N`.
"""

from __future__ import annotations

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
    ("last_passages", "jsonb"),  # the AI's last AIReplyGenerated's, for its reply's row
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
    ("passages", "jsonb"),  # an AI reply's knowledge: [{document_id, chunk_no, title, similarity}]
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


# column name -> its index in a row of conversations (C), messages (M), notes (N)
C = {c: i for i, (c, _) in enumerate(CONVERSATION_COLUMNS)}
M = {c: i for i, (c, _) in enumerate(MESSAGE_COLUMNS)}
N = {c: i for i, (c, _) in enumerate(NOTE_COLUMNS)}

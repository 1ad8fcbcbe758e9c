"""Which fields of the Conversation's events are personal, and whose (see domain/pii.py).

Kept apart from domain/conversation.py, which holds every Conversation event and is at
its size limit.
"""

from __future__ import annotations

from urbana.domain.pii import personal

RECEIVED_PERSONAL = ("text", "contact_name", "media_url", "extra", "contact")


def declare_personal_fields() -> None:
    """Declare them (once the Conversation's event classes exist)."""
    personal("Conversation.ConversationStarted", "contact", subject="lead_id")
    personal("Conversation.MessageReceived", *RECEIVED_PERSONAL, subject="lead_id")
    personal("Conversation.AIReplyGenerated", "text", subject="lead_id")
    personal("Conversation.AIReplyRejected", "text", subject="lead_id")
    personal("Conversation.OutboundMessageQueued", "text", "template", subject="lead_id")
    personal("Conversation.HandoffRequested", "summary", subject="lead_id")
    personal("Conversation.NoteAdded", "text", subject="lead_id")

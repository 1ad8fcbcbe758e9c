"""Commands the tests issue often, written once."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from urbana.application.app import AIOutcome, UrbanaApp


def ai_reply(
    app: UrbanaApp,
    conversation_id: UUID,
    *,
    reply_to_seq: int,
    text: str,
    intent: str,
    confidence: float,
    usage: dict[str, Any] | None = None,
    score_delta: int = 0,
) -> str:
    """The AI's answer to a burst, recorded as the responder records one; its outbound id."""
    (outbound_id,) = app.apply_ai_outcome(
        conversation_id,
        AIOutcome(
            reply_to_seq=reply_to_seq,
            reply=text,
            intent=intent,
            confidence=confidence,
            usage=usage or {},
            score_delta=score_delta,
        ),
    )
    return outbound_id

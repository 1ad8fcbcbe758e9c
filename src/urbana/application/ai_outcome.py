"""Recording what the AI responder decided for one inbound burst, atomically."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from urbana.application.unit_of_work import StoreApp, UnitOfWork
from urbana.domain.conversation import Conversation
from urbana.domain.lead import Lead
from urbana.domain.tenant import Tenant


@dataclass(frozen=True, slots=True)
class AIOutcome:
    """What the responder decided for one inbound burst."""

    reply_to_seq: int
    reply: str | None
    intent: str
    confidence: float
    usage: dict[str, Any]
    score_delta: int = 0
    rejected: str | None = None  # the guard's reason; the reply is then not sent
    fallback: str | None = None  # generic answer sent instead of a rejected reply
    handoff_reason: str | None = None
    transition_message: str | None = None
    summary: str | None = None
    # The knowledge the model was given: {document_id, chunk_no, title, similarity}.
    passages: tuple[dict[str, Any], ...] = ()


class AIOutcomes(StoreApp):
    def apply_ai_outcome(self, conversation_id: UUID, outcome: AIOutcome) -> list[str]:
        """Record one burst's AI outcome atomically; returns the queued outbound ids.

        In one transaction: the AI's answer (or its rejection, or the fallback), the
        lead's score and stage, and on handoff the transition message then the
        handoff itself. The domain refuses a second outcome for the same burst, so a
        redelivered trigger or a crash-and-retry cannot answer twice.
        """

        def work(uow: UnitOfWork) -> list[str]:
            conversation = uow.require(Conversation, conversation_id)
            queued: list[str] = []
            if outcome.reply and outcome.rejected is None:
                out = str(uuid4())
                conversation.record_ai_reply(
                    outbound_id=out,
                    reply_to_seq=outcome.reply_to_seq,
                    text=outcome.reply,
                    intent=outcome.intent,
                    confidence=outcome.confidence,
                    usage=outcome.usage,
                    passages=list(outcome.passages),
                )
                queued.append(out)
            else:
                conversation.reject_ai_reply(
                    reply_to_seq=outcome.reply_to_seq,
                    text=outcome.reply or "",
                    reason=outcome.rejected or "no_reply",
                )
                if outcome.fallback:
                    out = str(uuid4())
                    conversation.queue_system_message(outbound_id=out, text=outcome.fallback)
                    queued.append(out)
            if outcome.score_delta:
                lead = uow.require(Lead, conversation.lead_id)
                tenant = uow.get(Tenant, conversation.tenant_id)
                thresholds = tenant.settings.stage_thresholds if tenant else None
                lead.score_by(outcome.score_delta, reason=outcome.intent, thresholds=thresholds)
            if outcome.handoff_reason:
                if outcome.transition_message:
                    out = str(uuid4())
                    conversation.queue_system_message(
                        outbound_id=out, text=outcome.transition_message
                    )
                    queued.append(out)
                conversation.request_handoff(reason=outcome.handoff_reason, summary=outcome.summary)
            return queued

        return self._retrying(work)

"""Telling a tenant's attendants that a lead asked for a person: what is sent, and the ports.

On `HandoffRequested` the notifier (`urbana.adapters.notifier`) sends the tenant's chat
one `HandoffNotice`: the lead's name, the reason in words, the summary and a button to
the conversation. The text is Portuguese: attendants read it. At most one notice per
handoff: a `NotificationLedger` records each handoff's notice before it is sent, and a
notice whose send may have reached the chat is never sent again (see
docs/architecture.md, Handoff notifications).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

from urbana.application.app import UrbanaApp
from urbana.domain.conversation import Conversation
from urbana.domain.errors import NotFound
from urbana.domain.lead import Lead
from urbana.domain.pii import ERASED
from urbana.domain.reply import (
    EXPLICIT_REQUEST,
    HANDOFF_INTENT,
    HOT_LEAD,
    LLM_FAILURE,
    LLM_REQUESTED,
    LOW_CONFIDENCE,
    NO_ANSWER,
)
from urbana.domain.tenant import TelegramTarget
from urbana.errors import UrbanaError

BUTTON_TEXT = "Abrir conversa"
MAX_SUMMARY = 1_000  # Telegram takes 4,096 characters; the summary is the long part

REASONS: Mapping[str, str] = {
    EXPLICIT_REQUEST: "o cliente pediu para falar com uma pessoa",
    LLM_REQUESTED: "a IA achou melhor passar para uma pessoa",
    HANDOFF_INTENT: "assunto que pede uma pessoa",
    LOW_CONFIDENCE: "a IA não teve confiança na resposta",
    HOT_LEAD: "lead quente",
    LLM_FAILURE: "a IA não conseguiu responder",
    NO_ANSWER: "a IA não encontrou a resposta",
}


@dataclass(frozen=True, slots=True)
class HandoffNotice:
    tenant_id: UUID
    conversation_id: UUID
    lead_name: str | None
    reason: str
    summary: str | None
    url: str  # the conversation, in the attendants' panel


def reason_in_words(reason: str) -> str:
    """The handoff reason as an attendant reads it (the model's and the guard's own codes
    as they are)."""
    return REASONS.get(reason, reason)


def notice_text(notice: HandoffNotice) -> str:
    """The message the chat gets (plain text: nothing in it is parsed as markup)."""
    lines = [
        "🔔 Novo atendimento aguardando",
        f"Cliente: {notice.lead_name or 'sem nome'}",
        f"Motivo: {reason_in_words(notice.reason)}",
    ]
    if notice.summary:
        summary = notice.summary
        if len(summary) > MAX_SUMMARY:
            summary = summary[: MAX_SUMMARY - 3] + "..."
        lines.append(f"Resumo: {summary}")
    return "\n".join(lines)


def conversation_url(panel_url: str, conversation_id: UUID) -> str:
    return f"{panel_url.rstrip('/')}/conversations/{conversation_id}"


def handoff_notice(
    app: UrbanaApp, conversation_id: UUID, version: int, panel_url: str
) -> HandoffNotice | None:
    """The notice of the `HandoffRequested` at `version` of the conversation, decrypted.

    None when that event is not a handoff, or the conversation is a console test
    (nothing to tell). Synchronous: it reads the
    store (run it in a worker thread).
    """
    events = list(app.events.get(conversation_id, gt=version - 1, lte=version))
    if not events or type(events[0]).__name__ != "HandoffRequested":
        return None
    handoff: Any = events[0]
    conv = app.get(Conversation, conversation_id)
    if conv.is_console:
        return None  # the tenant testing its bot: nobody is waiting for a person
    try:
        lead = app.get(Lead, conv.lead_id)
        name = lead.name if lead.name != ERASED else None
    except NotFound:
        name = None
    summary = handoff.summary if handoff.summary != ERASED else None
    return HandoffNotice(
        tenant_id=conv.tenant_id,
        conversation_id=conversation_id,
        lead_name=name,
        reason=str(handoff.reason),
        summary=summary,
        url=conversation_url(panel_url, conversation_id),
    )


# --------------------------------------------------------------------- ports


class NotifyFailed(UrbanaError):
    """The chat did not get the message.

    `retryable`: the service is down or throttling (it surely did not take it), worth
    trying again after `retry_after` seconds if given. Otherwise it refused the
    message for good (bad token, unknown chat, bot blocked).
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        button_refused: bool = False,
    ):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        # Refused for the button's URL alone (Telegram takes no local URLs in buttons).
        self.button_refused = button_refused


class NotifyOutcomeUnknown(Exception):
    """The request went out and no answer came back: the chat may have the message."""


class Messenger(Protocol):
    """Sends one message with a link button to a chat (Telegram)."""

    async def send(
        self, target: TelegramTarget, text: str, button: str | None, url: str | None
    ) -> str:
        """Send (with a link button when both are given); the service's message id.

        NotifyFailed or NotifyOutcomeUnknown otherwise.
        """
        ...


class Claim(StrEnum):
    OURS = "ours"  # send it
    DONE = "done"  # sent, refused, or maybe sent: never again
    BUSY = "busy"  # another notifier holds it right now


class NotificationLedger(Protocol):
    """One row per notice: claimed, being sent, and how it ended; shared by all notifiers.

    A claim is a lease: a notifier that died while waiting to retry is taken over when
    its lease runs out. One that died while its request was out is not (the message
    may have gone): that notice ends as it stands.
    """

    async def claim(self, key: str, tenant_id: UUID, owner: UUID, lease_s: float) -> Claim:
        """Take the notice `key` for `owner` unless it is done or held by a live lease."""
        ...

    async def sending(self, key: str, owner: UUID, lease_s: float) -> bool:
        """Record that a request is about to go out; False if `owner` lost the claim."""
        ...

    async def failed(self, key: str, owner: UUID, lease_s: float, reason: str) -> None:
        """The request surely did not get through: the notice waits for a retry."""
        ...

    async def finish(self, key: str, owner: UUID, state: str, detail: str) -> None:
        """The notice ended: `sent`, `refused`, `unknown` or `expired`."""
        ...

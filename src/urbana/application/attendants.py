"""Conversation commands of the attendants: take over, reply, give back to the AI, close."""

from __future__ import annotations

from uuid import UUID, uuid4

from urbana.application.unit_of_work import StoreApp
from urbana.domain.conversation import Conversation


class AttendantCommands(StoreApp):
    def request_handoff(
        self, conversation_id: UUID, *, reason: str, summary: str | None = None
    ) -> None:
        self._on(
            Conversation,
            conversation_id,
            lambda c: c.request_handoff(reason=reason, summary=summary),
        )

    def accept_handoff(self, conversation_id: UUID, *, attendant: str) -> None:
        self._on(Conversation, conversation_id, lambda c: c.accept_handoff(attendant=attendant))

    def attendant_reply(self, conversation_id: UUID, *, attendant: str, text: str) -> str:
        """Queue an attendant's answer; returns its outbound id."""
        outbound_id = str(uuid4())
        self._on(
            Conversation,
            conversation_id,
            lambda c: c.attendant_reply(outbound_id=outbound_id, attendant=attendant, text=text),
        )
        return outbound_id

    def return_to_ai(self, conversation_id: UUID) -> None:
        self._on(Conversation, conversation_id, lambda c: c.return_to_ai())

    def close_conversation(
        self, conversation_id: UUID, *, by: str, resolution: str = "resolved"
    ) -> None:
        self._on(Conversation, conversation_id, lambda c: c.close(by=by, resolution=resolution))

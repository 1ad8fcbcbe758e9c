"""MessageRef: the index of provider message ids (the store's dedupe authority).

Its id is uuid5(tenant, channel, provider id digest), so the store's unique
(stream id, version) key refuses a second `MessageRefRecorded` for the same
provider id: a redelivered webhook can never append a second message. It also
links statuses to the conversation, holding those that arrive before the message
they describe, each status once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from urbana.domain.contacts import message_ref_id_for
from urbana.domain.errors import StatusAlreadyHeld
from urbana.domain.events import TenantScoped, changed_in, ids_were_clear, tenant_added_in_v2


class MessageRef(TenantScoped):
    @staticmethod
    def create_id(tenant_id: UUID, channel: str, provider_message_id: str, **_: Any) -> UUID:
        return message_ref_id_for(tenant_id, channel, provider_message_id)

    @event("MessageRefRecorded")
    def __init__(
        self,
        tenant_id: UUID,
        channel: str,
        provider_message_id: str,
        conversation_id: UUID | None,
        outbound_id: str | None,
    ) -> None:
        self.tenant_id = tenant_id
        self.conversation_id = conversation_id
        self.outbound_id = outbound_id
        self.held: list[dict[str, Any]] = []

    @property
    def linked(self) -> bool:
        return self.conversation_id is not None

    def hold_status(
        self, *, status: str, at: datetime, code: str | None, title: str | None
    ) -> None:
        """Keep a status whose message is not known yet; each status once.

        Gateways redeliver status webhooks freely; holding a second copy would grow the
        stream without bound and apply nothing new when the message arrives.
        """
        if any(item["status"] == status for item in self.held):
            raise StatusAlreadyHeld(f"{status} is already held")
        self._status_held(status=status, at=at, code=code, title=title)

    def link(self, *, conversation_id: UUID, outbound_id: str | None) -> list[dict[str, Any]]:
        """Attach the message; returns the statuses held until now, to apply them."""
        held = list(self.held)
        self._linked(conversation_id=conversation_id, outbound_id=outbound_id)
        return held

    @event("StatusHeld")
    def _status_held(self, status: str, at: datetime, code: str | None, title: str | None) -> None:
        self.held.append({"status": status, "at": at, "code": code, "title": title})

    @event("MessageRefLinked")
    def _linked(self, conversation_id: UUID, outbound_id: str | None) -> None:
        self.conversation_id = conversation_id
        self.outbound_id = outbound_id
        self.held = []


tenant_added_in_v2(MessageRef)
# Version 2 of its first event: the provider id is its keyed digest (so is the stream id's).
changed_in(2, MessageRef, {"MessageRefRecorded": ids_were_clear})

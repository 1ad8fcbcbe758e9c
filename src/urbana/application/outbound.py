"""Outbound commands: what the dispatcher records around a send, and the dead letters.

The dispatcher (`urbana.application.dispatcher`) records the attempt before each
gateway call, then the message sent (with the provider's id) or failed; operators
queue a failed message again (`urbana dlq retry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from urbana.application.provider_ids import provider_key
from urbana.application.unit_of_work import StoreApp, UnitOfWork
from urbana.domain.contacts import message_ref_id_for
from urbana.domain.conversation import Conversation
from urbana.domain.errors import StaleStatus
from urbana.domain.message_ref import MessageRef
from urbana.domain.outbound import Delivery
from urbana.domain.templates import window_applies
from urbana.domain.tenant import Tenant

DLQ_PAGE = 500


@dataclass(frozen=True, slots=True)
class FailedOutbound:
    """An outbound message that failed for good, and whether it may be retried."""

    tenant_id: UUID
    conversation_id: UUID
    outbound_id: str
    channel: str
    author: str
    reason: str
    code: str | None
    failed_at: datetime
    refusal: str | None  # why it may not be retried; None when it may

    @property
    def retryable(self) -> bool:
        return self.refusal is None


def callback_data_for(conversation_id: UUID, outbound_id: str) -> str:
    """What we pass to a gateway that echoes it in status webhooks."""
    return f"{conversation_id}:{outbound_id}"


def parse_callback_data(value: str | None) -> tuple[UUID, str] | None:
    """(conversation id, outbound id) from our callback data; None for anything else."""
    if not value or ":" not in value:
        return None
    conversation, outbound_id = value.split(":", 1)
    try:
        return UUID(conversation), outbound_id
    except ValueError:
        return None


def link_sent(
    uow: UnitOfWork,
    conversation: Conversation,
    outbound_id: str,
    provider_message_id: str,
    ref: MessageRef | None,
) -> None:
    """Index a sent message's provider id; apply the statuses held for it."""
    if ref is None:
        uow.add(
            MessageRef(
                tenant_id=conversation.tenant_id,
                channel=conversation.channel,
                provider_message_id=provider_message_id,
                conversation_id=conversation.id,
                outbound_id=outbound_id,
            )
        )
        return
    for held in ref.link(conversation_id=conversation.id, outbound_id=outbound_id):
        conversation.apply_status(
            outbound_id, held["status"], held["at"], code=held["code"], title=held["title"]
        )


class OutboundCommands(StoreApp):
    def mark_sent(self, conversation_id: UUID, outbound_id: str, provider_message_id: str) -> None:
        """The gateway accepted the message (under this id, as it sent it); statuses held
        for its id apply now. The id is recorded as its keyed digest, as inbound ids are
        (`InboundCommands.keyed`): a wamid embeds the recipient's phone."""

        def work(uow: UnitOfWork) -> None:
            conversation = uow.require(Conversation, conversation_id)
            tenant_id, channel = conversation.tenant_id, conversation.channel
            key = provider_key(self.cipher, tenant_id, channel, provider_message_id)
            try:
                conversation.mark_sent(outbound_id=outbound_id, provider_message_id=key)
            except StaleStatus:
                return
            ref_id = message_ref_id_for(tenant_id, channel, key)
            link_sent(uow, conversation, outbound_id, key, uow.get(MessageRef, ref_id))

        self._retrying(work)

    def record_send_attempt(self, conversation_id: UUID, outbound_id: str, at: datetime) -> int:
        """Record, before the gateway call, that the message is being sent; the attempt number.

        Refused (StaleStatus, InvalidTransition) when the message is no longer queued or
        the send-time gate closed: a concurrent writer changed the conversation first.
        """

        def work(uow: UnitOfWork) -> int:
            conversation = uow.require(Conversation, conversation_id)
            return conversation.record_send_attempt(outbound_id=outbound_id, at=at)

        return self._retrying(work)

    def mark_failed(
        self, conversation_id: UUID, outbound_id: str, reason: str, code: str | None = None
    ) -> None:
        self._on(
            Conversation,
            conversation_id,
            lambda c: c.mark_failed(outbound_id=outbound_id, reason=reason, code=code),
        )

    def cancel_outbound(self, conversation_id: UUID, outbound_id: str, reason: str) -> None:
        self._on(
            Conversation,
            conversation_id,
            lambda c: c.cancel_outbound(outbound_id=outbound_id, reason=reason),
        )

    def retry_outbound(
        self, conversation_id: UUID, outbound_id: str, *, by: str, now: datetime | None = None
    ) -> None:
        """Queue a failed message again; the dispatcher sends it (the domain decides if it may)."""
        when = now or datetime.now(UTC)

        def retry(uow: UnitOfWork) -> None:
            conversation = uow.require(Conversation, conversation_id)
            conversation.retry_outbound(
                outbound_id=outbound_id,
                by=by,
                now=when,
                window_applies=self._window_applies(conversation),
            )

        self._retrying(retry)

    def failed_outbounds(
        self, tenant_id: UUID | None = None, now: datetime | None = None
    ) -> list[FailedOutbound]:
        """Outbound messages failed for good (the dead letters), oldest first.

        Read from the event store, the authority, not from a read model that may lag.
        """
        when = now or datetime.now(UTC)
        found: list[FailedOutbound] = []
        conversations: dict[UUID, Conversation] = {}
        for (conversation_id, outbound_id), failed_at in self._failures().items():
            conversation = conversations.get(conversation_id)
            if conversation is None:
                conversation = conversations[conversation_id] = self.get(
                    Conversation, conversation_id
                )
            if tenant_id is not None and conversation.tenant_id != tenant_id:
                continue
            message = conversation.message(outbound_id)
            if message.delivery is not Delivery.FAILED or message.failure is None:
                continue  # retried since, and sent or failed again later
            found.append(
                FailedOutbound(
                    tenant_id=conversation.tenant_id,
                    conversation_id=conversation_id,
                    outbound_id=outbound_id,
                    channel=conversation.channel,
                    author=message.author,
                    reason=message.failure.reason,
                    code=message.failure.code,
                    failed_at=failed_at,
                    refusal=conversation.retry_refusal(
                        outbound_id, when, window_applies=self._window_applies(conversation)
                    ),
                )
            )
        found.sort(key=lambda f: f.failed_at)
        return found

    def _window_applies(self, conversation: Conversation) -> bool:
        exempt = self.get(Tenant, conversation.tenant_id).settings.window_exempt_channels
        return window_applies(conversation.channel, exempt)

    def _failures(self) -> dict[tuple[UUID, str], datetime]:
        """When each (conversation, outbound id) last failed, from the notification log."""
        # The class the @event decorator made (mypy does not see it as an attribute).
        topic = get_topic(vars(Conversation)["OutboundMessageFailed"])
        latest: dict[tuple[UUID, str], datetime] = {}
        start: int | None = None
        while True:
            page = self.recorder.select_notifications(
                start, DLQ_PAGE, topics=[topic], inclusive_of_start=False
            )
            for notification in page:
                event: Any = self.mapper.to_domain_event(notification)
                key = (UUID(str(notification.originator_id)), str(event.outbound_id))
                latest[key] = event.timestamp
            if len(page) < DLQ_PAGE:
                return latest
            start = page[-1].id

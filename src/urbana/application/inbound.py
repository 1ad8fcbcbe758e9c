"""Inbound commands: the messages and delivery statuses that webhooks carry.

A batch of them is saved in one transaction (group commit, on the writer's cache):
the streams it reads are loaded in two queries, a message whose provider id was
already recorded appends nothing, and a command the domain refuses gets its
`DomainError` without affecting the rest of the batch.

Provider message ids are recorded as keyed digests (`keyed`, `application.provider_ids`),
never as the gateway sent them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from urbana.application.channels import InboundMessage, StatusUpdate
from urbana.application.outbound import link_sent, parse_callback_data
from urbana.application.provider_ids import provider_key
from urbana.application.unit_of_work import StoreApp, UnitOfWork
from urbana.domain.channels import CONSOLE
from urbana.domain.contacts import (
    contact_key,
    conversation_id_for,
    lead_id_for,
    lead_key,
    message_ref_id_for,
)
from urbana.domain.conversation import Conversation
from urbana.domain.errors import DomainError, StatusAlreadyHeld
from urbana.domain.lead import Lead
from urbana.domain.message_ref import MessageRef
from urbana.domain.plans import LeadQuota, billing_month, lead_quota_id_for
from urbana.domain.tenant import Tenant


@dataclass(frozen=True, slots=True)
class ReceiveMessage:
    tenant_id: UUID
    channel: str
    message: InboundMessage
    # Set once the ids are keyed: the MessageRef stream an Urbana before digests made
    # for this id (from the id in clear), still looked up so nothing it knew is lost.
    legacy_ref: UUID | None = None
    trace: str | None = None  # the traceparent of the request that brought it


@dataclass(frozen=True, slots=True)
class Received:
    """The outcome of one inbound message: where it landed, or that it was a duplicate."""

    conversation_id: UUID
    lead_id: UUID
    seq: int
    duplicate: bool = False
    new_conversation: bool = False


@dataclass(frozen=True, slots=True)
class RecordStatus:
    tenant_id: UUID
    channel: str
    status: StatusUpdate
    legacy_ref: UUID | None = None  # as for ReceiveMessage
    trace: str | None = None  # the traceparent of the request that brought it


C = TypeVar("C", bound=ReceiveMessage | RecordStatus)


def _outcome(applied: bool) -> str:
    return "applied" if applied else "stale"


class InboundCommands(StoreApp):
    def provider_key(self, tenant_id: UUID, channel: str, provider_id: str) -> str:
        """What the store records for a gateway's message id: its keyed digest."""
        return provider_key(self.cipher, tenant_id, channel, provider_id)

    def keyed(self, command: C) -> C:
        """The command with its provider ids as digests (unchanged if they already are)."""
        if command.legacy_ref is not None:
            return command
        t, ch = command.tenant_id, command.channel
        if isinstance(command, RecordStatus):
            st = command.status
            key = self.provider_key(t, ch, st.provider_message_id)
            legacy = message_ref_id_for(t, ch, st.provider_message_id)
            return replace(command, status=replace(st, provider_message_id=key), legacy_ref=legacy)
        msg = command.message
        keyed = replace(
            msg,
            provider_message_id=self.provider_key(t, ch, msg.provider_message_id),
            reply_to=self.provider_key(t, ch, msg.reply_to) if msg.reply_to else None,
        )
        legacy = message_ref_id_for(t, ch, msg.provider_message_id)
        return replace(command, message=keyed, legacy_ref=legacy)

    def ingest(
        self, commands: Sequence[ReceiveMessage | RecordStatus]
    ) -> list[Received | str | DomainError]:
        """Messages and statuses from webhooks, all saved in one transaction."""
        commands = [self.keyed(c) for c in commands]

        def work(uow: UnitOfWork) -> list[Received | str | DomainError]:
            _preload_batch(uow, commands)
            traced = any(c.trace for c in commands)
            outcomes: list[Received | str | DomainError] = []
            for c in commands:
                outcomes.append(
                    _receive_one(uow, c)
                    if isinstance(c, ReceiveMessage)
                    else _status_or_error(uow, c)
                )
                if traced:  # the batch holds many requests: each event keeps its own trace
                    uow.stamp(c.trace)
            return outcomes

        return self._batch(work)

    def receive_messages(self, commands: Sequence[ReceiveMessage]) -> list[Received | DomainError]:
        """Record a batch of inbound messages in one transaction (group commit).

        A message whose provider id was already recorded is reported `duplicate`
        and appends nothing; a message the domain refuses gets its `DomainError`
        and does not affect the rest of the batch.
        """
        commands = [self.keyed(c) for c in commands]

        def work(uow: UnitOfWork) -> list[Received | DomainError]:
            _preload_batch(uow, commands)
            return [_receive_one(uow, command) for command in commands]

        return self._batch(work)

    def receive_message(self, command: ReceiveMessage) -> Received:
        outcome = self.receive_messages([command])[0]
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    def record_statuses(self, commands: Sequence[RecordStatus]) -> list[str]:
        """Apply provider delivery statuses; hold those whose message is not known yet.

        Returns per status: "applied", "held", "stale" (did not move forward), or
        "duplicate" (already held: a redelivery).
        """
        commands = [self.keyed(c) for c in commands]

        def work(uow: UnitOfWork) -> list[str]:
            _preload_batch(uow, commands)
            return [_status_one(uow, c) for c in commands]

        return self._batch(work)


def _stream_ids(commands: Sequence[ReceiveMessage | RecordStatus]) -> list[UUID]:
    """The streams a batch of inbound commands reads, to load them in one query."""
    ids: list[UUID] = []
    for c in commands:
        if c.legacy_ref is not None:
            ids.append(c.legacy_ref)
        if isinstance(c, RecordStatus):
            ids.append(message_ref_id_for(c.tenant_id, c.channel, c.status.provider_message_id))
            continue
        msg = c.message
        try:
            key = lead_key(msg.contact, msg.phone)
            ids.append(Conversation.create_id(c.tenant_id, c.channel, msg.contact))
        except DomainError:
            continue
        ids.append(message_ref_id_for(c.tenant_id, c.channel, msg.provider_message_id))
        ids.append(Lead.create_id(c.tenant_id, key))
    return ids


def _preload_batch(uow: UnitOfWork, commands: Sequence[ReceiveMessage | RecordStatus]) -> None:
    """Two queries for a whole batch: its streams, then the conversations of its refs."""
    uow.preload(_stream_ids(commands))
    uow.preload(
        a.conversation_id
        for a in list(uow.loaded.values())
        if isinstance(a, MessageRef) and a.conversation_id is not None
    )


def _receive_one(uow: UnitOfWork, command: ReceiveMessage) -> Received | DomainError:
    msg = command.message
    try:
        key = lead_key(msg.contact, msg.phone)
        contact_key(msg.contact)
    except DomainError as exc:
        return exc
    existing = _ref(uow, command, msg.provider_message_id)
    generation, lead = _current_lead(uow, command.tenant_id, key)
    lead_id = lead_id_for(command.tenant_id, key, generation)
    conversation_id = conversation_id_for(
        command.tenant_id, command.channel, msg.contact, generation
    )
    if existing is not None and existing.linked:
        conversation = uow.get(Conversation, existing.conversation_id or conversation_id)
        seq = conversation.inbound_seq if conversation else 0
        return Received(conversation_id, lead_id, seq, duplicate=True)

    new: list[Aggregate] = []
    conversation = uow.get(Conversation, conversation_id)
    try:
        if conversation is None:
            if lead is None:
                lead = Lead.create(
                    command.tenant_id,
                    key,
                    phone=msg.phone,
                    name=msg.contact_name,
                    generation=generation,
                )
                new.append(lead)
            conversation = Conversation.start(
                command.tenant_id, command.channel, msg.contact, lead.id, generation
            )
            new.append(conversation)
            if contact_key(msg.contact) != key:
                lead.link_conversation(conversation.id)
        outbound_id = f"ext:{msg.provider_message_id}" if msg.from_me else None
        # Statuses about a business-phone message may have arrived before it.
        held = list(existing.held) if existing is not None and outbound_id else []
        if outbound_id is not None:
            conversation.record_business_message(
                outbound_id=outbound_id,
                provider_message_id=msg.provider_message_id,
                text=msg.text,
                sent_at=msg.sent_at,
            )
        else:
            conversation.receive(
                provider_message_id=msg.provider_message_id,
                kind=msg.kind,
                sent_at=msg.sent_at,
                text=msg.text,
                contact_name=msg.contact_name,
                media_url=msg.media_url,
                media_mime=msg.media_mime,
                reply_to=msg.reply_to,
                referral=dict(msg.referral) if msg.referral else None,
                extra=dict(msg.extra) if msg.extra else None,
                contact=msg.contact,
            )
    except DomainError as exc:
        return exc
    if existing is None:
        uow.add(
            MessageRef(
                tenant_id=command.tenant_id,
                channel=command.channel,
                provider_message_id=msg.provider_message_id,
                conversation_id=conversation.id,
                outbound_id=outbound_id,
            )
        )
    else:
        existing.link(conversation_id=conversation.id, outbound_id=outbound_id)
    for item in held:
        assert outbound_id is not None
        conversation.apply_status(
            outbound_id, item["status"], item["at"], code=item["code"], title=item["title"]
        )
    if new and isinstance(new[0], Lead) and command.channel != CONSOLE:
        _count_new_lead(uow, new[0], msg.sent_at)
    for aggregate in new:
        uow.add(aggregate)
    return Received(
        conversation.id,
        conversation.lead_id,
        conversation.inbound_seq,
        new_conversation=bool(new) and isinstance(new[-1], Conversation),
    )


def _ref(uow: UnitOfWork, command: ReceiveMessage | RecordStatus, key: str) -> MessageRef | None:
    """The MessageRef of a provider id: under its digest, or as an older Urbana made it."""
    ref = uow.get(MessageRef, message_ref_id_for(command.tenant_id, command.channel, key))
    if ref is None and command.legacy_ref is not None:
        ref = uow.get(MessageRef, command.legacy_ref)
    return ref


def _count_new_lead(uow: UnitOfWork, lead: Lead, first_message_at: datetime) -> None:
    """Count a new lead on its tenant's quota for the month of its first message.

    Under a plan with a limit only: the quota is one stream per tenant and month, which
    every new lead then writes, so processes racing for the last slot collide on its
    version and the store admits one (see docs/architecture.md, Plans and lead limits).
    Console leads are the tenant's own tests and are not counted.
    """
    tenant = uow.get(Tenant, lead.tenant_id)
    limit = tenant.plan.lead_limit if tenant is not None else None
    if limit is None:
        return
    if first_message_at.tzinfo is None:  # the channels give UTC; a naive time is UTC too
        first_message_at = first_message_at.replace(tzinfo=UTC)
    month = billing_month(first_message_at)
    quota = uow.get(LeadQuota, lead_quota_id_for(lead.tenant_id, month))
    if quota is None:
        quota = LeadQuota(tenant_id=lead.tenant_id, month=month)
        uow.add(quota)
    if not quota.count(lead.id, limit):
        lead.mark_over_plan_limit(month=month, limit=limit)


def _current_lead(uow: UnitOfWork, tenant_id: UUID, key: str) -> tuple[int, Lead | None]:
    """The generation a message of this key belongs to, and its lead if it has one yet.

    Each erasure closes a lead's stream; whoever writes with that key afterwards is a new
    data subject, with the next generation's streams and key (see docs/architecture.md,
    Privacy). Erased subjects are rare, so walking the chain costs nothing in practice.
    """
    generation = 0
    lead = uow.get(Lead, lead_id_for(tenant_id, key))
    while lead is not None and lead.erased:
        generation += 1
        lead = uow.get(Lead, lead_id_for(tenant_id, key, generation))
    return generation, lead


def _status_or_error(uow: UnitOfWork, command: RecordStatus) -> str | DomainError:
    try:
        return _status_one(uow, command)
    except DomainError as exc:
        return exc


def _status_one(uow: UnitOfWork, command: RecordStatus) -> str:
    st = command.status
    ref = _ref(uow, command, st.provider_message_id)
    if ref is None:
        ref = MessageRef(
            tenant_id=command.tenant_id,
            channel=command.channel,
            provider_message_id=st.provider_message_id,
            conversation_id=None,
            outbound_id=None,
        )
        uow.add(ref)
    if not ref.linked and st.callback_data:
        reconciled = _reconcile(uow, command, ref)
        if reconciled is not None:
            return reconciled
    if not ref.linked or ref.outbound_id is None:
        if ref.linked:
            return "stale"  # a status about an inbound message: nothing to move
        try:
            ref.hold_status(
                status=st.status.value, at=st.at, code=st.error_code, title=st.error_title
            )
        except StatusAlreadyHeld:
            return "duplicate"  # a redelivered webhook: answered, nothing appended
        return "held"
    assert ref.conversation_id is not None
    conversation = uow.require(Conversation, ref.conversation_id)
    return _outcome(
        conversation.apply_status(
            ref.outbound_id, st.status.value, st.at, code=st.error_code, title=st.error_title
        )
    )


def _reconcile(uow: UnitOfWork, command: RecordStatus, ref: MessageRef) -> str | None:
    """A status for a provider id we never learnt, carrying our callback data.

    The send's answer was lost (a timeout, a crash after the call), but the gateway
    took the message: mark that outbound message sent with this id, then apply the
    status. None when the callback data names nothing of ours that is still queued.
    """
    found = parse_callback_data(command.status.callback_data)
    if found is None:
        return None
    conversation_id, outbound_id = found
    conversation = uow.get(Conversation, conversation_id)
    if (
        conversation is None
        or conversation.tenant_id != command.tenant_id
        or conversation.channel != command.channel
        or not conversation.is_queued(outbound_id)
    ):
        return None
    st = command.status
    conversation.mark_sent(outbound_id=outbound_id, provider_message_id=st.provider_message_id)
    link_sent(uow, conversation, outbound_id, st.provider_message_id, ref)
    return _outcome(
        conversation.apply_status(
            outbound_id, st.status.value, st.at, code=st.error_code, title=st.error_title
        )
    )

"""The Urbana application: commands over the event-sourced aggregates.

Each command loads the aggregates it needs, calls the domain, and saves every
aggregate it changed in one `save()` (one transaction). `receive_messages` takes
a whole batch of inbound messages and saves them together: the store serialises
writers with a table lock, so throughput comes from group commit (DESIGN §7a).
Optimistic-concurrency conflicts (another process appended to the same stream)
are retried from a fresh load.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from uuid import UUID, uuid4

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    LRUCache,
    project_aggregate,
)
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Mapper, Transcoder
from eventsourcing.utils import get_topic

from urbana.application.channels import InboundMessage, StatusUpdate
from urbana.application.gateways import GatewayConfig
from urbana.application.ports import StreamIndex, SubjectCipher
from urbana.application.store import OrjsonTranscoder, PiiMapper, subjects_of
from urbana.domain.contacts import (
    channel_route_id_for,
    contact_key,
    lead_key,
    message_ref_id_for,
)
from urbana.domain.conversation import Conversation, Delivery
from urbana.domain.errors import (
    AlreadyConnected,
    DomainError,
    InvalidInput,
    StaleStatus,
    StatusAlreadyHeld,
)
from urbana.domain.lead import Lead
from urbana.domain.message_ref import MessageRef
from urbana.domain.tenant import ChannelRoute, Tenant

log = logging.getLogger(__name__)

A = TypeVar("A", bound=Aggregate)
R = TypeVar("R")

CONFLICT_RETRIES = 12
WRITER_CACHE_SIZE = 20_000


@dataclass(frozen=True, slots=True)
class ReceiveMessage:
    tenant_id: UUID
    channel: str
    message: InboundMessage


@dataclass(frozen=True, slots=True)
class Received:
    """The outcome of one inbound message: where it landed, or that it was a duplicate."""

    conversation_id: UUID
    lead_id: UUID
    seq: int
    duplicate: bool = False
    new_conversation: bool = False


@dataclass(frozen=True, slots=True)
class KnowledgeDocument:
    name: str
    text: str
    version: int  # of the tenant stream event that added it


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


@dataclass(frozen=True, slots=True)
class RecordStatus:
    tenant_id: UUID
    channel: str
    status: StatusUpdate


class _UnitOfWork:
    """The aggregates one batch has loaded or created, saved together at the end.

    With a `cache` (the ingest writer's), aggregates are read from it and brought up
    to date with one query for the whole batch, and mutated in place: a unit that does
    not save cleanly must `forget()` what it loaded, so the next one reads afresh.
    """

    def __init__(self, app: UrbanaApp, cache: LRUCache[UUID, Aggregate] | None = None) -> None:
        self.app = app
        self.cache = cache
        self.loaded: dict[UUID, Aggregate | None] = {}

    def get(self, cls: type[A], aggregate_id: UUID) -> A | None:
        if aggregate_id not in self.loaded:
            if self.cache is not None and self.app.index is not None:
                self.preload([aggregate_id])
            else:
                try:
                    self.loaded[aggregate_id] = self.app.repository.get(aggregate_id)
                except AggregateNotFoundError:
                    self.loaded[aggregate_id] = None
        found = self.loaded[aggregate_id]
        if found is not None and not isinstance(found, cls):
            raise InvalidInput(f"{aggregate_id} is not a {cls.__name__}")
        return found

    def add(self, aggregate: Aggregate) -> None:
        self.loaded[aggregate.id] = aggregate

    def preload(self, ids: Iterable[UUID]) -> None:
        """Load these streams (absent ones as None) in one query.

        Cached aggregates are fast-forwarded by the events stored since; the others
        are rebuilt from all their events.
        """
        index = self.app.index
        if index is None:
            return
        base: dict[UUID, Aggregate | None] = {}
        for stream_id in ids:
            if stream_id in self.loaded or stream_id in base:
                continue
            try:
                base[stream_id] = self.cache.get(stream_id) if self.cache is not None else None
            except KeyError:
                base[stream_id] = None
        if not base:
            return
        versions = {i: a.version if a is not None else 0 for i, a in base.items()}
        found: dict[UUID, list[Any]] = {}
        for stored in index.stored_after(versions):
            found.setdefault(cast(UUID, stored.originator_id), []).append(
                self.app.mapper.to_domain_event(stored)
            )
        for stream_id, aggregate in base.items():
            self.loaded[stream_id] = project_aggregate(aggregate, found.get(stream_id, ()))

    def save(self) -> None:
        changed = [a for a in self.loaded.values() if a is not None and a.pending_events]
        if changed:
            # One round trip for every data key the batch needs, not one per subject.
            self.app.cipher.prepare(subjects_of(e for a in changed for e in a.pending_events))
            self.app.save(*changed)
        if self.cache is not None:
            for aggregate in self.loaded.values():
                if aggregate is not None:
                    self.cache.put(aggregate.id, aggregate)

    def forget(self) -> None:
        """Drop what this unit loaded from the cache (after a failed or refused save)."""
        if self.cache is None:
            return
        for aggregate_id in self.loaded:
            with contextlib.suppress(KeyError):
                self.cache.get(aggregate_id, evict=True)


class UrbanaApp(Application[UUID]):
    """Commands of the conversation engine; the only writer of domain events."""

    name = "urbana"

    def __init__(
        self,
        env: Mapping[str, str] | None,
        cipher: SubjectCipher,
        index: StreamIndex | None = None,
    ) -> None:
        self._cipher = cipher
        self.index = index
        super().__init__(env=dict(env) if env is not None else None)
        # Inbound batches keep their aggregates between batches (no copy, one query per
        # batch to catch up); one batch at a time may use them.
        self._writer_cache: LRUCache[UUID, Aggregate] = LRUCache(maxsize=WRITER_CACHE_SIZE)
        self._writer_lock = threading.Lock()

    def construct_transcoder(self) -> Transcoder:
        return OrjsonTranscoder()

    def construct_mapper(self) -> Mapper[UUID]:
        return PiiMapper(transcoder=self.construct_transcoder(), cipher=self._cipher)

    @property
    def cipher(self) -> SubjectCipher:
        return self._cipher

    # --------------------------------------------------------------- plumbing

    def _retrying(self, work: Callable[[_UnitOfWork], R]) -> R:
        """Run `work` on a fresh unit of work and save it, retrying on conflicts."""
        return self._attempts(lambda: _UnitOfWork(self), work)

    def _batch(self, work: Callable[[_UnitOfWork], R]) -> R:
        """`_retrying` for inbound batches, on the writer's cache."""
        with self._writer_lock:
            return self._attempts(lambda: _UnitOfWork(self, self._writer_cache), work)

    def _attempts(self, unit: Callable[[], _UnitOfWork], work: Callable[[_UnitOfWork], R]) -> R:
        for attempt in range(1, CONFLICT_RETRIES + 1):
            uow = unit()
            try:
                result = work(uow)
                uow.save()
            except IntegrityError:
                uow.forget()
                if attempt == CONFLICT_RETRIES:
                    raise
                log.info("write conflict, retrying (attempt %d)", attempt)
                # Jittered backoff, so two writers racing on one stream stop colliding.
                time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 6)))  # noqa: S311
                continue
            except BaseException:
                uow.forget()
                raise
            return result
        raise AssertionError("unreachable")

    def _require(self, uow: _UnitOfWork, cls: type[A], aggregate_id: UUID) -> A:
        found = uow.get(cls, aggregate_id)
        if found is None:
            raise InvalidInput(f"no {cls.__name__.lower()} {aggregate_id}")
        return found

    # ---------------------------------------------------------------- tenants

    def register_tenant(self, name: str) -> tuple[UUID, bool]:
        """Register a tenant by name; (id, created). Registering twice is harmless."""

        def work(uow: _UnitOfWork) -> tuple[UUID, bool]:
            tenant = Tenant.register(name)
            if uow.get(Tenant, tenant.id) is not None:
                return tenant.id, False
            uow.add(tenant)
            return tenant.id, True

        return self._retrying(work)

    def get_tenant(self, tenant_id: UUID) -> Tenant:
        try:
            tenant: Aggregate = self.repository.get(tenant_id)
        except AggregateNotFoundError:
            raise InvalidInput(f"no tenant {tenant_id}") from None
        if not isinstance(tenant, Tenant):
            raise InvalidInput(f"{tenant_id} is not a tenant")
        return tenant

    def connect_channel(self, tenant_id: UUID, config: GatewayConfig) -> None:
        """Connect a gateway to a tenant; its routes (id, hashed secrets) must be free."""

        def work(uow: _UnitOfWork) -> None:
            tenant = self._require(uow, Tenant, tenant_id)
            routes = [(config.kind, config.route_key), *config.extra_routes.items()]
            for kind, key in routes:
                route = uow.get(ChannelRoute, channel_route_id_for(kind, key))
                if route is None:
                    uow.add(ChannelRoute(channel=kind, route_key=key, tenant_id=tenant_id))
                elif route.tenant_id != tenant_id:
                    raise AlreadyConnected(f"that {kind} route belongs to another tenant")
            tenant.connect_channel(
                channel=config.kind,
                route_key=config.route_key,
                public=config.public,
                secrets=config.secrets,
            )

        self._retrying(work)

    def add_knowledge_document(self, tenant_id: UUID, name: str, text: str) -> None:
        """Record a knowledge document on the tenant (the pgvector index is built from it)."""
        self._on_tenant(tenant_id, lambda t: t.add_knowledge_document(name=name, text=text))

    def change_settings(self, tenant_id: UUID, **changes: Any) -> None:
        self._on_tenant(tenant_id, lambda t: t.change_settings(**changes))

    def change_prompt(self, tenant_id: UUID, prompt: str) -> None:
        self._on_tenant(tenant_id, lambda t: t.change_prompt(prompt))

    def _on_tenant(self, tenant_id: UUID, change: Callable[[Tenant], Any]) -> None:
        def work(uow: _UnitOfWork) -> None:
            change(self._require(uow, Tenant, tenant_id))

        self._retrying(work)

    def route(self, channel: str, route_key: str) -> UUID | None:
        """The tenant that owns a routing key (phone number id, instance, secret hash)."""
        try:
            route: Aggregate = self.repository.get(channel_route_id_for(channel, route_key))
        except AggregateNotFoundError:
            return None
        return cast(ChannelRoute, route).tenant_id

    # ---------------------------------------------------------------- inbound

    def ingest(
        self, commands: Sequence[ReceiveMessage | RecordStatus]
    ) -> list[Received | str | DomainError]:
        """Messages and statuses from webhooks, all saved in one transaction."""

        def work(uow: _UnitOfWork) -> list[Received | str | DomainError]:
            self._preload_batch(uow, commands)
            return [
                self._receive_one(uow, c)
                if isinstance(c, ReceiveMessage)
                else self._status_one_safe(uow, c)
                for c in commands
            ]

        return self._batch(work)

    def _status_one_safe(self, uow: _UnitOfWork, command: RecordStatus) -> str | DomainError:
        try:
            return self._status_one(uow, command)
        except DomainError as exc:
            return exc

    def receive_messages(self, commands: Sequence[ReceiveMessage]) -> list[Received | DomainError]:
        """Record a batch of inbound messages in one transaction (group commit).

        A message whose provider id was already recorded is reported `duplicate`
        and appends nothing; a message the domain refuses gets its `DomainError`
        and does not affect the rest of the batch.
        """

        def work(uow: _UnitOfWork) -> list[Received | DomainError]:
            self._preload_batch(uow, commands)
            return [self._receive_one(uow, command) for command in commands]

        return self._batch(work)

    @staticmethod
    def _stream_ids(commands: Sequence[ReceiveMessage | RecordStatus]) -> list[UUID]:
        """The streams a batch of inbound commands reads, to load them in one query."""
        ids: list[UUID] = []
        for c in commands:
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

    @staticmethod
    def _preload_batch(uow: _UnitOfWork, commands: Sequence[ReceiveMessage | RecordStatus]) -> None:
        """Two queries for a whole batch: its streams, then the conversations of its refs."""
        uow.preload(UrbanaApp._stream_ids(commands))
        uow.preload(
            a.conversation_id
            for a in list(uow.loaded.values())
            if isinstance(a, MessageRef) and a.conversation_id is not None
        )

    def receive_message(self, command: ReceiveMessage) -> Received:
        outcome = self.receive_messages([command])[0]
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    def _receive_one(self, uow: _UnitOfWork, command: ReceiveMessage) -> Received | DomainError:
        msg = command.message
        try:
            key = lead_key(msg.contact, msg.phone)
            contact_key(msg.contact)
        except DomainError as exc:
            return exc
        ref_id = message_ref_id_for(command.tenant_id, command.channel, msg.provider_message_id)
        existing = uow.get(MessageRef, ref_id)
        conversation_id = Conversation.create_id(command.tenant_id, command.channel, msg.contact)
        lead_id = Lead.create_id(command.tenant_id, key)
        if existing is not None and existing.linked:
            conversation = uow.get(Conversation, existing.conversation_id or conversation_id)
            seq = conversation.inbound_seq if conversation else 0
            return Received(conversation_id, lead_id, seq, duplicate=True)

        new: list[Aggregate] = []
        conversation = uow.get(Conversation, conversation_id)
        try:
            if conversation is None:
                lead = uow.get(Lead, lead_id)
                if lead is None:
                    lead = Lead.create(
                        command.tenant_id, key, phone=msg.phone, name=msg.contact_name
                    )
                    new.append(lead)
                conversation = Conversation.start(
                    command.tenant_id, command.channel, msg.contact, lead.id
                )
                new.append(conversation)
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
            _apply_status(
                conversation, outbound_id, item["status"], item["at"], item["code"], item["title"]
            )
        for aggregate in new:
            uow.add(aggregate)
        return Received(
            conversation.id,
            conversation.lead_id,
            conversation.inbound_seq,
            new_conversation=bool(new) and isinstance(new[-1], Conversation),
        )

    def record_statuses(self, commands: Sequence[RecordStatus]) -> list[str]:
        """Apply provider delivery statuses; hold those whose message is not known yet.

        Returns per status: "applied", "held", "stale" (did not move forward), or
        "duplicate" (already held: a redelivery).
        """

        def work(uow: _UnitOfWork) -> list[str]:
            self._preload_batch(uow, commands)
            return [self._status_one(uow, c) for c in commands]

        return self._batch(work)

    def _status_one(self, uow: _UnitOfWork, command: RecordStatus) -> str:
        st = command.status
        ref_id = message_ref_id_for(command.tenant_id, command.channel, st.provider_message_id)
        ref = uow.get(MessageRef, ref_id)
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
            reconciled = self._reconcile(uow, command, ref)
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
        conversation = self._require(uow, Conversation, ref.conversation_id)
        return _apply_status(
            conversation, ref.outbound_id, st.status.value, st.at, st.error_code, st.error_title
        )

    def _reconcile(self, uow: _UnitOfWork, command: RecordStatus, ref: MessageRef) -> str | None:
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
            or conversation.outbound.get(outbound_id) != Delivery.QUEUED.value
        ):
            return None
        st = command.status
        conversation.mark_sent(outbound_id=outbound_id, provider_message_id=st.provider_message_id)
        self._link_sent(uow, conversation, outbound_id, st.provider_message_id, ref)
        return _apply_status(
            conversation, outbound_id, st.status.value, st.at, st.error_code, st.error_title
        )

    # --------------------------------------------------------------- outbound

    def mark_sent(self, conversation_id: UUID, outbound_id: str, provider_message_id: str) -> None:
        """The gateway accepted the message; statuses held for its id apply now."""

        def work(uow: _UnitOfWork) -> None:
            conversation = self._require(uow, Conversation, conversation_id)
            try:
                conversation.mark_sent(
                    outbound_id=outbound_id, provider_message_id=provider_message_id
                )
            except StaleStatus:
                return
            ref_id = message_ref_id_for(
                conversation.tenant_id, conversation.channel, provider_message_id
            )
            self._link_sent(
                uow, conversation, outbound_id, provider_message_id, uow.get(MessageRef, ref_id)
            )

        self._retrying(work)

    @staticmethod
    def _link_sent(
        uow: _UnitOfWork,
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
            _apply_status(
                conversation,
                outbound_id,
                held["status"],
                held["at"],
                held["code"],
                held["title"],
            )

    def record_send_attempt(self, conversation_id: UUID, outbound_id: str, at: datetime) -> int:
        """Record, before the gateway call, that the message is being sent; the attempt number.

        Refused (StaleStatus, InvalidTransition) when the message is no longer queued or
        the send-time gate closed: a concurrent writer changed the conversation first.
        """

        def work(uow: _UnitOfWork) -> int:
            conversation = self._require(uow, Conversation, conversation_id)
            return conversation.record_send_attempt(outbound_id=outbound_id, at=at)

        return self._retrying(work)

    def retry_outbound(
        self, conversation_id: UUID, outbound_id: str, *, by: str, now: datetime | None = None
    ) -> None:
        """Queue a failed message again; the dispatcher sends it (the domain decides if it may)."""
        when = now or utcnow()
        self._on_conversation(
            conversation_id,
            lambda c: c.retry_outbound(outbound_id=outbound_id, by=by, now=when),
        )

    def failed_outbounds(
        self, tenant_id: UUID | None = None, now: datetime | None = None
    ) -> list[FailedOutbound]:
        """Outbound messages failed for good (the dead letters), oldest first.

        Read from the event store, the authority, not from a read model that may lag.
        """
        when = now or utcnow()
        # The class the @event decorator made (mypy does not see it as an attribute).
        topic = get_topic(vars(Conversation)["OutboundMessageFailed"])
        latest: dict[tuple[UUID, str], datetime] = {}
        start: int | None = None
        while True:
            page = self.recorder.select_notifications(
                start, 500, topics=[topic], inclusive_of_start=False
            )
            for notification in page:
                event: Any = self.mapper.to_domain_event(notification)
                key = (UUID(str(notification.originator_id)), str(event.outbound_id))
                latest[key] = event.timestamp
            if len(page) < 500:
                break
            start = page[-1].id
        found: list[FailedOutbound] = []
        conversations: dict[UUID, Conversation] = {}
        for (conversation_id, outbound_id), failed_at in latest.items():
            conversation = conversations.get(conversation_id)
            if conversation is None:
                conversation = conversations[conversation_id] = self.get_conversation(
                    conversation_id
                )
            if tenant_id is not None and conversation.tenant_id != tenant_id:
                continue
            if conversation.outbound.get(outbound_id) != Delivery.FAILED.value:
                continue  # retried since, and sent or failed again later
            failure = conversation.failures.get(outbound_id, {})
            found.append(
                FailedOutbound(
                    tenant_id=conversation.tenant_id,
                    conversation_id=conversation_id,
                    outbound_id=outbound_id,
                    channel=conversation.channel,
                    author=conversation.outbound_author.get(outbound_id, "system"),
                    reason=str(failure.get("reason", "")),
                    code=failure.get("code"),
                    failed_at=failed_at,
                    refusal=conversation.retry_refusal(outbound_id, when),
                )
            )
        found.sort(key=lambda f: f.failed_at)
        return found

    def mark_failed(
        self, conversation_id: UUID, outbound_id: str, reason: str, code: str | None = None
    ) -> None:
        self._on_conversation(
            conversation_id,
            lambda c: c.mark_failed(outbound_id=outbound_id, reason=reason, code=code),
        )

    def cancel_outbound(self, conversation_id: UUID, outbound_id: str, reason: str) -> None:
        self._on_conversation(
            conversation_id, lambda c: c.cancel_outbound(outbound_id=outbound_id, reason=reason)
        )

    # ------------------------------------------------------- conversation flow

    def _on_conversation(
        self, conversation_id: UUID, change: Callable[[Conversation], Any]
    ) -> None:
        def work(uow: _UnitOfWork) -> None:
            change(self._require(uow, Conversation, conversation_id))

        self._retrying(work)

    def get_conversation(self, conversation_id: UUID) -> Conversation:
        try:
            found: Aggregate = self.repository.get(conversation_id)
        except AggregateNotFoundError:
            raise InvalidInput(f"no conversation {conversation_id}") from None
        if not isinstance(found, Conversation):
            raise InvalidInput(f"{conversation_id} is not a conversation")
        return found

    def get_lead(self, lead_id: UUID) -> Lead:
        try:
            found: Aggregate = self.repository.get(lead_id)
        except AggregateNotFoundError:
            raise InvalidInput(f"no lead {lead_id}") from None
        if not isinstance(found, Lead):
            raise InvalidInput(f"{lead_id} is not a lead")
        return found

    def record_ai_reply(
        self,
        conversation_id: UUID,
        *,
        reply_to_seq: int,
        text: str,
        intent: str,
        confidence: float,
        usage: dict[str, Any] | None = None,
        score_delta: int = 0,
    ) -> str:
        """Record the AI's answer to a burst and queue it; returns the outbound id."""
        outbound_id = str(uuid4())

        def work(uow: _UnitOfWork) -> str:
            conversation = self._require(uow, Conversation, conversation_id)
            conversation.record_ai_reply(
                outbound_id=outbound_id,
                reply_to_seq=reply_to_seq,
                text=text,
                intent=intent,
                confidence=confidence,
                usage=usage,
            )
            if score_delta:
                lead = self._require(uow, Lead, conversation.lead_id)
                tenant = uow.get(Tenant, conversation.tenant_id)
                thresholds = tenant.settings["stage_thresholds"] if tenant else None
                lead.score_by(score_delta, reason=intent, thresholds=thresholds)
            return outbound_id

        return self._retrying(work)

    def apply_ai_outcome(self, conversation_id: UUID, outcome: AIOutcome) -> list[str]:
        """Record one burst's AI outcome atomically; returns the queued outbound ids.

        In one transaction: the AI's answer (or its rejection, or the fallback), the
        lead's score and stage, and on handoff the transition message then the
        handoff itself. The domain refuses a second outcome for the same burst, so a
        redelivered trigger or a crash-and-retry cannot answer twice.
        """

        def work(uow: _UnitOfWork) -> list[str]:
            conversation = self._require(uow, Conversation, conversation_id)
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
                lead = self._require(uow, Lead, conversation.lead_id)
                tenant = uow.get(Tenant, conversation.tenant_id)
                thresholds = tenant.settings["stage_thresholds"] if tenant else None
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

    def request_handoff(
        self, conversation_id: UUID, *, reason: str, summary: str | None = None
    ) -> None:
        self._on_conversation(
            conversation_id, lambda c: c.request_handoff(reason=reason, summary=summary)
        )

    def accept_handoff(self, conversation_id: UUID, *, attendant: str) -> None:
        self._on_conversation(conversation_id, lambda c: c.accept_handoff(attendant=attendant))

    def attendant_reply(self, conversation_id: UUID, *, attendant: str, text: str) -> str:
        outbound_id = str(uuid4())
        self._on_conversation(
            conversation_id,
            lambda c: c.attendant_reply(outbound_id=outbound_id, attendant=attendant, text=text),
        )
        return outbound_id

    def return_to_ai(self, conversation_id: UUID) -> None:
        self._on_conversation(conversation_id, lambda c: c.return_to_ai())

    def close_conversation(
        self, conversation_id: UUID, *, by: str, resolution: str = "resolved"
    ) -> None:
        self._on_conversation(conversation_id, lambda c: c.close(by=by, resolution=resolution))

    # ------------------------------------------------------------------ reads

    def knowledge_documents(self, tenant_id: UUID) -> list[KnowledgeDocument]:
        """The tenant's knowledge documents as last added, from its event stream."""
        latest: dict[str, KnowledgeDocument] = {}
        for event in self.events.get(tenant_id):
            if type(event).__name__ == "KnowledgeDocumentAdded":
                data: dict[str, Any] = vars(event)
                latest[data["name"]] = KnowledgeDocument(
                    data["name"], data["text"], data["originator_version"]
                )
        return list(latest.values())

    def stream(self, aggregate_id: UUID) -> list[Any]:
        """Every event of one stream, decrypted (or ERASED), oldest first."""
        return list(self.events.get(aggregate_id))

    def all_stream_ids(self) -> Iterable[UUID]:
        seen: dict[UUID, None] = {}
        for notification in self.recorder.select_notifications(start=None, limit=10**9):
            seen.setdefault(UUID(str(notification.originator_id)), None)
        return list(seen)


def _apply_status(
    conversation: Conversation,
    outbound_id: str,
    status: str,
    at: datetime,
    code: str | None,
    title: str | None,
) -> str:
    try:
        if status == "sent":
            # Our own mark_sent records "sent" together with the provider id.
            conversation.delivery(outbound_id)
            return "stale"
        if status == "delivered":
            conversation.mark_delivered(outbound_id=outbound_id, at=at)
        elif status == "read":
            conversation.mark_read(outbound_id=outbound_id, at=at)
        elif status == "failed":
            conversation.mark_failed(outbound_id=outbound_id, reason=title or "failed", code=code)
        else:
            raise InvalidInput(f"unknown status {status!r}")
    except StaleStatus:
        return "stale"
    return "applied"


def utcnow() -> datetime:
    return datetime.now(UTC)

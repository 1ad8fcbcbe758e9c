"""Conversation and lead commands of the attendants.

Take over (assign), transfer, reply, notes, labels, give back to the AI, close, reopen,
move a lead's stage; and the steps of the automatic assignment and the inactivity rule
(`urbana.application.assignment` decides when to run them). `by` and `attendant` are
user ids as strings; each command loads, calls one domain method, and saves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid4, uuid5

from urbana.application.ports import SystemClock
from urbana.application.unit_of_work import StoreApp, UnitOfWork
from urbana.domain.attendance import expand_shortcuts, route_handoff
from urbana.domain.conversation import Conversation, Status
from urbana.domain.errors import InvalidInput
from urbana.domain.hours import expectation
from urbana.domain.lead import Lead, Stage
from urbana.domain.templates import WINDOW_CHANNELS, window_applies
from urbana.domain.tenant import Tenant, TenantSettings


def _request_id(conversation_id: UUID, name: str, idempotency_key: str | None) -> str:
    """The id of what a request adds to a conversation (`name`: what, and whose).

    A new one each time; with an `Idempotency-Key`, the same for every retry of the
    request, which finds it instead of adding it twice.
    """
    if not idempotency_key:
        return str(uuid4())
    return str(uuid5(conversation_id, f"{name}:{idempotency_key}"))


def reply_outbound_id(conversation_id: UUID, attendant: str, idempotency_key: str | None) -> str:
    """The outbound id of an attendant's reply: the same key from the same attendant on
    the same conversation is the same message."""
    return _request_id(conversation_id, f"reply:{attendant}", idempotency_key)


def expectation_outbound_id(conversation_id: UUID, handoff: int) -> str:
    """One "when to expect a person" message per handoff, also under redelivery."""
    return str(uuid5(conversation_id, f"expectation:{handoff}"))


@dataclass(frozen=True, slots=True)
class HandoffRoute:
    """Where a waiting conversation belongs, read from its aggregate and its tenant's."""

    tenant_id: UUID
    conversation_id: UUID
    status: Status
    queue: str | None  # the queue it should wait in (None: the tenant's general queue)
    handoff: int  # the conversation's handoff count: which handoff this is
    assignee: str | None
    # The AI's last answer or a system message (the transition) may still go out; a
    # takeover now would void it.
    messages_pending: bool
    console: bool = False  # a console test: the tenant's admin is the "lead"; nobody is assigned


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

    def assign(
        self,
        conversation_id: UUID,
        *,
        assignee: str,
        by: str | None = None,
        queue: str | None = None,
    ) -> None:
        """Give the conversation to `assignee`; AlreadyAssigned when someone else holds it."""
        self._on(
            Conversation,
            conversation_id,
            lambda c: c.assign(assignee=assignee, by=by, queue=queue),
        )

    def transfer(
        self,
        conversation_id: UUID,
        *,
        by: str,
        to_user: str | None = None,
        to_queue: str | None = None,
        note: str | None = None,
        as_supervisor: bool = False,
    ) -> str | None:
        """Transfer to another attendant or queue; returns the note's id when there is one."""
        note_id = str(uuid4()) if note is not None else None
        self._on(
            Conversation,
            conversation_id,
            lambda c: c.transfer(
                by=by,
                to_user=to_user,
                to_queue=to_queue,
                note_id=note_id,
                note=note,
                as_supervisor=as_supervisor,
            ),
        )
        return note_id

    def add_note(
        self,
        conversation_id: UUID,
        *,
        author: str,
        text: str,
        idempotency_key: str | None = None,
    ) -> str:
        """Add a private note (never sent to the lead); returns its id.

        With an `idempotency_key`, a retry of the same request appends nothing and
        returns the same id.
        """
        note_id = _request_id(conversation_id, f"note:{author}", idempotency_key)

        def work(uow: UnitOfWork) -> str:
            conversation = uow.require(Conversation, conversation_id)
            if note_id not in conversation.note_ids:
                conversation.add_note(note_id=note_id, author=author, text=text)
            return note_id

        return self._retrying(work)

    def change_labels(
        self,
        conversation_id: UUID,
        *,
        by: str,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> tuple[str, ...]:
        """Add and remove labels; returns the conversation's labels afterwards."""
        to_add, to_remove = list(add), list(remove)

        def work(uow: UnitOfWork) -> tuple[str, ...]:
            conversation = uow.require(Conversation, conversation_id)
            conversation.change_labels(by=by, add=to_add, remove=to_remove)
            return conversation.labels

        return self._retrying(work)

    def attendant_reply(
        self,
        conversation_id: UUID,
        *,
        attendant: str,
        text: str,
        idempotency_key: str | None = None,
        now: datetime | None = None,
        as_supervisor: bool = False,
    ) -> str:
        """Queue an attendant's answer, `/shortcuts` expanded; returns its outbound id.

        With an `idempotency_key`, a retry of the same request appends nothing and
        returns the same id. Outside WhatsApp's 24-hour window: TemplateRequired.
        """
        outbound_id = reply_outbound_id(conversation_id, attendant, idempotency_key)
        at = now or SystemClock().now()

        def work(uow: UnitOfWork) -> str:
            conversation = uow.require(Conversation, conversation_id)
            if outbound_id in conversation.outbound:
                return outbound_id  # the retry of a reply already queued
            tenant = uow.require(Tenant, conversation.tenant_id)
            conversation.attendant_reply(
                outbound_id=outbound_id,
                attendant=attendant,
                text=expand_shortcuts(text, tenant.canned),
                now=at,
                as_supervisor=as_supervisor,
                window_applies=window_applies(
                    conversation.channel, tenant.settings.window_exempt_channels
                ),
            )
            return outbound_id

        return self._retrying(work)

    def send_template(
        self,
        conversation_id: UUID,
        *,
        attendant: str,
        name: str,
        values: Mapping[str, str],
        idempotency_key: str | None = None,
        as_supervisor: bool = False,
    ) -> str:
        """Queue one of the tenant's approved templates (any time, on the Cloud API);
        returns its outbound id. `idempotency_key` as for `attendant_reply`."""
        outbound_id = _request_id(conversation_id, f"reply:{attendant}:template", idempotency_key)

        def work(uow: UnitOfWork) -> str:
            conversation = uow.require(Conversation, conversation_id)
            if outbound_id in conversation.outbound:
                return outbound_id
            if conversation.channel not in WINDOW_CHANNELS:
                raise InvalidInput(
                    f"templates are a Cloud API feature; this conversation is on "
                    f"{conversation.channel}"
                )
            template = uow.require(Tenant, conversation.tenant_id).templates.get(name)
            if template is None:
                raise InvalidInput(f"no template {name!r} in this tenant")
            conversation.send_template(
                outbound_id=outbound_id,
                attendant=attendant,
                template=template,
                values=values,
                as_supervisor=as_supervisor,
            )
            return outbound_id

        return self._retrying(work)

    def return_to_ai(self, conversation_id: UUID, *, by: str | None = None) -> None:
        self._on(Conversation, conversation_id, lambda c: c.return_to_ai(by=by))

    def close_conversation(
        self, conversation_id: UUID, *, by: str, resolution: str = "resolved"
    ) -> None:
        self._on(Conversation, conversation_id, lambda c: c.close(by=by, resolution=resolution))

    def reopen_conversation(self, conversation_id: UUID, *, by: str) -> None:
        self._on(Conversation, conversation_id, lambda c: c.reopen(by=by))

    def move_lead_stage(
        self, lead_id: UUID, *, stage: Stage, by: str, reason: str = "moved by attendant"
    ) -> None:
        """A user moves the lead in the pipeline (forward or back)."""
        self._on(Lead, lead_id, lambda lead: lead.move_to(stage, reason, by=by))

    # ------------------------------------------------- automatic assignment steps

    def handoff_route(self, conversation_id: UUID) -> HandoffRoute:
        """Where the conversation's handoff belongs (its intent, the tenant's rules)."""
        conversation = self.get(Conversation, conversation_id)
        settings = self._settings(conversation.tenant_id)
        queue = conversation.queue
        if queue is None:
            queue = route_handoff(
                intent=conversation.last_intent,
                reason=conversation.handoff_reason or "",
                queues=self.get(Tenant, conversation.tenant_id).queues,
                rules=settings.handoff_queues,
                default=settings.default_queue,
            )
        return HandoffRoute(
            tenant_id=conversation.tenant_id,
            conversation_id=conversation_id,
            status=conversation.status,
            queue=queue,
            handoff=conversation.handoffs,
            assignee=conversation.assignee,
            messages_pending=any(
                message.author in ("ai", "system") and conversation.may_send(outbound_id)
                for outbound_id, message in conversation.outbound.items()
            ),
            console=conversation.is_console,
        )

    def wait_in_queue(self, conversation_id: UUID, *, queue: str | None, now: datetime) -> bool:
        """Nobody can take it now: put it in `queue` and tell the lead when to expect a person.

        Once per handoff: a second call for the same handoff (a redelivered event)
        appends nothing. False when it no longer waits (someone took it meanwhile).
        """

        def work(uow: UnitOfWork) -> bool:
            conversation = uow.require(Conversation, conversation_id)
            if conversation.status is not Status.WAITING_HUMAN:
                return False
            outbound_id = expectation_outbound_id(conversation_id, conversation.handoffs)
            if outbound_id in conversation.outbound:
                return True
            tenant = uow.require(Tenant, conversation.tenant_id)
            if queue is not None and queue != conversation.queue:
                conversation.transfer(by="system", to_queue=queue)
            settings = tenant.settings
            conversation.queue_system_message(
                outbound_id=outbound_id,
                text=expectation(settings.hours, now, overrides=settings.bot_messages),
            )
            return True

        return self._retrying(work)

    def release_inactive(self, conversation_id: UUID, *, now: datetime) -> str | None:
        """Back to its queue if its attendant is past the tenant's limit; the attendant, if so."""

        def work(uow: UnitOfWork) -> str | None:
            conversation = uow.require(Conversation, conversation_id)
            limit_s = uow.require(Tenant, conversation.tenant_id).settings.inactivity_limit_s
            limit = timedelta(seconds=limit_s)
            if limit_s <= 0 or not conversation.is_inactive(now, limit):
                return None
            attendant = conversation.assignee
            conversation.release_inactive(now=now, limit=limit)
            return attendant

        return self._retrying(work)

    def _settings(self, tenant_id: UUID) -> TenantSettings:
        return self.get(Tenant, tenant_id).settings

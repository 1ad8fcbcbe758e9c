"""The Conversation aggregate and its state machine.

See docs/architecture.md, The conversation state machine.

    ai -> waiting_human -> human -> ai | closed;  closed -> ai on a new inbound message
    waiting_human <-> human by assignment, transfer and the inactivity rule

Public methods check invariants and raise a `DomainError` before anything is
recorded; the `@event` methods below them only change state, so replaying history
never re-checks rules that held when the facts happened.

The aggregate's commands live in three parts: the lead's and the AI's here, the
attendants' in `HumanHandling` (domain/handling.py), the outbound messages' in
`OutboundMessages` (domain/outbound.py). Every event stays on this class: a stored
event's topic names it (`urbana.domain.conversation:Conversation.MessageReceived`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from urbana.domain.channels import CHANNELS, CONSOLE
from urbana.domain.contacts import conversation_id_for
from urbana.domain.conversation_pii import declare_personal_fields
from urbana.domain.errors import (
    AIReplyNotAllowed,
    BurstAlreadyAnswered,
    InvalidInput,
    InvalidTransition,
)
from urbana.domain.events import (
    TenantScoped,
    added_in_v3,
    changed_in,
    defaults,
    ids_were_clear,
    nobody_acted,
    tenant_added_in_v2,
)
from urbana.domain.handling import MAX_LABELS, HumanHandling
from urbana.domain.outbound import Delivery, OutboundMessage, OutboundMessages, TemplateSend
from urbana.domain.status import Status
from urbana.domain.text import MAX_TEXT, check_text

# Status and the limits stay importable from here, where their users look for them.
__all__ = ["HISTORY_SIZE", "MAX_LABELS", "MAX_TEXT", "SERVICE_WINDOW", "Conversation", "Status"]

SERVICE_WINDOW = timedelta(hours=24)
HISTORY_SIZE = 20  # recent messages kept on the aggregate for the AI's context


class Conversation(HumanHandling, OutboundMessages, TenantScoped):
    """One lead's thread with one tenant on one channel."""

    @staticmethod
    def create_id(tenant_id: UUID, channel: str, contact: str, **_: Any) -> UUID:
        return conversation_id_for(tenant_id, channel, contact)

    @classmethod
    def start(
        cls, tenant_id: UUID, channel: str, contact: str, lead_id: UUID, generation: int = 0
    ) -> Conversation:
        """A new conversation; `generation` is its lead's (see `Lead`, erasure)."""
        if channel not in CHANNELS:
            raise InvalidInput(f"unknown channel {channel!r}")
        # As for `Lead.create`: the generation is not a fact of the event, so the id is given.
        fields = dict(tenant_id=tenant_id, channel=channel, contact=contact, lead_id=lead_id)
        conversation_id = conversation_id_for(tenant_id, channel, contact, generation)
        return cls._create(cls.ConversationStarted, id=conversation_id, **fields)  # type: ignore[attr-defined]

    @event("ConversationStarted")
    def __init__(self, tenant_id: UUID, channel: str, contact: str, lead_id: UUID) -> None:
        self.tenant_id = tenant_id
        self.channel = channel
        self.contact = contact  # the address the gateway knows (to send back to)
        self.lead_id = lead_id
        self.status = Status.AI
        self.assignee: str | None = None
        self.inbound_seq = 0  # number of inbound messages so far
        self.answered_seq = 0  # last inbound seq the AI (or a human stretch) covered
        self.last_inbound_at: datetime | None = None
        self.history: list[dict[str, Any]] = []
        self.outbound: dict[str, OutboundMessage] = {}  # by outbound id, in queued order
        self.human_stretch_ended_seq: int | None = None
        self.handoffs = 0
        self.takeovers = 0  # grows when a human takes over: AI messages queued before are void
        # The attendants' queue it is in while with them (None: the tenant's general one).
        self.queue: str | None = None
        self.labels: tuple[str, ...] = ()
        self.note_ids: frozenset[str] = frozenset()
        self.last_intent: str | None = None  # the AI's last classification (routes handoffs)
        self.handoff_reason: str | None = None  # why it last went to a human
        # Since when the lead waits for its attendant's answer (the inactivity rule).
        self.awaiting_attendant_since: datetime | None = None

    # ------------------------------------------------------------------ queries

    @property
    def is_console(self) -> bool:
        """A test conversation of the console channel: no gateway, no KPIs, no attendant."""
        return self.channel == CONSOLE

    @property
    def pending_burst(self) -> int:
        """Inbound messages not yet answered (0 = nothing to answer)."""
        return self.inbound_seq - self.answered_seq

    def within_service_window(self, now: datetime) -> bool:
        """WhatsApp's 24-hour customer-service window for free-form messages."""
        return self.last_inbound_at is not None and now - self.last_inbound_at < SERVICE_WINDOW

    def service_window_ends(self) -> datetime | None:
        """When free-form messages stop being allowed (None: the lead never wrote)."""
        return None if self.last_inbound_at is None else self.last_inbound_at + SERVICE_WINDOW

    # ----------------------------------------------------------------- commands

    def receive(
        self,
        *,
        provider_message_id: str,
        kind: str,
        sent_at: datetime,
        text: str | None = None,
        contact_name: str | None = None,
        media_url: str | None = None,
        media_mime: str | None = None,
        reply_to: str | None = None,
        referral: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        contact: str | None = None,
    ) -> None:
        """Record an inbound message; reopens a closed conversation in AI mode."""
        if not provider_message_id:
            raise InvalidInput("provider message id is required")
        if not kind:
            raise InvalidInput("message kind is required")
        if sent_at.tzinfo is None:
            raise InvalidInput("sent_at must be timezone-aware")
        check_text(text, required=kind == "text")
        if self.status is Status.CLOSED:
            self._reopened(by=None)
        self._message_received(
            lead_id=self.lead_id,
            provider_message_id=provider_message_id,
            seq=self.inbound_seq + 1,
            kind=kind,
            sent_at=sent_at,
            text=text,
            contact_name=contact_name,
            media_url=media_url,
            media_mime=media_mime,
            reply_to=reply_to,
            referral=dict(referral) if referral else None,
            extra=dict(extra) if extra else None,
            contact=contact if contact and contact != self.contact else None,
        )

    def record_ai_reply(
        self,
        *,
        outbound_id: str,
        reply_to_seq: int,
        text: str,
        intent: str,
        confidence: float,
        usage: dict[str, Any] | None = None,
        passages: list[dict[str, Any]] | None = None,
    ) -> None:
        """The AI answered the burst up to `reply_to_seq`: record it and queue it.

        `passages`: the knowledge it was given (document id, chunk, title, similarity),
        so anyone can see later why it answered what it did.
        """
        self._check_answerable(reply_to_seq)
        if not 0.0 <= confidence <= 1.0:
            raise InvalidInput("confidence must be within [0, 1]")
        check_text(text, required=True)
        self._check_new_outbound(outbound_id)
        self._ai_reply_generated(
            lead_id=self.lead_id,
            reply_to_seq=reply_to_seq,
            text=text,
            intent=intent,
            confidence=confidence,
            usage=usage or {},
            passages=[dict(p) for p in passages or ()],
        )
        self._queue(outbound_id, text, "ai")

    def reject_ai_reply(self, *, reply_to_seq: int, text: str, reason: str) -> None:
        """The reply guard refused the AI's answer to this burst."""
        self._check_answerable(reply_to_seq)
        self._ai_reply_rejected(
            lead_id=self.lead_id, reply_to_seq=reply_to_seq, text=text, reason=reason
        )

    def queue_system_message(self, *, outbound_id: str, text: str) -> None:
        """A fixed message of the engine's own (handoff notice, fallback answer)."""
        if self.status in (Status.HUMAN, Status.CLOSED):
            raise InvalidTransition(f"conversation is {self.status.value}")
        check_text(text, required=True)
        self._check_new_outbound(outbound_id)
        self._queue(outbound_id, text, "system")

    def request_handoff(self, *, reason: str, summary: str | None = None) -> None:
        """Hand the conversation to the attendants: the AI goes silent."""
        if self.status is not Status.AI:
            raise InvalidTransition(f"cannot hand off a conversation in {self.status.value}")
        if not reason:
            raise InvalidInput("handoff reason is required")
        self._handoff_requested(lead_id=self.lead_id, reason=reason, summary=summary)

    # ------------------------------------------------------------------ helpers

    def _check_answerable(self, reply_to_seq: int) -> None:
        """The AI owns the conversation, and inbound message `reply_to_seq` is unanswered."""
        if self.status is not Status.AI:
            raise AIReplyNotAllowed(f"conversation is {self.status.value}")
        if reply_to_seq <= self.answered_seq:
            raise BurstAlreadyAnswered(f"burst up to {reply_to_seq} already answered")
        if reply_to_seq > self.inbound_seq:
            raise InvalidInput(f"no inbound message {reply_to_seq}")

    def _no_human_owns_it(self) -> bool:
        """The AI may speak: it owns the thread, or is only waiting for a human."""
        return self.status in (Status.AI, Status.WAITING_HUMAN)

    def _remember(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        del self.history[:-HISTORY_SIZE]

    # ------------------------------------------------------------------- events

    @event("MessageReceived")
    def _message_received(
        self,
        lead_id: UUID,
        provider_message_id: str,
        seq: int,
        kind: str,
        sent_at: datetime,
        text: str | None,
        contact_name: str | None,
        media_url: str | None,
        media_mime: str | None,
        reply_to: str | None,
        referral: dict[str, str] | None,
        extra: dict[str, Any] | None,
        contact: str | None,
    ) -> None:
        self.inbound_seq = seq
        if self.last_inbound_at is None or sent_at > self.last_inbound_at:
            self.last_inbound_at = sent_at
        if contact:
            self.contact = contact
        if self.status is Status.HUMAN and self.awaiting_attendant_since is None:
            self.awaiting_attendant_since = sent_at
        self._remember({"role": "lead", "seq": seq, "kind": kind, "text": text})

    @event("AIReplyGenerated")
    def _ai_reply_generated(
        self,
        lead_id: UUID,
        reply_to_seq: int,
        text: str,
        intent: str,
        confidence: float,
        usage: dict[str, Any],
        passages: list[dict[str, Any]],
    ) -> None:
        self.answered_seq = reply_to_seq
        self.last_intent = intent

    @event("AIReplyRejected")
    def _ai_reply_rejected(self, lead_id: UUID, reply_to_seq: int, text: str, reason: str) -> None:
        self.answered_seq = reply_to_seq

    @event("OutboundMessageQueued")
    def _outbound_queued(
        self,
        lead_id: UUID,
        outbound_id: str,
        text: str | None,
        author: str,
        attendant: str | None,
        external_provider_id: str | None,
        template: dict[str, Any] | None,
    ) -> None:
        self.outbound[outbound_id] = OutboundMessage(
            author=author,
            epoch=self.takeovers,
            delivery=Delivery.SENT if external_provider_id else Delivery.QUEUED,
            text=None if external_provider_id else text,
            template=TemplateSend.of(template),
        )
        if author == "human":
            self.awaiting_attendant_since = None
        self._remember({"role": author, "outbound_id": outbound_id, "text": text})

    @event("OutboundSendAttempted")
    def _send_attempted(self, outbound_id: str, attempt: int, at: datetime) -> None:
        self.outbound[outbound_id] = self.outbound[outbound_id].attempted(attempt, at)

    @event("OutboundMessageSent")
    def _outbound_sent(self, outbound_id: str, provider_message_id: str) -> None:
        self.outbound[outbound_id] = self.outbound[outbound_id].sent()

    @event("OutboundMessageFailed")
    def _outbound_failed(self, outbound_id: str, reason: str, code: str | None) -> None:
        self.outbound[outbound_id] = self.outbound[outbound_id].failed(reason, code)

    @event("OutboundMessageRetried")
    def _outbound_retried(self, outbound_id: str, by: str, previous_reason: str) -> None:
        self.outbound[outbound_id] = self.outbound[outbound_id].retried()

    @event("OutboundMessageCancelled")
    def _outbound_cancelled(self, outbound_id: str, reason: str) -> None:
        self.outbound[outbound_id] = self.outbound[outbound_id].cancelled()

    @event("MessageDelivered")
    def _delivered(self, outbound_id: str, at: datetime) -> None:
        self.outbound[outbound_id] = self.outbound[outbound_id].moved(Delivery.DELIVERED)

    @event("MessageRead")
    def _read(self, outbound_id: str, at: datetime) -> None:
        self.outbound[outbound_id] = self.outbound[outbound_id].moved(Delivery.READ)

    @event("HandoffRequested")
    def _handoff_requested(self, lead_id: UUID, reason: str, summary: str | None) -> None:
        self.status = Status.WAITING_HUMAN
        self.handoff_reason = reason
        self.handoffs += 1

    @event("HandoffAccepted")
    def _handoff_accepted(self, attendant: str) -> None:
        self.status = Status.HUMAN
        self.assignee = attendant
        self.takeovers += 1

    class ConversationAssigned(TenantScoped.Event):
        assignee: str
        by: str | None  # who assigned it (None: the automatic assignment)
        queue: str | None

        def apply(self, aggregate: Any) -> None:
            conv: Conversation = aggregate
            conv._held_by(self.assignee, self.timestamp)
            conv.queue = self.queue

    class ConversationTransferred(TenantScoped.Event):
        to_user: str | None
        to_queue: str | None
        by: str
        note_id: str | None

        def apply(self, aggregate: Any) -> None:
            conv: Conversation = aggregate
            if self.to_queue is not None:
                conv.queue = self.to_queue
            if self.to_user is not None:
                conv._held_by(self.to_user, self.timestamp)
            else:
                conv._back_in_queue()

    def _held_by(self, user: str, since: datetime) -> None:
        if self.status is not Status.HUMAN:
            self.takeovers += 1
        self.status = Status.HUMAN
        self.assignee = user
        self.awaiting_attendant_since = since

    def _back_in_queue(self) -> None:
        self.status = Status.WAITING_HUMAN
        self.assignee = None
        self.awaiting_attendant_since = None

    @event("NoteAdded")
    def _note_added(self, lead_id: UUID, note_id: str, author: str, text: str) -> None:
        self.note_ids = self.note_ids | {note_id}

    @event("LabelsChanged")
    def _labels_changed(self, added: list[str], removed: list[str], by: str) -> None:
        self.labels = tuple(sorted((set(self.labels) | set(added)) - set(removed)))

    @event("ReturnedToQueue")
    def _returned_to_queue(self, queue: str | None, reason: str) -> None:
        self._back_in_queue()

    @event("ReturnedToAI")
    def _returned_to_ai(self, answered_seq: int, by: str | None) -> None:
        self.status = Status.AI
        self.assignee = None
        self.queue = None  # its next handoff is routed afresh
        self.awaiting_attendant_since = None
        self.answered_seq = answered_seq
        self.human_stretch_ended_seq = answered_seq
        self._remember({"role": "marker", "text": "human_stretch_ended", "seq": answered_seq})

    @event("ConversationClosed")
    def _closed(self, by: str, resolution: str) -> None:
        self.status = Status.CLOSED
        self.assignee = None
        self.queue = None
        self.awaiting_attendant_since = None
        self.answered_seq = self.inbound_seq

    @event("ConversationReopened")
    def _reopened(self, by: str | None) -> None:
        self.status = Status.AI


# Added after version 2, with `tenant_id` from their first version.
BORN = ("ConversationAssigned", "ConversationTransferred", "NoteAdded", "LabelsChanged")
tenant_added_in_v2(Conversation, born_with_it=(*BORN, "ReturnedToQueue"))
# Version 3: who acted (`by`), the template of an outbound message, the AI's passages.
added_in_v3(Conversation, {"ReturnedToAI": nobody_acted, "ConversationReopened": nobody_acted})
added_in_v3(Conversation, {"OutboundMessageQueued": defaults(template=None)})
added_in_v3(Conversation, {"AIReplyGenerated": defaults(passages=[])})
# Then: provider message ids (and `ext:` outbound ids) recorded as keyed digests.
changed_in(
    3, Conversation, {"MessageReceived": ids_were_clear, "OutboundMessageSent": ids_were_clear}
)
changed_in(4, Conversation, {"OutboundMessageQueued": ids_were_clear})
declare_personal_fields()

"""The outbound messages of a conversation: one record each, and the commands on them.

Statuses only move forward (queued < sent < delivered < read); failed and cancelled
are final, except that a failed message may be queued again by an operator. Each
record is a frozen value: an event replaces it, so a copy of the conversation's
state never shares anything that changes.

`OutboundMessages` holds the conversation's commands about its outbound messages
(the send-time gate, attempts, statuses, retries); `Conversation` inherits them.
Their events are recorded by the `@event` methods of `Conversation`, where the
event-sourcing library requires them to be.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from uuid import UUID

from urbana.domain.errors import InvalidInput, InvalidTransition, StaleStatus, UnknownMessage
from urbana.domain.status import Status
from urbana.domain.templates import Template


class Delivery(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    CANCELLED = "cancelled"


_RANK = {Delivery.QUEUED: 0, Delivery.SENT: 1, Delivery.DELIVERED: 2, Delivery.READ: 3}
_FINAL = {Delivery.FAILED, Delivery.CANCELLED}
OUT = frozenset({Delivery.SENT, Delivery.DELIVERED, Delivery.READ})  # the gateway took it


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an outbound message failed for good."""

    reason: str
    code: str | None
    after_send: bool  # the gateway took it, then reported it undeliverable


@dataclass(frozen=True, slots=True)
class TemplateSend:
    """An approved template to send (see domain.templates): its name, language, values."""

    name: str
    language: str
    values: tuple[str, ...]

    @classmethod
    def of(cls, data: object) -> TemplateSend | None:
        """From an event's `template` field (None, or "[erased]" once its key is gone)."""
        if not isinstance(data, dict):
            return None
        return cls(str(data["name"]), str(data["language"]), tuple(data.get("values", ())))

    def as_event(self) -> dict[str, Any]:
        return {"name": self.name, "language": self.language, "values": list(self.values)}


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One message to the lead: who wrote it, where it is, and how sending it went.

    Send attempts are recorded before each gateway call, so a dispatcher that
    restarts knows an attempt may have reached the gateway; they are forgotten once
    the message is sent, cancelled or failed (a retried message starts afresh).
    """

    author: str  # ai | human | system
    epoch: int  # the conversation's takeovers when it was queued
    delivery: Delivery
    text: str | None  # what the dispatcher sends; None once nothing is left to send
    attempts: int = 0
    first_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    failure: Failure | None = None
    template: TemplateSend | None = None  # sent as an approved template (any time)

    @property
    def queued(self) -> bool:
        return self.delivery is Delivery.QUEUED

    def check_queued(self, outbound_id: str) -> None:
        if not self.queued:
            raise StaleStatus(f"{outbound_id} is already {self.delivery.value}")

    def check_forward(self, outbound_id: str, to: Delivery) -> None:
        """StaleStatus unless `to` moves the message forward."""
        if self.delivery in _FINAL or _RANK[self.delivery] >= _RANK[to]:
            raise StaleStatus(f"{outbound_id} is {self.delivery.value}, not moving to {to.value}")

    def check_may_fail(self, outbound_id: str) -> None:
        if self.delivery in _FINAL or self.delivery is Delivery.READ:
            raise StaleStatus(f"{outbound_id} is already {self.delivery.value}")

    # The changes the conversation's events make (they check nothing).

    def moved(self, to: Delivery) -> OutboundMessage:
        return replace(self, delivery=to)

    def attempted(self, attempt: int, at: datetime) -> OutboundMessage:
        return replace(
            self, attempts=attempt, first_attempt_at=self.first_attempt_at or at, last_attempt_at=at
        )

    def sent(self) -> OutboundMessage:
        return self._settled(Delivery.SENT, text=None)

    def failed(self, reason: str, code: str | None) -> OutboundMessage:
        after_send = not self.queued
        # A message the gateway never took keeps its text, so it may be sent again.
        return replace(
            self._settled(Delivery.FAILED, text=None if after_send else self.text),
            failure=Failure(reason=reason, code=code, after_send=after_send),
        )

    def retried(self) -> OutboundMessage:
        return replace(self, delivery=Delivery.QUEUED, failure=None)

    def cancelled(self) -> OutboundMessage:
        return self._settled(Delivery.CANCELLED, text=None)

    def _settled(self, to: Delivery, *, text: str | None) -> OutboundMessage:
        return replace(
            self,
            delivery=to,
            text=text,
            attempts=0,
            first_attempt_at=None,
            last_attempt_at=None,
        )


class OutboundQueue:
    """How both halves of `Conversation` (`OutboundMessages`, `HumanHandling`) record
    an outbound message."""

    if TYPE_CHECKING:  # provided by Conversation
        lead_id: UUID

        def _outbound_queued(
            self,
            lead_id: UUID,
            outbound_id: str,
            text: str | None,
            author: str,
            attendant: str | None,
            external_provider_id: str | None,
            template: dict[str, Any] | None,
        ) -> None: ...

    def _queue(
        self,
        outbound_id: str,
        text: str | None,
        author: str,
        attendant: str | None = None,
        template: dict[str, Any] | None = None,
        external_provider_id: str | None = None,
    ) -> None:
        """An outbound message; `external_provider_id`: one the provider already sent."""
        self._outbound_queued(
            lead_id=self.lead_id,
            outbound_id=outbound_id,
            text=text,
            author=author,
            attendant=attendant,
            external_provider_id=external_provider_id,
            template=template,
        )


class OutboundMessages(OutboundQueue):
    """The outbound half of `Conversation` (see the module docstring)."""

    if TYPE_CHECKING:  # provided by Conversation
        outbound: dict[str, OutboundMessage]
        takeovers: int
        status: Status

        def within_service_window(self, now: datetime) -> bool: ...
        def _no_human_owns_it(self) -> bool: ...
        def _outbound_sent(self, outbound_id: str, provider_message_id: str) -> None: ...
        def _outbound_failed(self, outbound_id: str, reason: str, code: str | None) -> None: ...
        def _outbound_cancelled(self, outbound_id: str, reason: str) -> None: ...
        def _outbound_retried(self, outbound_id: str, by: str, previous_reason: str) -> None: ...
        def _send_attempted(self, outbound_id: str, attempt: int, at: datetime) -> None: ...
        def _delivered(self, outbound_id: str, at: datetime) -> None: ...
        def _read(self, outbound_id: str, at: datetime) -> None: ...

    # ------------------------------------------------------------------ queries

    def message(self, outbound_id: str) -> OutboundMessage:
        """The record of one outbound message; UnknownMessage if it is not ours."""
        try:
            return self.outbound[outbound_id]
        except KeyError:
            raise UnknownMessage(outbound_id) from None

    def delivery(self, outbound_id: str) -> Delivery:
        return self.message(outbound_id).delivery

    def is_queued(self, outbound_id: str) -> bool:
        """Whether this is one of our messages, still waiting to be sent."""
        found = self.outbound.get(outbound_id)
        return found is not None and found.queued

    def window_allows(self, outbound_id: str, now: datetime, *, window_applies: bool) -> bool:
        """WhatsApp's 24-hour window lets this message go now: a template goes any time, a
        free-form message within the window (where it applies: see domain.templates)."""
        if self.message(outbound_id).template is not None or not window_applies:
            return True
        return self.within_service_window(now)

    def may_send(self, outbound_id: str) -> bool:
        """The send-time gate: an AI message is sent only while the AI owns the thread."""
        return self.message(outbound_id).queued and self._gate_allows(outbound_id)

    # ----------------------------------------------------------------- commands

    def queue_system_template(
        self, *, outbound_id: str, template: Template, values: Mapping[str, str]
    ) -> None:
        """An approved template of the engine's own (a follow-up after the 24-hour window)."""
        if self.status in (Status.HUMAN, Status.CLOSED):
            raise InvalidTransition(f"conversation is {self.status.value}")
        self._check_new_outbound(outbound_id)
        ordered, text = template.fill(values)
        send = TemplateSend(template.name, template.language, tuple(ordered))
        self._queue(outbound_id, text, "system", template=send.as_event())

    def mark_sent(self, *, outbound_id: str, provider_message_id: str) -> None:
        self.message(outbound_id).check_queued(outbound_id)
        self._outbound_sent(outbound_id=outbound_id, provider_message_id=provider_message_id)

    def mark_failed(self, *, outbound_id: str, reason: str, code: str | None = None) -> None:
        self.message(outbound_id).check_may_fail(outbound_id)
        self._outbound_failed(outbound_id=outbound_id, reason=reason, code=code)

    def cancel_outbound(self, *, outbound_id: str, reason: str) -> None:
        self.message(outbound_id).check_queued(outbound_id)
        self._outbound_cancelled(outbound_id=outbound_id, reason=reason)

    def record_send_attempt(self, *, outbound_id: str, at: datetime) -> int:
        """Note that the message is about to go to the gateway; returns the attempt number.

        Recorded before the call: after a crash or a timeout the outcome is unknown, and
        this record tells the next dispatcher to reconcile before sending again.
        """
        message = self.message(outbound_id)
        message.check_queued(outbound_id)
        if not self.may_send(outbound_id):
            raise InvalidTransition(f"{outbound_id} may no longer be sent")
        if at.tzinfo is None:
            raise InvalidInput("at must be timezone-aware")
        attempt = message.attempts + 1
        self._send_attempted(outbound_id=outbound_id, attempt=attempt, at=at)
        return attempt

    def retry_refusal(
        self, outbound_id: str, now: datetime, *, window_applies: bool = True
    ) -> str | None:
        """Why a failed message may not be sent again, or None when it may."""
        message = self.message(outbound_id)
        if message.delivery is not Delivery.FAILED:
            return f"it is {message.delivery.value}, not failed"
        if message.failure is not None and message.failure.after_send:
            # The gateway took it and then reported it undeliverable: sending the same
            # text again would be a second message with the same fate.
            return "the gateway accepted it and reported it undeliverable"
        if message.text is None:
            return "its text is not known"
        if not self._gate_allows(outbound_id):
            return "the conversation moved on (a human took over, or it is closed)"
        if not self.window_allows(outbound_id, now, window_applies=window_applies):
            return "outside_window"
        return None

    def retry_outbound(
        self, *, outbound_id: str, by: str, now: datetime, window_applies: bool = True
    ) -> None:
        """Queue a failed message again (an operator's or attendant's decision)."""
        if not by:
            raise InvalidInput("who retries is required")
        refusal = self.retry_refusal(outbound_id, now, window_applies=window_applies)
        if refusal is not None:
            raise InvalidTransition(f"{outbound_id} cannot be retried: {refusal}")
        failure = self.message(outbound_id).failure
        assert failure is not None  # it failed: retry_refusal said so
        self._outbound_retried(outbound_id=outbound_id, by=by, previous_reason=failure.reason)

    def mark_delivered(self, *, outbound_id: str, at: datetime) -> None:
        self.message(outbound_id).check_forward(outbound_id, Delivery.DELIVERED)
        self._delivered(outbound_id=outbound_id, at=at)

    def mark_read(self, *, outbound_id: str, at: datetime) -> None:
        self.message(outbound_id).check_forward(outbound_id, Delivery.READ)
        self._read(outbound_id=outbound_id, at=at)

    def apply_status(
        self,
        outbound_id: str,
        status: str,
        at: datetime,
        *,
        code: str | None = None,
        title: str | None = None,
    ) -> bool:
        """A gateway's delivery status for an outbound message; True if it moved it forward.

        Gateways redeliver statuses and send them out of order, so one that does not
        move the message forward is not an error. "sent" never moves it: `mark_sent`
        records that, together with the provider's id.
        """
        try:
            if status == Delivery.SENT:
                self.delivery(outbound_id)  # an unknown message is still refused
                return False
            if status == Delivery.DELIVERED:
                self.mark_delivered(outbound_id=outbound_id, at=at)
            elif status == Delivery.READ:
                self.mark_read(outbound_id=outbound_id, at=at)
            elif status == Delivery.FAILED:
                self.mark_failed(outbound_id=outbound_id, reason=title or "failed", code=code)
            else:
                raise InvalidInput(f"unknown status {status!r}")
        except StaleStatus:
            return False
        return True

    # ------------------------------------------------------------------ helpers

    def _gate_allows(self, outbound_id: str) -> bool:
        message = self.message(outbound_id)
        if message.author == "ai":
            # An answer queued before a human took over is void, even if the AI has the
            # conversation back by now; while merely waiting for a human (the AI's own
            # handoff), its last answer still goes out before the transition message.
            return self._no_human_owns_it() and message.epoch == self.takeovers
        if message.author == "system":
            return self._no_human_owns_it()
        return True

    def _check_new_outbound(self, outbound_id: str) -> None:
        if not outbound_id:
            raise InvalidInput("outbound id is required")
        if outbound_id in self.outbound:
            raise InvalidInput(f"outbound message {outbound_id} already exists")

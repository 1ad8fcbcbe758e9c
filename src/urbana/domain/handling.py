"""What the people who attend a conversation do to it: take it, answer, pass it on, annotate it.

`HumanHandling` holds the conversation's commands for its people (the takeover, by an
attendant or by the business phone writing itself; replies, assignment and transfer,
notes, labels, the inactivity rule, giving it back to the AI, closing and reopening);
`Conversation` inherits them. Their events are recorded by the `@event` methods and
event classes of `Conversation`, where they must stay: a stored event's topic names
the class that defines it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID

from urbana.domain.errors import (
    AlreadyAssigned,
    InvalidInput,
    InvalidTransition,
    NotAssignee,
    TemplateRequired,
)
from urbana.domain.outbound import OutboundQueue, TemplateSend
from urbana.domain.status import Status
from urbana.domain.templates import Template
from urbana.domain.text import check_text

MAX_LABEL = 50
MAX_LABELS = 50


def _labels(values: Iterable[str]) -> list[str]:
    """Labels as the conversation keeps them: trimmed, lower case, each once, sorted."""
    out: set[str] = set()
    for value in values:
        label = value.strip().lower()
        if not label:
            raise InvalidInput("a label is empty")
        if len(label) > MAX_LABEL:
            raise InvalidInput(f"label longer than {MAX_LABEL} characters")
        out.add(label)
    return sorted(out)


class HumanHandling(OutboundQueue):
    """The attendants' half of `Conversation` (see the module docstring)."""

    if TYPE_CHECKING:  # provided by Conversation
        ConversationAssigned: ClassVar[type[Any]]
        ConversationTransferred: ClassVar[type[Any]]
        status: Status
        assignee: str | None
        queue: str | None
        labels: tuple[str, ...]
        note_ids: frozenset[str]
        inbound_seq: int
        awaiting_attendant_since: datetime | None

        def trigger_event(self, event_class: type[Any], **kwargs: Any) -> None: ...
        def within_service_window(self, now: datetime) -> bool: ...
        def _check_new_outbound(self, outbound_id: str) -> None: ...
        def _handoff_accepted(self, attendant: str) -> None: ...
        def _note_added(self, lead_id: UUID, note_id: str, author: str, text: str) -> None: ...
        def _labels_changed(self, added: list[str], removed: list[str], by: str) -> None: ...
        def _returned_to_queue(self, queue: str | None, reason: str) -> None: ...
        def _returned_to_ai(self, answered_seq: int, by: str | None) -> None: ...
        def _closed(self, by: str, resolution: str) -> None: ...
        def _reopened(self, by: str | None) -> None: ...

    # ------------------------------------------------------------------ queries

    def is_inactive(self, now: datetime, limit: timedelta) -> bool:
        """Its attendant left the lead unanswered for `limit` or longer."""
        since = self.awaiting_attendant_since
        return self.status is Status.HUMAN and since is not None and now - since >= limit

    # ----------------------------------------------------------------- commands

    def accept_handoff(self, *, attendant: str) -> None:
        """An attendant takes the conversation (from the queue, or straight from the AI)."""
        if self.status not in (Status.AI, Status.WAITING_HUMAN):
            raise InvalidTransition(f"cannot take over a conversation in {self.status.value}")
        if not attendant:
            raise InvalidInput("attendant is required")
        self._handoff_accepted(attendant=attendant)

    def record_business_message(
        self, *, outbound_id: str, provider_message_id: str, text: str | None, sent_at: datetime
    ) -> None:
        """The business phone itself wrote (outside Urbana): a human took over."""
        if not provider_message_id:
            raise InvalidInput("provider message id is required")
        if sent_at.tzinfo is None:
            raise InvalidInput("sent_at must be timezone-aware")
        check_text(text, required=False)
        self._check_new_outbound(outbound_id)
        if self.status is Status.CLOSED:
            self._reopened(by=None)
        if self.status in (Status.AI, Status.WAITING_HUMAN):
            self._handoff_accepted(attendant="business_phone")
        self._queue(
            outbound_id,
            text,
            "human",
            attendant="business_phone",
            external_provider_id=provider_message_id,
        )

    def attendant_reply(
        self,
        *,
        outbound_id: str,
        attendant: str,
        text: str,
        now: datetime,
        as_supervisor: bool = False,
        window_applies: bool = True,
    ) -> None:
        """An attendant answers: only its holder (or a supervisor), within the 24-hour
        window where it applies (see domain.templates)."""
        if self.status is not Status.HUMAN:
            raise InvalidTransition(f"attendants reply in human mode, not {self.status.value}")
        self._check_holder(attendant, as_supervisor)
        check_text(text, required=True)
        self._check_new_outbound(outbound_id)
        if window_applies and not self.within_service_window(now):
            raise TemplateRequired("the lead has not written for 24 hours: send a template")
        self._queue(outbound_id, text, "human", attendant=attendant)

    def send_template(
        self,
        *,
        outbound_id: str,
        attendant: str,
        template: Template,
        values: Mapping[str, str],
        as_supervisor: bool = False,
    ) -> None:
        """An attendant sends an approved template: allowed outside the 24-hour window."""
        if self.status is not Status.HUMAN:
            raise InvalidTransition(f"attendants send in human mode, not {self.status.value}")
        self._check_holder(attendant, as_supervisor)
        self._check_new_outbound(outbound_id)
        ordered, text = template.fill(values)
        send = TemplateSend(template.name, template.language, tuple(ordered))
        self._queue(outbound_id, text, "human", attendant=attendant, template=send.as_event())

    def assign(self, *, assignee: str, by: str | None = None, queue: str | None = None) -> None:
        """Give the conversation to an attendant; assigning it to its holder changes nothing.

        From the AI or the queue it becomes human (the AI falls silent, its queued
        answers are void); held by someone else, it is refused: that is a transfer.
        """
        if not assignee:
            raise InvalidInput("assignee is required")
        if self.status is Status.CLOSED:
            raise InvalidTransition("cannot assign a closed conversation")
        if self.status is Status.HUMAN:
            if self.assignee == assignee:
                return
            raise AlreadyAssigned(f"conversation is held by {self.assignee}")
        self.trigger_event(
            self.ConversationAssigned, assignee=assignee, by=by, queue=queue or self.queue
        )

    def transfer(
        self,
        *,
        by: str,
        to_user: str | None = None,
        to_queue: str | None = None,
        note_id: str | None = None,
        note: str | None = None,
        as_supervisor: bool = False,
    ) -> None:
        """Hand the conversation to another attendant or queue, with an optional note.

        To a user it stays human; to a queue only, it waits there for an attendant.
        """
        to_user, to_queue = to_user or None, to_queue or None
        if not by:
            raise InvalidInput("who transfers is required")
        if not to_user and not to_queue:
            raise InvalidInput("transfer to a user or a queue")
        if self.status not in (Status.HUMAN, Status.WAITING_HUMAN):
            raise InvalidTransition(f"cannot transfer a conversation in {self.status.value}")
        self._check_holder(by, as_supervisor)
        same_queue = to_queue is None or to_queue == self.queue
        if to_user is not None and to_user == self.assignee and same_queue:
            raise InvalidTransition(f"conversation is already held by {to_user}")
        if to_user is None and self.status is Status.WAITING_HUMAN and to_queue == self.queue:
            raise InvalidTransition(f"conversation already waits in {to_queue}")
        if note is not None:
            self._check_note(note_id, by, note)
            assert note_id is not None  # _check_note requires it
            self._note_added(lead_id=self.lead_id, note_id=note_id, author=by, text=note)
        self.trigger_event(
            self.ConversationTransferred,
            to_user=to_user,
            to_queue=to_queue,
            by=by,
            note_id=note_id if note is not None else None,
        )

    def add_note(self, *, note_id: str, author: str, text: str) -> None:
        """A private note for the attendants; never sent to the lead."""
        self._check_note(note_id, author, text)
        self._note_added(lead_id=self.lead_id, note_id=note_id, author=author, text=text)

    def change_labels(
        self, *, by: str, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> None:
        """Add and remove labels; only what really changes is recorded (nothing: no event)."""
        if not by:
            raise InvalidInput("who changes the labels is required")
        to_add, to_remove = _labels(add), _labels(remove)
        if set(to_add) & set(to_remove):
            raise InvalidInput("a label cannot be added and removed at once")
        added = [label for label in to_add if label not in self.labels]
        removed = [label for label in to_remove if label in self.labels]
        if len(self.labels) + len(added) - len(removed) > MAX_LABELS:
            raise InvalidInput(f"a conversation has at most {MAX_LABELS} labels")
        if added or removed:
            self._labels_changed(added=added, removed=removed, by=by)

    def release_inactive(self, *, now: datetime, limit: timedelta) -> None:
        """Back to its queue: the attendant left the lead unanswered past the tenant's limit."""
        if not self.is_inactive(now, limit):
            raise InvalidTransition("the attendant is not inactive on this conversation")
        self._returned_to_queue(queue=self.queue, reason="inactivity")

    def return_to_ai(self, *, by: str | None = None) -> None:
        """The attendant (`by`; None: the system) gives the conversation back to the AI."""
        if self.status not in (Status.HUMAN, Status.WAITING_HUMAN):
            raise InvalidTransition(f"cannot return to AI from {self.status.value}")
        self._returned_to_ai(answered_seq=self.inbound_seq, by=by or None)

    def close(self, *, by: str, resolution: str = "resolved") -> None:
        if self.status is Status.CLOSED:
            raise InvalidTransition("conversation is already closed")
        self._closed(by=by, resolution=resolution)

    def reopen(self, *, by: str) -> None:
        """A user reopens a closed conversation; the AI answers it again."""
        if not by:
            raise InvalidInput("who reopens is required")
        if self.status is not Status.CLOSED:
            raise InvalidTransition(f"cannot reopen a conversation in {self.status.value}")
        self._reopened(by=by)

    # ------------------------------------------------------------------ helpers

    def _check_holder(self, user: str, as_supervisor: bool) -> None:
        if self.status is Status.HUMAN and self.assignee != user and not as_supervisor:
            raise NotAssignee(f"conversation is held by {self.assignee}")

    def _check_note(self, note_id: str | None, author: str, text: str) -> None:
        if not note_id:
            raise InvalidInput("note id is required")
        if not author:
            raise InvalidInput("note author is required")
        if note_id in self.note_ids:
            raise InvalidInput(f"note {note_id} already exists")
        check_text(text, required=True)

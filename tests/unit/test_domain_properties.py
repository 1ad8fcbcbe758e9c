"""Random command sequences over Conversation keep its invariants and replay exactly."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from urbana.domain.conversation import Conversation, Status
from urbana.domain.errors import DomainError
from urbana.domain.outbound import Delivery

BASE = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
AI_REPLY_EVENTS = {"AIReplyGenerated", "AIReplyRejected"}
# failed and cancelled are terminal: nothing may follow them
RANK = {
    Delivery.QUEUED: 0,
    Delivery.SENT: 1,
    Delivery.DELIVERED: 2,
    Delivery.READ: 3,
    Delivery.FAILED: 4,
    Delivery.CANCELLED: 4,
}

# Mostly valid arguments, so that commands get deep into the state machine, with
# enough malformed ones that every refusal path is exercised too.
NEW, EMPTY = -1, -2
picks = st.sampled_from([NEW, NEW, EMPTY, 0, 1, 2, 3, 4, 5])
texts = st.sampled_from(["oi", "quanto custa?", "ok", "", "   ", None])
names = st.sampled_from(["ana", "bia", "bia", ""])
seq_offsets = st.sampled_from([0, 0, 0, -1, 1, -2])
confidences = st.sampled_from([0.0, 0.5, 0.9, 1.0, 1.5, -0.1])
queues = st.sampled_from([None, None, "vendas", "suporte"])
labels = st.sampled_from(["vip", "VIP ", "atraso", "", "x" * 51])
label_sets = st.lists(labels, max_size=3)
moments = st.integers(min_value=-3000, max_value=3000).map(lambda m: BASE + timedelta(minutes=m))


def replay(events: list[Any]) -> Conversation:
    """Rebuild the aggregate from its events, as the application's repository does."""
    aggregate = events[0].mutate(None)
    for event in events[1:]:
        aggregate = event.mutate(aggregate)
    assert isinstance(aggregate, Conversation)
    return aggregate


def snapshot(value: Any) -> Any:
    """A copy of the containers (the leaves are immutable); much cheaper than deepcopy."""
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snapshot(v) for v in value]
    return value


def state(conv: Conversation) -> dict[str, Any]:
    return {k: snapshot(v) for k, v in vars(conv).items() if k != "_pending_events"}


class ConversationMachine(RuleBasedStateMachine):
    conv: Conversation

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Any] = []
        self.ranks: dict[str, int] = {}
        self.answered_bursts: list[int] = []
        self.counter = 0

    @initialize()
    def start(self) -> None:
        self.conv = Conversation.start(
            tenant_id=uuid4(), channel="cloud", contact="5511988887777", lead_id=uuid4()
        )
        self.events.extend(self.conv.collect_events())

    def attempt(self, command: Callable[[], object]) -> None:
        """Run a command: it succeeds, or raises a DomainError having recorded nothing."""
        status_before = self.conv.status
        before = state(self.conv)
        try:
            command()
        except DomainError:
            assert self.conv.collect_events() == []
            assert state(self.conv) == before
            return
        new: list[Any] = list(self.conv.collect_events())
        for event in new:
            if type(event).__name__ == "ConversationAssigned":
                # an assignment never takes a conversation from the attendant holding it
                assert status_before is not Status.HUMAN
            if type(event).__name__ in AI_REPLY_EVENTS:
                assert status_before is Status.AI
                # one AI reply (or rejection) per burst: each covers later messages
                assert event.reply_to_seq > max(self.answered_bursts, default=0)
                self.answered_bursts.append(event.reply_to_seq)
        self.events.extend(new)

    def next_id(self) -> str:
        self.counter += 1
        return f"wamid.{self.counter}"

    def note_id(self, pick: int) -> str:
        """A new note id, an empty one, or one the conversation already has."""
        known = sorted(self.conv.note_ids)
        if pick == EMPTY:
            return ""
        if pick == NEW or not known:
            self.counter += 1
            return f"note-{self.counter}"
        return known[pick % len(known)]

    def outbound_id(self, pick: int) -> str:
        """A new id, an empty one, or one of the conversation's outbound ids."""
        known = list(self.conv.outbound)
        if pick == EMPTY:
            return ""
        if pick == NEW or not known:
            self.counter += 1
            return f"out-{self.counter}"
        return known[pick % len(known)]

    # ------------------------------------------------------------------ rules

    @rule(kind=st.sampled_from(["text", "image", ""]), text=texts, at=moments)
    def receive(self, kind: str, text: str | None, at: datetime) -> None:
        self.attempt(
            lambda: self.conv.receive(
                provider_message_id=self.next_id(), kind=kind, sent_at=at, text=text
            )
        )

    @rule(text=st.sampled_from(["oi", "quero alugar", "atendente"]), at=moments)
    def receive_text(self, text: str, at: datetime) -> None:
        """A well-formed text message: the common case, so it gets its own rule."""
        self.attempt(
            lambda: self.conv.receive(
                provider_message_id=self.next_id(), kind="text", sent_at=at, text=text
            )
        )

    @precondition(lambda self: self.conv.status is Status.AI and self.conv.pending_burst > 0)
    @rule(short_of_last=st.sampled_from([0, 0, 1]))
    def answer_burst(self, short_of_last: int) -> None:
        """A well-formed AI answer to the pending burst (or to all but its last message)."""
        reply_to_seq = max(self.conv.answered_seq + 1, self.conv.inbound_seq - short_of_last)
        self.attempt(
            lambda: self.conv.record_ai_reply(
                outbound_id=self.outbound_id(NEW),
                reply_to_seq=reply_to_seq,
                text="Claro!",
                intent="chat",
                confidence=0.8,
            )
        )

    @rule(
        pick=picks,
        offset=seq_offsets,
        text=texts,
        confidence=confidences,
    )
    def record_ai_reply(self, pick: int, offset: int, text: str | None, confidence: float) -> None:
        self.attempt(
            lambda: self.conv.record_ai_reply(
                outbound_id=self.outbound_id(pick),
                reply_to_seq=self.conv.inbound_seq + offset,
                text=text,  # type: ignore[arg-type]  # None on purpose: the domain must refuse it
                intent="chat",
                confidence=confidence,
            )
        )

    @rule(offset=seq_offsets)
    def reject_ai_reply(self, offset: int) -> None:
        self.attempt(
            lambda: self.conv.reject_ai_reply(
                reply_to_seq=self.conv.inbound_seq + offset, text="ruim", reason="guard"
            )
        )

    @rule(reason=st.sampled_from(["explicit", ""]))
    def request_handoff(self, reason: str) -> None:
        self.attempt(lambda: self.conv.request_handoff(reason=reason, summary="resumo"))

    @rule(attendant=names)
    def accept_handoff(self, attendant: str) -> None:
        self.attempt(lambda: self.conv.accept_handoff(attendant=attendant))

    @rule(pick=picks, attendant=names, text=texts, at=moments, supervisor=st.booleans())
    def attendant_reply(
        self, pick: int, attendant: str, text: str | None, at: datetime, supervisor: bool
    ) -> None:
        self.attempt(
            lambda: self.conv.attendant_reply(
                outbound_id=self.outbound_id(pick),
                attendant=attendant,
                text=text,  # type: ignore[arg-type]  # None on purpose: the domain must refuse it
                now=at,
                as_supervisor=supervisor,
            )
        )

    @rule(assignee=names, by=st.sampled_from([None, "sup"]), queue=queues)
    def assign(self, assignee: str, by: str | None, queue: str | None) -> None:
        self.attempt(lambda: self.conv.assign(assignee=assignee, by=by, queue=queue))

    @rule(
        by=names,
        to_user=st.one_of(st.none(), names),
        to_queue=queues,
        note=texts,
        supervisor=st.booleans(),
    )
    def transfer(
        self,
        by: str,
        to_user: str | None,
        to_queue: str | None,
        note: str | None,
        supervisor: bool,
    ) -> None:
        self.attempt(
            lambda: self.conv.transfer(
                by=by,
                to_user=to_user,
                to_queue=to_queue,
                note_id=self.note_id(NEW),
                note=note,
                as_supervisor=supervisor,
            )
        )

    @rule(pick=picks, author=names, text=texts)
    def add_note(self, pick: int, author: str, text: str | None) -> None:
        self.attempt(
            lambda: self.conv.add_note(
                note_id=self.note_id(pick),
                author=author,
                text=text,  # type: ignore[arg-type]
            )
        )

    @rule(by=names, add=label_sets, remove=label_sets)
    def change_labels(self, by: str, add: list[str], remove: list[str]) -> None:
        self.attempt(lambda: self.conv.change_labels(by=by, add=add, remove=remove))

    @rule(by=names)
    def reopen(self, by: str) -> None:
        self.attempt(lambda: self.conv.reopen(by=by))

    @rule(at=moments, limit_min=st.sampled_from([0, 5, 60, 600]))
    def release_inactive(self, at: datetime, limit_min: int) -> None:
        self.attempt(lambda: self.conv.release_inactive(now=at, limit=timedelta(minutes=limit_min)))

    @rule(pick=picks, text=texts)
    def queue_system_message(self, pick: int, text: str | None) -> None:
        self.attempt(
            lambda: self.conv.queue_system_message(outbound_id=self.outbound_id(pick), text=text)  # type: ignore[arg-type]  # None on purpose
        )

    @rule(pick=picks, at=moments)
    def record_business_message(self, pick: int, at: datetime) -> None:
        self.attempt(
            lambda: self.conv.record_business_message(
                outbound_id=self.outbound_id(pick),
                provider_message_id=self.next_id(),
                text="do celular",
                sent_at=at,
            )
        )

    @rule(by=st.sampled_from([None, "ana", "bia"]))
    def return_to_ai(self, by: str | None) -> None:
        self.attempt(lambda: self.conv.return_to_ai(by=by))

    @rule(by=names)
    def close(self, by: str) -> None:
        self.attempt(lambda: self.conv.close(by=by))

    @rule(pick=picks)
    def mark_sent(self, pick: int) -> None:
        self.attempt(
            lambda: self.conv.mark_sent(
                outbound_id=self.outbound_id(pick), provider_message_id="wamid.out"
            )
        )

    @rule(pick=picks, at=moments)
    def mark_delivered(self, pick: int, at: datetime) -> None:
        self.attempt(lambda: self.conv.mark_delivered(outbound_id=self.outbound_id(pick), at=at))

    @rule(pick=picks, at=moments)
    def mark_read(self, pick: int, at: datetime) -> None:
        self.attempt(lambda: self.conv.mark_read(outbound_id=self.outbound_id(pick), at=at))

    @rule(pick=picks)
    def mark_failed(self, pick: int) -> None:
        self.attempt(
            lambda: self.conv.mark_failed(outbound_id=self.outbound_id(pick), reason="131047")
        )

    @rule(pick=picks)
    def cancel_outbound(self, pick: int) -> None:
        self.attempt(
            lambda: self.conv.cancel_outbound(outbound_id=self.outbound_id(pick), reason="handoff")
        )

    # ------------------------------------------------------------- invariants

    @invariant()
    def status_is_one_of_the_four_states(self) -> None:
        assert self.conv.status in set(Status)

    @invariant()
    def a_human_holds_it_exactly_in_human_mode(self) -> None:
        assert (self.conv.status is Status.HUMAN) == bool(self.conv.assignee)

    @invariant()
    def only_a_held_conversation_awaits_its_attendant(self) -> None:
        if self.conv.awaiting_attendant_since is not None:
            assert self.conv.status is Status.HUMAN

    @invariant()
    def labels_are_normalised_and_unique(self) -> None:
        labels = self.conv.labels
        assert list(labels) == sorted(set(labels))
        assert all(label == label.strip().lower() and label for label in labels)

    @invariant()
    def answered_never_exceeds_received(self) -> None:
        assert 0 <= self.conv.answered_seq <= self.conv.inbound_seq

    @invariant()
    def delivery_never_moves_back(self) -> None:
        for outbound_id, message in self.conv.outbound.items():
            rank = RANK[message.delivery]
            assert rank >= self.ranks.get(outbound_id, 0)
            self.ranks[outbound_id] = rank
        assert set(self.ranks) == set(self.conv.outbound)

    @invariant()
    def ai_message_sendable_only_while_no_human_owns_the_thread(self) -> None:
        for outbound_id, message in self.conv.outbound.items():
            if message.author == "ai" and self.conv.may_send(outbound_id):
                assert self.conv.status in (Status.AI, Status.WAITING_HUMAN)

    @invariant()
    def replaying_the_events_rebuilds_the_same_aggregate(self) -> None:
        assert replay(self.events) == self.conv


ConversationMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_conversation_state_machine = ConversationMachine.TestCase

"""The automatic assignment and the inactivity sweep, with in-memory ports."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from tests.fakes import FakeClock, InMemoryFinder, InMemoryRoster, in_memory_app
from tests.helpers import ai_reply

from urbana.application.app import ReceiveMessage, UrbanaApp
from urbana.application.assignment import (
    HANDOFF_GRACE,
    AutoAssigner,
    HandoffMessagesPending,
    run_inactivity_sweeps,
)
from urbana.application.channels import InboundMessage
from urbana.domain.attendance import Availability
from urbana.domain.conversation import Conversation, Status

ONLINE, AWAY = Availability.ONLINE, Availability.AWAY


class Team:
    """A tenant with a sales queue, its attendants, and the assigner over them."""

    def __init__(self) -> None:
        self.app = in_memory_app()
        self.tid, _ = self.app.register_tenant(f"Loja {uuid4().hex[:8]}")
        self.sales = self.app.create_queue(self.tid, "Vendas", ("pricing",))
        self.finder = InMemoryFinder(self.app)
        self.roster = InMemoryRoster(self.app, self.finder)
        self.clock = FakeClock(datetime.now(UTC))
        self.assigner = AutoAssigner(self.app, self.roster, self.finder, self.clock)

    def handoff(self, intent: str = "pricing", *, sent: bool = True) -> UUID:
        """A handoff after the AI's answer; `sent`: the dispatcher already sent that answer."""
        phone = f"55119{uuid4().int % 10**8:08d}"
        message = InboundMessage(
            provider_message_id=f"wamid.{uuid4().hex}",
            contact=phone,
            phone=phone,
            sent_at=self.clock.now(),
            kind="text",
            text="quanto custa?",
        )
        cid = self.app.receive_message(ReceiveMessage(self.tid, "cloud", message)).conversation_id
        out = ai_reply(
            self.app, cid, reply_to_seq=1, text="Custa 10.", intent=intent, confidence=0.3
        )
        if sent:
            self.app.mark_sent(cid, out, f"wamid.out.{uuid4().hex}")
        self.app.request_handoff(cid, reason="low_confidence")
        self.finder.add(self.tid, cid)
        return cid

    def conv(self, cid: UUID) -> Conversation:
        return self.app.get(Conversation, cid)


def system_texts(app: UrbanaApp, cid: UUID) -> list[str]:
    return [
        e.text
        for e in app.stream(cid)
        if type(e).__name__ == "OutboundMessageQueued" and e.author == "system"
    ]


async def test_a_handoff_goes_at_once_to_the_online_attendant_of_its_queue() -> None:
    team = Team()
    team.roster.set(team.tid, "ana", ONLINE, [team.sales])
    team.roster.set(team.tid, "bia", AWAY, [team.sales])
    cid = team.handoff()
    placement = await team.assigner.handoff_requested(cid)
    assert (placement.action, placement.assignee, placement.queue) == (
        "assigned",
        "ana",
        team.sales,
    )
    conv = team.conv(cid)
    assert (conv.status, conv.assignee, conv.queue) == (Status.HUMAN, "ana", team.sales)


async def test_an_assignment_waits_until_the_ais_last_answer_is_sent() -> None:
    team = Team()
    team.roster.set(team.tid, "ana", ONLINE, [team.sales])
    cid = team.handoff(sent=False)
    names = [type(e).__name__ for e in team.app.stream(cid)]
    with pytest.raises(HandoffMessagesPending):
        await team.assigner.handoff_requested(cid, requested_at=team.clock.now())
    assert [type(e).__name__ for e in team.app.stream(cid)] == names
    (out,) = team.conv(cid).outbound
    team.app.mark_sent(cid, out, "wamid.out.1")
    placement = await team.assigner.handoff_requested(cid, requested_at=team.clock.now())
    assert placement.assignee == "ana"


async def test_past_the_grace_the_assignment_takes_over_anyway() -> None:
    team = Team()
    team.roster.set(team.tid, "ana", ONLINE, [team.sales])
    cid = team.handoff(sent=False)
    requested_at = team.clock.now()
    team.clock.advance(HANDOFF_GRACE.total_seconds())
    placement = await team.assigner.handoff_requested(cid, requested_at=requested_at)
    assert placement.assignee == "ana"
    (out,) = team.conv(cid).outbound
    assert not team.conv(cid).may_send(out)  # the takeover voided the unsent answer


async def test_with_nobody_to_take_it_a_pending_answer_does_not_hold_the_queue_message() -> None:
    team = Team()
    cid = team.handoff(sent=False)
    placement = await team.assigner.handoff_requested(cid, requested_at=team.clock.now())
    assert placement.action == "waiting"


async def test_handoffs_are_spread_by_workload() -> None:
    team = Team()
    for user in ("ana", "bia"):
        team.roster.set(team.tid, user, ONLINE, [team.sales])
    assignees: list[str] = []
    for _ in range(4):
        placement = await team.assigner.handoff_requested(team.handoff())
        assert placement.assignee is not None
        assignees.append(placement.assignee)
    assert sorted(assignees) == ["ana", "ana", "bia", "bia"]


async def test_with_nobody_online_it_waits_in_its_queue_and_the_lead_is_told() -> None:
    team = Team()
    team.roster.set(team.tid, "ana", AWAY, [team.sales])
    cid = team.handoff()
    placement = await team.assigner.handoff_requested(cid)
    assert (placement.action, placement.queue) == ("waiting", team.sales)
    conv = team.conv(cid)
    assert (conv.status, conv.queue, conv.assignee) == (Status.WAITING_HUMAN, team.sales, None)
    assert len(system_texts(team.app, cid)) == 1
    again = await team.assigner.handoff_requested(cid)  # redelivered
    assert again.action == "waiting"
    assert len(system_texts(team.app, cid)) == 1


async def test_outside_business_hours_the_lead_is_told_when_the_attendance_opens() -> None:
    team = Team()
    # Open only on a day that is never today: tomorrow's weekday, all day.
    tomorrow = (team.clock.now() + timedelta(days=1)).weekday()
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[tomorrow]
    team.app.change_settings(team.tid, business_hours={day: "00:00-24:00"}, timezone="UTC")
    cid = team.handoff()
    await team.assigner.handoff_requested(cid)
    (text,) = system_texts(team.app, cid)
    assert "fechado" in text
    assert "amanhã às 00:00" in text


async def test_a_conversation_already_taken_is_left_alone() -> None:
    team = Team()
    team.roster.set(team.tid, "ana", ONLINE, [team.sales])
    cid = team.handoff()
    team.app.assign(cid, assignee="bia")
    placement = await team.assigner.handoff_requested(cid)
    assert (placement.action, placement.assignee) == ("skipped", "bia")
    assert team.conv(cid).assignee == "bia"


async def test_an_attendant_coming_online_gets_the_waiting_conversations_in_order() -> None:
    team = Team()
    first, second = team.handoff(), team.handoff()
    general = team.handoff("chat")  # no queue lists "chat": the tenant's general queue
    for cid in (first, second, general):
        assert (await team.assigner.handoff_requested(cid)).action == "waiting"
    team.roster.set(team.tid, "ana", ONLINE, [team.sales])
    team.roster.set(team.tid, "bia", ONLINE, ["q-other"])
    placed = await team.assigner.assign_waiting(team.tid)
    # Only ana serves sales; the general queue takes anyone, and bia holds fewer.
    assert [(p.conversation_id, p.assignee) for p in placed] == [
        (first, "ana"),
        (second, "ana"),
        (general, "bia"),
    ]


async def test_coming_online_with_nothing_waiting_assigns_nothing() -> None:
    team = Team()
    team.roster.set(team.tid, "ana", ONLINE, [team.sales])
    assert await team.assigner.assign_waiting(team.tid) == []


async def test_the_inactivity_sweep_gives_a_silent_attendants_conversation_to_another() -> None:
    team = Team()
    team.app.change_settings(team.tid, inactivity_limit_s=600)
    team.roster.set(team.tid, "ana", ONLINE, [team.sales])
    cid = team.handoff()
    await team.assigner.handoff_requested(cid)
    team.roster.set(team.tid, "bia", ONLINE, [team.sales])
    since = team.conv(cid).awaiting_attendant_since
    assert since is not None
    team.clock.current = since + timedelta(seconds=599)
    assert await team.assigner.sweep_inactive([team.tid]) == []
    team.clock.current = since + timedelta(seconds=600)
    (placement,) = await team.assigner.sweep_inactive([team.tid])
    assert (placement.action, placement.assignee) == ("assigned", "bia")
    names = [type(e).__name__ for e in team.app.stream(cid)]
    assert names[-2:] == ["ReturnedToQueue", "ConversationAssigned"]


async def test_a_released_conversation_waits_when_nobody_else_is_free() -> None:
    team = Team()
    team.app.change_settings(team.tid, inactivity_limit_s=60)
    team.roster.set(team.tid, "ana", ONLINE, [team.sales])
    cid = team.handoff()
    await team.assigner.handoff_requested(cid)
    since = team.conv(cid).awaiting_attendant_since
    assert since is not None
    team.clock.current = since + timedelta(seconds=61)
    (placement,) = await team.assigner.sweep_inactive([team.tid])
    assert placement.action == "waiting"
    conv = team.conv(cid)
    assert (conv.status, conv.queue) == (Status.WAITING_HUMAN, team.sales)


async def test_the_sweep_loop_runs_until_stopped_and_survives_a_failing_round() -> None:
    team = Team()
    team.app.change_settings(team.tid, inactivity_limit_s=60)
    team.roster.set(team.tid, "ana", ONLINE, [team.sales])
    cid = team.handoff()
    await team.assigner.handoff_requested(cid)
    since = team.conv(cid).awaiting_attendant_since
    assert since is not None
    team.clock.current = since + timedelta(seconds=61)
    stop = asyncio.Event()
    rounds: list[int] = []

    async def tenants() -> list[UUID]:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("read model unavailable")
        if len(rounds) == 3:
            stop.set()
        return [team.tid]

    await asyncio.wait_for(
        run_inactivity_sweeps(team.assigner, tenants, every_s=0.01, stop=stop), timeout=10
    )
    assert len(rounds) == 3
    assert team.conv(cid).status is Status.WAITING_HUMAN

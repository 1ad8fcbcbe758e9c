"""The automatic assignment and the inactivity rule, as processes over the commands.

- On `HandoffRequested`: route the conversation to its queue (its intent, the
  tenant's rules), then give it at once to the queue's online attendant with the
  fewest open conversations (ties: idle longest), or leave it waiting there and tell
  the lead when to expect a person (the tenant's business hours).
- When an attendant comes online (`AvailabilityChanged` to online), and after the
  inactivity rule put a conversation back: hand out the waiting conversations,
  longest wait first.
- The inactivity sweep, run periodically: a conversation whose attendant left the
  lead unanswered past the tenant's limit goes back to its queue, and on to another
  attendant if one is free.

Who the attendants are, and which conversations to look at, come from read models
(the `AttendantRoster` and `ConversationFinder` ports), which may lag: every step is
re-checked by the conversation's aggregate, so two assigners racing, or a read model
behind, cost a refused command, never a double assignment. Within one run the policy
counts its own assignments, so a burst of handoffs is spread out even before the
read model catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from urbana.application.app import UrbanaApp
from urbana.application.ports import AttendantRoster, Clock, ConversationFinder, SystemClock
from urbana.domain.attendance import Candidate, pick_attendant
from urbana.domain.conversation import Status
from urbana.domain.errors import InvalidTransition
from urbana.errors import UrbanaError

log = logging.getLogger(__name__)

# How long an assignment waits for the AI's last answer and the transition message to
# go out before it takes over anyway (a takeover voids what the AI queued before it).
HANDOFF_GRACE = timedelta(seconds=30)


class HandoffMessagesPending(UrbanaError):
    """The lead has not been sent the AI's last answer or the transition yet: retry soon."""


@dataclass(frozen=True, slots=True)
class Placement:
    """What the assigner did with one conversation."""

    conversation_id: UUID
    action: str  # assigned | waiting | skipped
    assignee: str | None = None
    queue: str | None = None


class AutoAssigner:
    """Applies the assignment policy (see the module docstring)."""

    def __init__(
        self,
        app: UrbanaApp,
        roster: AttendantRoster,
        finder: ConversationFinder,
        clock: Clock | None = None,
    ) -> None:
        self._app = app
        self._roster = roster
        self._finder = finder
        self._clock = clock or SystemClock()

    async def handoff_requested(
        self, conversation_id: UUID, *, requested_at: datetime | None = None
    ) -> Placement:
        """A conversation asked for a person: assign it now, or leave it waiting in its queue.

        HandoffMessagesPending while the AI's last answer or the transition message is
        not sent yet and someone would take it over (for up to `HANDOFF_GRACE` after
        `requested_at`): the lead gets them first, then the person.
        """
        route = await asyncio.to_thread(self._app.handoff_route, conversation_id)
        if route.status is not Status.WAITING_HUMAN or route.console:
            return Placement(conversation_id, "skipped", route.assignee, route.queue)
        candidates = await self._roster.candidates(route.tenant_id)
        recent = requested_at is None or self._clock.now() - requested_at < HANDOFF_GRACE
        someone = pick_attendant(candidates, route.queue) is not None
        if route.messages_pending and someone and recent:
            raise HandoffMessagesPending(f"{conversation_id}: the handoff's messages")
        placement = await self._place(conversation_id, candidates, route.queue)
        if placement.action == "assigned":
            return placement
        waits = await asyncio.to_thread(
            self._app.wait_in_queue, conversation_id, queue=route.queue, now=self._clock.now()
        )
        return Placement(conversation_id, "waiting" if waits else "skipped", queue=route.queue)

    async def assign_waiting(self, tenant_id: UUID) -> list[Placement]:
        """Hand out the tenant's waiting conversations, longest wait first, while anyone fits."""
        waiting = await self._finder.waiting(tenant_id)
        if not waiting:
            return []
        candidates = await self._roster.candidates(tenant_id)
        placed: list[Placement] = []
        for conversation_id in waiting:
            route = await asyncio.to_thread(self._app.handoff_route, conversation_id)
            if route.status is not Status.WAITING_HUMAN or route.console:
                continue
            placement = await self._place(conversation_id, candidates, route.queue)
            if placement.action == "assigned":
                candidates = _counted(candidates, placement, self._clock)
                placed.append(placement)
        return placed

    async def sweep_inactive(self, tenant_ids: Iterable[UUID]) -> list[Placement]:
        """The inactivity rule: release what attendants left unanswered, then reassign it."""
        placed: list[Placement] = []
        for tenant_id in tenant_ids:
            released: dict[UUID, str] = {}
            for conversation_id in await self._finder.maybe_unanswered(tenant_id):
                attendant = await asyncio.to_thread(
                    self._app.release_inactive, conversation_id, now=self._clock.now()
                )
                if attendant is not None:
                    released[conversation_id] = attendant
                    log.info("inactivity: %s taken back from %s", conversation_id, attendant)
            if not released:
                continue
            candidates = await self._roster.candidates(tenant_id)
            for conversation_id, attendant in released.items():
                route = await asyncio.to_thread(self._app.handoff_route, conversation_id)
                if route.status is not Status.WAITING_HUMAN:
                    continue
                # Someone else, if anyone: the attendant who let it lapse is not answering.
                placement = await self._place(
                    conversation_id, candidates, route.queue, exclude=(attendant,)
                )
                if placement.action == "assigned":
                    candidates = _counted(candidates, placement, self._clock)
                else:
                    placement = Placement(conversation_id, "waiting", queue=route.queue)
                placed.append(placement)
        return placed

    async def _place(
        self,
        conversation_id: UUID,
        candidates: list[Candidate],
        queue: str | None,
        *,
        exclude: Iterable[str] = (),
    ) -> Placement:
        chosen = pick_attendant(candidates, queue, exclude=frozenset(exclude))
        if chosen is None:
            return Placement(conversation_id, "waiting", queue=queue)
        try:
            await asyncio.to_thread(
                self._app.assign, conversation_id, assignee=chosen.user_id, queue=queue
            )
        except InvalidTransition as exc:
            # Taken (or closed) since it was read: that is someone else's decision to keep.
            log.info("assignment of %s refused: %s", conversation_id, exc)
            return Placement(conversation_id, "skipped", queue=queue)
        return Placement(conversation_id, "assigned", chosen.user_id, queue)


async def run_inactivity_sweeps(
    assigner: AutoAssigner,
    tenants: Callable[[], Awaitable[Iterable[UUID]]],
    *,
    every_s: float,
    stop: asyncio.Event,
) -> None:
    """Sweep every `every_s` seconds until `stop`; a failed sweep is logged and retried.

    Sweeps running in several processes at once are harmless: releasing a conversation
    is refused once it is no longer held.
    """
    while not stop.is_set():
        try:
            placed = await assigner.sweep_inactive(await tenants())
            if placed:
                log.info("inactivity sweep: %d conversations moved", len(placed))
        except Exception:
            # The next round retries; a sweep that raised must not end the role.
            log.exception("inactivity sweep failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)


def _counted(candidates: list[Candidate], placement: Placement, clock: Clock) -> list[Candidate]:
    """The candidates with one more open conversation for whoever just got one."""
    return [
        dataclasses.replace(c, open_count=c.open_count + 1, last_assigned_at=clock.now())
        if c.user_id == placement.assignee
        else c
        for c in candidates
    ]

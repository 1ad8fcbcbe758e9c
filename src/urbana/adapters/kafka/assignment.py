"""The automatic assignment as a consumer of the event topic.

On `HandoffRequested` the conversation is assigned or left waiting in its queue (a
handoff whose messages are not sent yet is retried, with the worker's backoff); on
an attendant's `AvailabilityChanged` to online, the tenant's waiting conversations are
handed out (see urbana.application.assignment). Both are safe under redelivery: the
conversation's aggregate refuses a second assignment, and the waiting message is
recorded once per handoff.
"""

from __future__ import annotations

import logging
from datetime import datetime
from uuid import UUID

from urbana.adapters.kafka.workers import EventWorker, Subscription
from urbana.application.assignment import AutoAssigner
from urbana.application.envelope import Envelope
from urbana.domain.attendance import Availability

log = logging.getLogger(__name__)


def assignment_worker(
    *,
    assigner: AutoAssigner,
    subscription: Subscription,
) -> EventWorker:
    """The `assigner` role's consumer: HandoffRequested, AvailabilityChanged."""

    async def handle(envelope: Envelope) -> None:
        if envelope.type == "HandoffRequested":
            placement = await assigner.handoff_requested(
                UUID(envelope.stream_id), requested_at=datetime.fromisoformat(envelope.occurred_at)
            )
            log.info("assigner %s: %s %s", envelope.stream_id, placement.action, placement.assignee)
        elif envelope.data.get("availability") == Availability.ONLINE and envelope.tenant_id:
            placed = await assigner.assign_waiting(UUID(envelope.tenant_id))
            log.info("assigner: %s came online, %d assigned", envelope.stream_id, len(placed))

    return EventWorker(
        name="assigner",
        subscription=subscription,
        handle=handle,
        types=["HandoffRequested", "AvailabilityChanged"],
    )

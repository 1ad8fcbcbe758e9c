"""The Urbana application: every command over the event-sourced aggregates.

`UrbanaApp` composes the jobs, one module each: the unit of work under them all
(`unit_of_work`), tenants, inbound messages and statuses, outbound messages around a
send, the AI responder's outcomes, the attendants' commands, users and API keys, and
the scheduled jobs' commands. It is the only writer of domain events.
The command and result types are importable from here.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from urbana.application.access import AccessCommands
from urbana.application.ai_outcome import AIOutcome, AIOutcomes
from urbana.application.attendants import AttendantCommands
from urbana.application.erasure import ErasureCommands
from urbana.application.inbound import InboundCommands, Received, ReceiveMessage, RecordStatus
from urbana.application.jobs import JobCommands
from urbana.application.outbound import (
    FailedOutbound,
    OutboundCommands,
    callback_data_for,
    parse_callback_data,
)
from urbana.application.privacy import PrivacyCommands
from urbana.application.tenants import KnowledgeDocument, TenantCommands
from urbana.domain.events import with_stream_tenant

__all__ = [
    "AIOutcome",
    "FailedOutbound",
    "KnowledgeDocument",
    "ReceiveMessage",
    "Received",
    "RecordStatus",
    "UrbanaApp",
    "callback_data_for",
    "parse_callback_data",
]


class UrbanaApp(
    TenantCommands,
    InboundCommands,
    OutboundCommands,
    AIOutcomes,
    AttendantCommands,
    AccessCommands,
    JobCommands,
    PrivacyCommands,
    ErasureCommands,
):
    """Commands of the conversation engine; the only writer of domain events."""

    name = "urbana"

    def stream(self, aggregate_id: UUID) -> list[Any]:
        """Every event of one stream, decrypted (or ERASED), oldest first, each with its tenant.

        Events stored before they recorded `tenant_id` get the stream's (see
        urbana.domain.events).
        """
        return with_stream_tenant(self.events.get(aggregate_id))

"""Plans: how many new leads a tenant's AI answers each month.

A tenant's plan (set by the operator, never by the tenant's own admins) names a monthly
limit of new leads. Each new lead is counted on the `LeadQuota` of its tenant and month,
a stream of its own, so two leads arriving at once in two processes write the same
stream version and the store admits one of them (the other reloads and counts again).
A lead over the limit is recorded in full; its own stream says it is over
(`Lead.LeadOverPlanLimit`), and the AI does not answer it. Months are São Paulo's:
they begin on the 1st at 00:00 America/Sao_Paulo, whatever the tenant's time zone
(see docs/architecture.md, Plans and lead limits).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5
from zoneinfo import ZoneInfo

from eventsourcing.domain import event

from urbana.domain.contacts import NAMESPACE
from urbana.domain.errors import InvalidInput
from urbana.domain.events import TenantScoped

BILLING_ZONE = ZoneInfo("America/Sao_Paulo")

# Plan name -> new leads a month (None: no limit). `custom` takes the limit it is given.
PLANS: dict[str, int | None] = {
    "unlimited": None,
    "starter": 100,
    "pro": 1_000,
    "business": 10_000,
}
CUSTOM = "custom"


@dataclass(frozen=True, slots=True)
class Plan:
    name: str = "unlimited"
    lead_limit: int | None = None  # new leads a month; None: no limit

    @classmethod
    def of(cls, name: str, lead_limit: int | None = None) -> Plan:
        """A catalogue plan, or `custom` with its limit; InvalidInput otherwise."""
        name = name.strip().lower()
        if name == CUSTOM:
            if lead_limit is None or isinstance(lead_limit, bool) or lead_limit < 0:
                raise InvalidInput("a custom plan needs a limit of 0 or more new leads a month")
            return cls(CUSTOM, int(lead_limit))
        if name not in PLANS:
            raise InvalidInput(f"unknown plan {name!r}; known: {sorted([*PLANS, CUSTOM])}")
        if lead_limit is not None and lead_limit != PLANS[name]:
            raise InvalidInput(f"plan {name!r} has its own limit; use {CUSTOM!r} for another")
        return cls(name, PLANS[name])


def billing_month(at: datetime) -> str:
    """The month ("2026-12") `at` falls in, in São Paulo; `at` must be timezone-aware."""
    if at.tzinfo is None:
        raise InvalidInput("a lead's time must be timezone-aware")
    return at.astimezone(BILLING_ZONE).strftime("%Y-%m")


def lead_quota_id_for(tenant_id: UUID, month: str) -> UUID:
    return uuid5(NAMESPACE, f"lead-quota:{tenant_id}:{month}")


class LeadQuota(TenantScoped):
    """The new leads of one tenant in one month, in the order the store took them."""

    @staticmethod
    def create_id(tenant_id: UUID, month: str, **_: Any) -> UUID:
        return lead_quota_id_for(tenant_id, month)

    @event("LeadQuotaOpened")
    def __init__(self, tenant_id: UUID, month: str) -> None:
        self.tenant_id = tenant_id
        self.month = month
        self.admitted = 0
        self.over_limit = 0

    def count(self, lead_id: UUID, limit: int | None) -> bool:
        """Count a new lead against `limit`; whether it is within it."""
        admitted = limit is None or self.admitted < limit
        self._counted(lead_id=lead_id, limit=limit, admitted=admitted)
        return admitted

    @event("LeadCounted")
    def _counted(self, lead_id: UUID, limit: int | None, admitted: bool) -> None:
        if admitted:
            self.admitted += 1
        else:
            self.over_limit += 1

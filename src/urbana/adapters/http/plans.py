"""A tenant's plan and this month's count of new leads, as `/v1/settings` and `/v1/kpis`
show it (read-only: the operator sets the plan through `/admin` or `urbana tenant
set-plan`; see docs/architecture.md, Plans and lead limits)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from urbana.adapters.http.common import container_of, on_store

PLAN_EXAMPLE: dict[str, Any] = {
    "plan": "starter",
    "lead_limit": 100,
    "month": "2026-12",
    "leads": 37,
    "over_limit": 0,
}


class PlanUsageOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [PLAN_EXAMPLE]})
    plan: str = Field(description="unlimited, starter, pro, business or custom")
    lead_limit: int | None = Field(description="New leads a month the AI answers; null: none")
    month: str = Field(description="The current month in America/Sao_Paulo (YYYY-MM)")
    leads: int = Field(description="New leads this month within the limit")
    over_limit: int = Field(
        description="New leads this month past the limit: recorded and flagged, not answered"
    )


async def plan_usage(request: Request, tenant_id: UUID) -> PlanUsageOut:
    """The tenant's plan and its count for the month of the process's clock."""
    container = container_of(request)
    now = container.clock.now()
    usage = await on_store(request, container.store.app.plan_usage, tenant_id, now)
    return PlanUsageOut.model_validate(usage.as_json())

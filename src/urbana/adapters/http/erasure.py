"""/v1 erasure of a data subject (LGPD Art. 18 VI): auditors and admins.

The subject's key is destroyed and `SubjectErased` appended before the answer, so a 200
means the erasure is durable; the receipt says what was removed where. Another tenant's
subject, or none, is 404; a missing or unknown reason is 422; both append nothing. A
second erasure answers `already_erased` with what it still found to remove (normally
nothing) and appends nothing (see `urbana.application.erasure`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import Request
from pydantic import BaseModel, Field

from urbana.adapters.bootstrap import build_erasure
from urbana.adapters.http.auth import Auditor, v1_router
from urbana.adapters.http.common import TENANT_ERRORS, Responses, container_of, examples
from urbana.domain.lead import ERASURE_REASONS

router = v1_router(tags=["privacy"])

ERASE_ERRORS: Responses = {
    **TENANT_ERRORS,
    404: {"description": "No such data subject (lead) in this tenant"},
    422: {"description": "No reason, or not one of the reason categories (problem+json)"},
}


_REASONS: list[Any] = sorted(ERASURE_REASONS)


class EraseIn(BaseModel):
    model_config = examples({"reason": "subject_request"})
    reason: str = Field(
        min_length=1,
        max_length=40,
        description=(
            "Why, as a category; never free text, so the record of the erasure holds no "
            "personal data"
        ),
        json_schema_extra={"enum": _REASONS},
    )


class ErasureOut(BaseModel):
    model_config = examples(
        {
            "lead_id": "7d1c3b5a-9e8f-5a4b-8c2d-1e0f9a8b7c6d",
            "tenant_id": "2f4e6d8c-0b1a-5c3d-9e7f-6a5b4c3d2e1f",
            "erased_at": "2026-12-02T03:00:00+00:00",
            "reason": "subject_request",
            "already_erased": False,
            "removed": {
                "data_keys": 1,
                "events_appended": 1,
                "conversations": 1,
                "messages": 4,
                "notes": 0,
                "leads": 1,
                "redis_keys": 2,
            },
        }
    )
    lead_id: UUID
    tenant_id: UUID
    erased_at: datetime
    reason: str
    already_erased: bool = Field(description="Erased before: nothing destroyed or appended now")
    removed: dict[str, int] = Field(description="What was removed, per place")


@router.post(
    "/privacy/subjects/{lead_id}/erase",
    responses=ERASE_ERRORS,
    summary="Erase a data subject (crypto-shredding) and get the receipt",
)
async def erase_subject(
    lead_id: UUID, body: EraseIn, principal: Auditor, request: Request
) -> ErasureOut:
    """Destroy the lead's data key, record `SubjectErased`, remove its rows and keys."""
    erasure = build_erasure(container_of(request), gated=True)
    receipt = await erasure.erase(
        principal.tenant_id, lead_id, body.reason, by=str(principal.subject_id)
    )
    return ErasureOut(**receipt.as_json())

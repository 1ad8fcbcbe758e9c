"""/v1 team routes: queues, availability, a user's queues, canned responses, settings.

Everything here is the caller's tenant's: a queue, user or canned response of another
tenant is not found (404). Calls to the store go through the store gate, like the
conversation commands (urbana.adapters.http.workspace).
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import Body, HTTPException, Request, Response
from pydantic import BaseModel, Field

from urbana.adapters.http.auth import Admin, Worker, allow, v1_router
from urbana.adapters.http.common import (
    TENANT_ERRORS,
    container_of,
    examples,
    on_store,
    scoped,
    tenant_of,
)
from urbana.adapters.http.plans import PLAN_EXAMPLE, plan_usage
from urbana.application.access import Principal
from urbana.application.tenants import settings_json
from urbana.domain.attendance import MAX_QUEUE_NAME
from urbana.domain.errors import InvalidInput
from urbana.domain.reply import MAX_REPLY
from urbana.domain.tenant import Tenant
from urbana.domain.user import Availability, Role, User

router = v1_router(tags=["team"], responses=TENANT_ERRORS)

Lead = Annotated[Principal, allow(Role.SUPERVISOR, Role.ADMIN)]


class QueueIn(BaseModel):
    model_config = examples({"name": "Financiamento", "intents": ["financing", "credit"]})
    name: str = Field(min_length=1, max_length=MAX_QUEUE_NAME)
    intents: list[str] = Field(default_factory=list, max_length=100)


class QueuePatch(BaseModel):
    model_config = examples({"name": "Crédito"}, {"intents": ["financing"]})
    name: str | None = Field(default=None, min_length=1, max_length=MAX_QUEUE_NAME)
    intents: list[str] | None = Field(default=None, max_length=100)


class QueueOut(BaseModel):
    model_config = examples(
        {
            "queue_id": "e4d9a1c2-7b3f-5e60-8a91-2c3d4e5f6a7b",
            "name": "Financiamento",
            "intents": ["financing", "credit"],
        }
    )
    queue_id: str
    name: str
    intents: list[str]

    @classmethod
    def of(cls, tenant: Tenant, queue_id: str) -> QueueOut:
        queue = tenant.queues[queue_id]
        return cls(queue_id=queue_id, name=queue.name, intents=list(queue.intents))


class AvailabilityIn(BaseModel):
    model_config = examples({"availability": "online"})
    availability: Availability


class UserQueuesIn(BaseModel):
    model_config = examples({"queues": ["e4d9a1c2-7b3f-5e60-8a91-2c3d4e5f6a7b"]})
    queues: list[str] = Field(max_length=100)


class UserQueuesOut(BaseModel):
    model_config = examples(
        {
            "user_id": "0b8f6a3e-2a51-4c3e-9a43-1d2b3c4d5e6f",
            "queues": ["e4d9a1c2-7b3f-5e60-8a91-2c3d4e5f6a7b"],
        }
    )
    user_id: UUID
    queues: list[str]


class CannedIn(BaseModel):
    model_config = examples({"text": "O valor do aluguel é R$ 2.500,00 com condomínio."})
    text: str = Field(min_length=1, max_length=MAX_REPLY)


class CannedOut(BaseModel):
    model_config = examples({"shortcut": "preco", "text": "O valor do aluguel é R$ 2.500,00."})
    shortcut: str
    text: str


SETTINGS_EXAMPLE: dict[str, Any] = {
    "prompt": "Você é a assistente da Imobiliária Sol.",
    "debounce_ms": 1500,
    "confidence_threshold": 0.55,
    "hot_score": 70,
    "stage_thresholds": {"engaged": 10, "qualified": 40, "hot": 70},
    "handoff_intents": ["complaint", "cancel", "human"],
    "include_groups": False,
    "bot_messages": {},
    "outbound": None,
    "rate_limit_per_s": 80,
    "business_hours": {"mon": "08:00-18:00", "sat": "09:00-13:00"},
    "timezone": "America/Sao_Paulo",
    "inactivity_limit_s": 900,
    "handoff_queues": {"financing": "e4d9a1c2-7b3f-5e60-8a91-2c3d4e5f6a7b"},
    "default_queue": None,
    "decay_steps": {"24": -10, "48": -20},
    "stale_after_days": 7,
    "window_exempt_channels": [],
    "follow_up_after_hours": 0,
    "follow_up_template": None,
    "retention_days": None,
    # Read-only here: the operator's (`urbana tenant set-plan`, `PUT /admin/tenants/{id}/plan`).
    "plan": PLAN_EXAMPLE,
}
SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {name: {} for name in SETTINGS_EXAMPLE},
    "additionalProperties": False,
    "examples": [SETTINGS_EXAMPLE],
}
PATCH_EXAMPLES = [
    {"confidence_threshold": 0.7, "inactivity_limit_s": 600},
    {"business_hours": {"mon": "08:00-18:00"}, "timezone": "America/Recife"},
    {"prompt": "Você é a assistente da Imobiliária Sol. Seja breve."},
]


@router.post(
    "/queues",
    status_code=201,
    responses={422: {"description": "A bad name or intent, or the name is taken"}},
    summary="Create a queue (fila)",
)
async def create_queue(body: QueueIn, principal: Lead, request: Request) -> QueueOut:
    """A handoff whose intent (or reason) is one of `intents` lands in it."""
    app, tenant_id = container_of(request).store.app, principal.tenant_id

    def work() -> QueueOut:
        queue_id = app.create_queue(tenant_id, body.name, tuple(body.intents))
        return QueueOut.of(app.get(Tenant, tenant_id), queue_id)

    return await on_store(request, work)


@router.patch(
    "/queues/{queue_id}",
    responses={404: {"description": "No such queue in this tenant"}},
    summary="Rename a queue or change its intents",
)
async def change_queue(
    queue_id: str, body: QueuePatch, principal: Lead, request: Request
) -> QueueOut:
    """What is not given keeps its value."""
    app, tenant_id = container_of(request).store.app, principal.tenant_id

    def work() -> QueueOut:
        intents = tuple(body.intents) if body.intents is not None else None
        app.change_queue(tenant_id, queue_id, name=body.name, intents=intents)
        return QueueOut.of(app.get(Tenant, tenant_id), queue_id)

    return await on_store(request, work)


@router.put(
    "/me/availability",
    responses={
        403: {"description": "The caller's role, or an API key"},
        409: {"description": "Already so, or the user is disabled"},
    },
    summary="Set my availability (online, away, offline)",
)
async def set_availability(
    body: AvailabilityIn, principal: Worker, request: Request
) -> AvailabilityIn:
    """Online, the caller is given waiting conversations of their queues."""
    if principal.kind != "user":
        raise HTTPException(403, "an API key has no availability: sign in as a user")
    app = container_of(request).store.app
    await on_store(
        request, app.set_availability, principal.tenant_id, principal.subject_id, body.availability
    )
    return body


@router.put(
    "/users/{user_id}/queues",
    responses={
        404: {"description": "No such user in this tenant"},
        409: {"description": "The user already works exactly these queues"},
        422: {"description": "A queue this tenant does not have"},
    },
    summary="Set the queues a user works",
)
async def set_user_queues(
    user_id: UUID, body: UserQueuesIn, principal: Lead, request: Request
) -> UserQueuesOut:
    """The whole list: queues not named are left."""
    app, tenant_id = container_of(request).store.app, principal.tenant_id

    def work() -> UserQueuesOut:
        scoped(app, User, user_id, tenant_id)
        known = app.get(Tenant, tenant_id).queues
        unknown = [q for q in body.queues if q not in known]
        if unknown:
            raise InvalidInput(f"no such queues in this tenant: {unknown}")
        app.set_user_queues(tenant_id, user_id, list(body.queues))
        return UserQueuesOut(user_id=user_id, queues=list(app.get(User, user_id).queues))

    return await on_store(request, work)


@router.put(
    "/canned-responses/{shortcut}",
    responses={422: {"description": "A bad shortcut or text"}},
    summary="Save a canned response (resposta pronta)",
)
async def save_canned(
    shortcut: str, body: CannedIn, principal: Lead, request: Request
) -> CannedOut:
    """An attendant's `/shortcut` in a reply is replaced by this text."""
    app, tenant_id = container_of(request).store.app, principal.tenant_id

    def work() -> CannedOut:
        app.save_canned_response(tenant_id, shortcut, body.text)
        canned = app.get(Tenant, tenant_id).canned
        code = shortcut.strip().removeprefix("/").lower()
        return CannedOut(shortcut=code, text=canned[code])

    return await on_store(request, work)


@router.delete(
    "/canned-responses/{shortcut}",
    status_code=204,
    responses={404: {"description": "No such canned response in this tenant"}},
    summary="Remove a canned response",
)
async def remove_canned(shortcut: str, principal: Lead, request: Request) -> Response:
    app = container_of(request).store.app
    await on_store(request, app.remove_canned_response, principal.tenant_id, shortcut)
    return Response(status_code=204)


@router.get(
    "/settings",
    responses={
        200: {"content": {"application/json": {"schema": SETTINGS_SCHEMA}}},
    },
    tags=["settings"],
    summary="The tenant's settings",
)
async def get_settings(principal: Admin, request: Request) -> dict[str, Any]:
    """Prompt, handoff rules, thresholds, debounce, rate limit, bot messages, business
    hours, inactivity limit and queue routing; and, read-only, the plan with this month's
    count of new leads."""
    tenant = await tenant_of(request, principal.tenant_id)
    return await _with_plan(request, principal.tenant_id, settings_json(tenant.settings))


async def _with_plan(request: Request, tenant_id: UUID, shown: dict[str, Any]) -> dict[str, Any]:
    usage = await plan_usage(request, tenant_id)
    return {**shown, "plan": usage.model_dump()}


@router.patch(
    "/settings",
    responses={
        200: {"content": {"application/json": {"schema": SETTINGS_SCHEMA}}},
        422: {"description": "An unknown key or a bad value: nothing is changed"},
    },
    tags=["settings"],
    summary="Change some of the tenant's settings",
)
async def patch_settings(
    principal: Admin,
    request: Request,
    changes: Annotated[
        dict[str, Any],
        Body(openapi_examples={str(i): {"value": v} for i, v in enumerate(PATCH_EXAMPLES)}),
    ],
) -> dict[str, Any]:
    """The keys given change (mappings are replaced whole); the answer is every setting."""
    app = container_of(request).store.app
    by = str(principal.subject_id)
    settings = await on_store(
        request, lambda: app.configure_tenant(principal.tenant_id, changes, by=by)
    )
    return await _with_plan(request, principal.tenant_id, settings_json(settings))

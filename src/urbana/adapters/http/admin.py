"""Admin endpoints (tenants, channels), guarded by URBANA_ADMIN_API_KEY."""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from urbana.adapters.bootstrap import Container
from urbana.adapters.http.common import container_of
from urbana.adapters.postgres.knowledge import document_id_for
from urbana.application.gateways import gateway_config, tenant_uuid

router = APIRouter(prefix="/admin", tags=["admin"])


async def require_admin(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_admin_key: Annotated[str | None, Header()] = None,
) -> Container:
    container = container_of(request)
    expected = container.settings.admin_api_key
    if expected is None:
        raise HTTPException(403, "admin API disabled: set URBANA_ADMIN_API_KEY")
    given = x_admin_key
    if given is None and authorization and authorization.lower().startswith("bearer "):
        given = authorization[7:]
    if given is None or not hmac.compare_digest(
        given.encode(), expected.get_secret_value().encode()
    ):
        raise HTTPException(401, "missing or wrong admin key")
    return container


AdminDep = Annotated[Container, Depends(require_admin)]


class TenantIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class ChannelIn(BaseModel):
    kind: str
    fields: dict[str, str]


@router.post("/tenants", status_code=201)
async def create_tenant(body: TenantIn, container: AdminDep) -> JSONResponse:
    tenant_id, created = await asyncio.to_thread(container.store.app.register_tenant, body.name)
    return JSONResponse(
        {"tenant_id": str(tenant_id), "created": created}, status_code=201 if created else 200
    )


@router.post("/tenants/{tenant_id}/channels")
async def connect_channel(tenant_id: str, body: ChannelIn, container: AdminDep) -> JSONResponse:
    config = gateway_config(body.kind, body.fields)
    await asyncio.to_thread(container.store.app.connect_channel, tenant_uuid(tenant_id), config)
    return JSONResponse(
        {"tenant_id": tenant_id, "channel": body.kind, "route_key": config.route_key}
    )


class PlanIn(BaseModel):
    plan: str = Field(min_length=1, max_length=40, examples=["starter", "custom"])
    lead_limit: int | None = Field(
        default=None, ge=0, description="New leads a month; only for the custom plan"
    )


@router.put("/tenants/{tenant_id}/plan")
async def set_plan(tenant_id: str, body: PlanIn, container: AdminDep) -> JSONResponse:
    """Put a tenant on a plan (its monthly limit of new leads); an unknown plan is 422."""
    plan = await asyncio.to_thread(
        container.store.app.change_plan, tenant_uuid(tenant_id), body.plan, body.lead_limit
    )
    return JSONResponse({"tenant_id": tenant_id, "plan": plan.name, "lead_limit": plan.lead_limit})


class DocumentIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1)


@router.post("/tenants/{tenant_id}/knowledge", status_code=202)
async def add_knowledge(
    tenant_id: str, request: Request, container: AdminDep, name: str | None = None
) -> JSONResponse:
    """Add (or replace, by name) a Markdown / text document to a tenant's knowledge base.

    JSON `{"name", "text"}`, or the raw document as `text/markdown` / `text/plain` with
    `?name=`. Answered once `KnowledgeDocumentAdded` is durable; the knowledge role
    embeds it into pgvector moments later (202).
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("text/markdown", "text/plain"):
        if not name:
            raise HTTPException(422, "?name= is required with a raw document body")
        raw = await request.body()
        try:
            doc = DocumentIn(name=name, text=raw.decode("utf-8"))
        except (UnicodeDecodeError, ValidationError) as exc:
            raise HTTPException(422, f"not a UTF-8 text document: {exc}") from exc
    elif kind == "application/json":
        try:
            doc = DocumentIn.model_validate_json(await request.body())
        except ValidationError as exc:
            raise HTTPException(422, f"expected {{name, text}}: {exc.errors()}") from exc
    else:
        raise HTTPException(415, "send application/json, text/markdown or text/plain")
    tid = tenant_uuid(tenant_id)
    await asyncio.to_thread(container.store.app.add_knowledge_document, tid, doc.name, doc.text)
    return JSONResponse(
        {
            "tenant_id": tenant_id,
            "name": doc.name.strip(),
            "document_id": str(document_id_for(tid, doc.name.strip())),
            "characters": len(doc.text),
            "status": "accepted",
        },
        status_code=202,
    )

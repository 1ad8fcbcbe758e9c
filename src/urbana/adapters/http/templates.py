"""/v1 WhatsApp templates: the tenant's approved templates, and sending one to a lead.

Outside the 24 hours after a lead's last message the Cloud API takes only approved
templates (see docs/architecture.md, Templates and the window). Admins register the
templates Meta approved for the tenant's number; attendants send one, filling its
parameters, from a conversation they hold.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Request, Response
from pydantic import BaseModel, Field

from urbana.adapters.http.auth import Admin, Worker, v1_router
from urbana.adapters.http.common import (
    TENANT_ERRORS,
    container_of,
    examples,
    on_store,
    tenant_of,
)
from urbana.adapters.http.workspace import IdempotencyKey, MessageOut, me, on_conversation
from urbana.domain.templates import MAX_PARAMETERS, MAX_VALUE, Template
from urbana.domain.user import OVERSEERS

router = v1_router(tags=["templates"], responses=TENANT_ERRORS)


class TemplateIn(BaseModel):
    model_config = examples(
        {
            "language": "pt_BR",
            "parameters": ["nome", "horario"],
            "text": "Olá {{1}}! Sua visita está confirmada para {{2}}. Podemos ajudar?",
        }
    )
    language: str = Field(min_length=2, max_length=8)
    parameters: list[str] = Field(default_factory=list, max_length=MAX_PARAMETERS)
    text: str = Field(min_length=1, max_length=1_024)


class TemplateOut(BaseModel):
    model_config = examples(
        {
            "name": "confirmacao_visita",
            "language": "pt_BR",
            "parameters": ["nome", "horario"],
            "text": "Olá {{1}}! Sua visita está confirmada para {{2}}. Podemos ajudar?",
        }
    )
    name: str
    language: str
    parameters: list[str]
    text: str

    @classmethod
    def of(cls, template: Template) -> TemplateOut:
        return cls(
            name=template.name,
            language=template.language,
            parameters=list(template.parameters),
            text=template.text,
        )


class TemplateList(BaseModel):
    items: list[TemplateOut]


class TemplateSendIn(BaseModel):
    model_config = examples(
        {"name": "confirmacao_visita", "values": {"nome": "Ana", "horario": "amanhã às 10h"}}
    )
    name: str = Field(min_length=1, max_length=512)
    values: dict[str, Annotated[str, Field(max_length=MAX_VALUE)]] = Field(
        default_factory=dict, max_length=MAX_PARAMETERS
    )


@router.get(
    "/templates",
    summary="The tenant's approved WhatsApp templates",
)
async def list_templates(principal: Worker, request: Request) -> TemplateList:
    tenant = await tenant_of(request, principal.tenant_id)
    return TemplateList(items=[TemplateOut.of(t) for _, t in sorted(tenant.templates.items())])


@router.put(
    "/templates/{name}",
    responses={422: {"description": "A bad name, language or text"}},
    summary="Register an approved template",
)
async def put_template(
    name: str, body: TemplateIn, principal: Admin, request: Request
) -> TemplateOut:
    """As Meta approved it: its name, language, the names of its body parameters, and its
    text with `{{1}}`..`{{n}}`. Registering the same again changes nothing."""
    app = container_of(request).store.app
    template = await on_store(
        request,
        lambda: app.register_template(
            principal.tenant_id,
            name,
            language=body.language,
            parameters=body.parameters,
            text=body.text,
        ),
    )
    return TemplateOut.of(template)


@router.delete(
    "/templates/{name}",
    status_code=204,
    responses={404: {"description": "No such template in this tenant"}},
    summary="Remove a template",
)
async def delete_template(name: str, principal: Admin, request: Request) -> Response:
    app = container_of(request).store.app
    await on_store(request, app.remove_template, principal.tenant_id, name)
    return Response(status_code=204)


@router.post(
    "/conversations/{conversation_id}/template",
    status_code=202,
    responses={
        409: {"description": "Not held by the caller, or not in human mode"},
        422: {
            "description": "Unknown template, values that do not match its parameters, "
            "or a conversation not on the Cloud API"
        },
    },
    summary="Send an approved template to the lead",
)
async def send_template(
    conversation_id: UUID,
    body: TemplateSendIn,
    principal: Worker,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> MessageOut:
    """Queue the template with its values (202); it may go outside the 24-hour window.

    With an `Idempotency-Key`, a retry answers the same `outbound_id` and appends nothing.
    """
    outbound_id = await on_conversation(
        request,
        principal,
        conversation_id,
        lambda app: app.send_template(
            conversation_id,
            attendant=me(principal),
            name=body.name,
            values=body.values,
            idempotency_key=idempotency_key,
            as_supervisor=principal.role in OVERSEERS,
        ),
    )
    return MessageOut(outbound_id=outbound_id)

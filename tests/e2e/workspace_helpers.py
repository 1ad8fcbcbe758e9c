"""Conversations, leads and queues made through the application, for the /v1 command tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import httpx

from tests.e2e.conftest import Api
from urbana.application.app import Received, ReceiveMessage
from urbana.application.channels import InboundMessage


def new_phone() -> str:
    return f"55119{uuid4().int % 10**8:08d}"


def inbound(
    api: Api,
    tenant_id: UUID,
    text: str = "oi",
    *,
    phone: str | None = None,
    at: datetime | None = None,
) -> Received:
    """A lead writes (a new conversation, unless `phone` names an existing one)."""
    number = phone or new_phone()
    message = InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=number,
        phone=number,
        sent_at=at or datetime.now(UTC),
        kind="text",
        text=text,
        contact_name="Maria",
    )
    return api.store.app.receive_message(ReceiveMessage(tenant_id, "cloud", message))


def conversation(api: Api, tenant_id: UUID, *, at: datetime | None = None) -> UUID:
    return inbound(api, tenant_id, at=at).conversation_id


def waiting(api: Api, tenant_id: UUID) -> UUID:
    """A conversation waiting for a person."""
    cid = conversation(api, tenant_id)
    api.store.app.request_handoff(cid, reason="explicit_request")
    return cid


def held(api: Api, tenant_id: UUID, by: str) -> UUID:
    """A conversation `by` holds."""
    cid = conversation(api, tenant_id)
    api.store.app.assign(cid, assignee=by)
    return cid


def closed(api: Api, tenant_id: UUID) -> UUID:
    cid = conversation(api, tenant_id)
    api.store.app.close_conversation(cid, by="system")
    return cid


def queue(api: Api, tenant_id: UUID, *intents: str) -> str:
    return api.store.app.create_queue(tenant_id, f"Fila {uuid4().hex[:8]}", intents)


def post(
    api: Api, path: str, headers: dict[str, str], body: Any = None, **kw: Any
) -> httpx.Response:
    return httpx.post(f"{api.url}{path}", json=body, headers=headers, **kw)

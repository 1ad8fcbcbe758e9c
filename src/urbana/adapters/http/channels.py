"""/v1 channel routes (admin): the tenant's WhatsApp channels with their live state, and
linking an Evolution API instance by its QR code.

A channel's state is what its gateway last said (Evolution's `connection.update` and
`qrcode.updated` webhooks, or the answer of its connect endpoint), recorded as
`ChannelStateChanged` on the channel's route stream (see docs/architecture.md, Channel
state). The QR code opens the tenant's WhatsApp account to whoever scans it: only
admins read it, it is sealed in the store and it is never logged.
"""

from __future__ import annotations

import logging
from datetime import datetime
from uuid import UUID

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from urbana.adapters.channels.evolution import ConnectFailed
from urbana.adapters.http.auth import Admin, v1_router
from urbana.adapters.http.common import Responses, container_of, examples, on_store, route_errors
from urbana.adapters.http.problems import problem
from urbana.application.tenants import ChannelView

log = logging.getLogger("urbana.channels")

ERRORS = route_errors("Only admins manage channels")
router = v1_router(tags=["channels"], responses=ERRORS)
CONNECT_ERRORS: Responses = {
    404: {"description": "No such channel in this tenant"},
    409: {"description": "This kind of channel is not linked by QR code (only Evolution is)"},
    502: {"description": "Evolution could not be reached or refused (problem+json)"},
}


class ChannelOut(BaseModel):
    model_config = examples(
        {
            "id": "0c4f6a52-9d1e-5b7a-8c3f-2e1d0a9b8c7d",
            "kind": "evolution",
            "route_key": "loja-centro",
            "state": "waiting_qr",
            "state_reason": None,
            "since": "2026-12-02T03:10:00Z",
            "qr_code": "data:image/png;base64,iVBORw0KGgo...",
            "pairing_code": "WZYEH1YY",
        },
        {
            "id": "5b7a0c4f-9d1e-5a52-8c3f-0a9b2e1d8c7d",
            "kind": "cloud",
            "route_key": "100000000000001",
            "state": None,
            "state_reason": None,
            "since": None,
            "qr_code": None,
            "pairing_code": None,
        },
    )
    id: UUID = Field(description="The channel's id (of its route: kind and key)")
    kind: str = Field(description="cloud | evolution | zapi")
    route_key: str = Field(description="Its phone number id (cloud) or instance (evolution, zapi)")
    state: str | None = Field(
        description="connected | connecting | disconnected | waiting_qr; null: not reported yet"
    )
    state_reason: str | None = Field(description="The gateway's reason (Evolution statusReason)")
    since: datetime | None = Field(description="When the gateway reported the state")
    qr_code: str | None = Field(
        description="waiting_qr: the QR code to scan, as the base64 image Evolution sends"
    )
    pairing_code: str | None = Field(description="waiting_qr: the code to type instead, if any")

    @classmethod
    def of(cls, view: ChannelView) -> ChannelOut:
        return cls(
            id=view.id,
            kind=view.kind,
            route_key=view.route_key,
            state=view.state,
            state_reason=view.reason,
            since=view.since,
            qr_code=view.qr_code,
            pairing_code=view.pairing_code,
        )


class ChannelList(BaseModel):
    model_config = examples(
        {
            "items": [
                {
                    "id": "0c4f6a52-9d1e-5b7a-8c3f-2e1d0a9b8c7d",
                    "kind": "evolution",
                    "route_key": "loja-centro",
                    "state": "disconnected",
                    "state_reason": "401",
                    "since": "2026-12-02T03:10:00Z",
                    "qr_code": None,
                    "pairing_code": None,
                }
            ]
        }
    )
    items: list[ChannelOut]


@router.get(
    "/channels",
    summary="The tenant's channels and their live state",
)
async def channels(principal: Admin, request: Request) -> ChannelList:
    """Every connected channel, in the order it was connected, with what its gateway last
    said of its link to WhatsApp (and, while it waits for a scan, the QR code)."""
    app = container_of(request).store.app
    views = await on_store(request, app.channels, principal.tenant_id)
    return ChannelList(items=[ChannelOut.of(v) for v in views])


@router.post(
    "/channels/{channel_id}/connect",
    response_model=ChannelOut,
    responses=CONNECT_ERRORS,
    summary="Link an Evolution instance to WhatsApp: its QR code to scan",
)
async def connect(
    channel_id: UUID, principal: Admin, request: Request
) -> ChannelOut | JSONResponse:
    """Ask Evolution for the instance's QR code (`GET /instance/connect/{instance}`) and
    record what it answered; the channel afterwards. Scanning it is reported by
    Evolution's `connection.update` webhook, which makes the channel `connected`."""
    container = container_of(request)
    app = container.store.app
    kind, config = await on_store(request, app.channel, principal.tenant_id, channel_id)
    if kind != "evolution":
        return problem(409, "not linked by QR code", f"a {kind} channel is not linked by QR code")
    try:
        state = await container.channels.evolution.connect(config)
    except ConnectFailed as exc:
        log.info("connect of channel %s failed: %s", channel_id, exc.reason)
        return problem(502, "gateway failed", exc.reason)
    await on_store(request, app.record_channel_state, principal.tenant_id, kind, state)
    views = await on_store(request, app.channels, principal.tenant_id)
    return ChannelOut.of(next(v for v in views if v.id == channel_id))

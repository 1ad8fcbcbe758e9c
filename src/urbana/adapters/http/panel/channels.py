"""The tenant's WhatsApp channels with their live state, and linking an Evolution number
by scanning its QR code.

The states come from `/v1/channels` (what each gateway last reported); the list is asked
again every few seconds (htmx polling), often while a channel waits for its QR code to be
scanned, so the code and then "conectado" appear without a reload. `Conectar` asks
Evolution for the code through `/v1/channels/{id}/connect`.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import Response

from urbana.adapters.http.panel.common import Api, admin_me, fragment, page
from urbana.adapters.http.panel.session import PREFIX, OurForm, to
from urbana.adapters.http.panel.v1 import V1, PanelError

router = APIRouter(prefix=PREFIX, include_in_schema=False)

# A gateway that answers the connect endpoint with something other than the channel:
# shown on the screen, not as an error page.
SHOWN_FAILURES = (409, 502)
KINDS = {"cloud": "WhatsApp Cloud API", "evolution": "Evolution API", "zapi": "Z-API"}
CHANNEL_STATES = {
    "connected": "conectado",
    "connecting": "conectando",
    "disconnected": "desconectado",
    "waiting_qr": "aguardando a leitura do QR code",
}


def _context(channels: list[dict[str, Any]]) -> dict[str, Any]:
    waiting = any(c["state"] in ("waiting_qr", "connecting") for c in channels)
    return {
        "channels": channels,
        "poll_s": 2 if waiting else 10,
        "KINDS": KINDS,
        "CHANNEL_STATES": CHANNEL_STATES,
    }


async def _screen(
    request: Request, v1: V1, error: str | None = None, status_code: int = 200
) -> Response:
    """The channels screen, with what the gateway said when it would not connect."""
    me = await admin_me(v1)
    found = (await v1.get("/channels"))["items"]
    return await page(
        request,
        v1,
        "channels.html",
        status_code=status_code,
        me=me,
        error=error,
        **_context(found),
    )


@router.get("/channels")
async def channels(request: Request, v1: Api) -> Response:
    return await _screen(request, v1)


@router.get("/channels/fragment")
async def channels_fragment(request: Request, v1: Api) -> Response:
    found = (await v1.get("/channels"))["items"]
    return fragment(request, "_channels.html", **_context(found))


@router.post("/channels/{channel_id}/connect", dependencies=[OurForm])
async def connect(request: Request, v1: Api, channel_id: UUID) -> Response:
    try:
        await v1.post(f"/channels/{channel_id}/connect")
    except PanelError as exc:
        if exc.status not in SHOWN_FAILURES:
            raise
        return await _screen(request, v1, exc.detail, exc.status)
    return to("/channels")

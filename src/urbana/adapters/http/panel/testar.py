"""`Testar`: an admin talks to the tenant's bot as a lead would, and sees why it answered.

Each message goes through `/v1/console/messages` (the console channel: the store, the
responder and the dispatcher, as a lead's message would); the conversation is read from
`/v1/console/conversations/{id}`, and its part of the screen is asked again every second
(htmx polling) so the bot's reply appears without a reload, with the passages it was
given, its intent and confidence, and a handoff's reason. The asking stops once the bot
has had its say (`QUIET_S` after the conversation last changed, unless the lead spoke
last to the AI): each ask is a read of the conversation, and goes to the access log.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from urbana.adapters.http.panel.common import Api, admin_me, fragment, page
from urbana.adapters.http.panel.session import PREFIX, OurForm, to
from urbana.adapters.http.panel.v1 import V1, PanelError, Refused

router = APIRouter(prefix=PREFIX, include_in_schema=False)

SESSION_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# How long after its last change a conversation is still asked for: the AI's reply comes
# within its debounce and model call, a handoff's summary within the model's timeout.
QUIET_S = 30.0
# `?n=`: the number of the message the admin just sent, until the view shows it.
Said = Annotated[int | None, Query(ge=1)]


def still_coming(
    conversation: dict[str, Any] | None, now: datetime, said: int | None = None
) -> bool:
    """Whether the bot may still add to the conversation, so the thread keeps asking;
    `said`, the number of the message the admin just sent (while the view lacks it)."""
    if conversation is None:  # not in the conversation view yet
        return True
    messages = conversation["messages"]
    if said is not None and not any(m["key"] == f"in:{said}" for m in messages):
        return True  # the read models are behind the admin's message
    if conversation["status"] == "ai" and messages and messages[-1]["author"] == "lead":
        return True  # the AI has not answered yet
    changed = conversation["updated_at"]
    return changed is None or now - datetime.fromisoformat(changed) < timedelta(seconds=QUIET_S)


async def _conversation(v1: V1, conversation_id: UUID) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = await v1.get(f"/console/conversations/{conversation_id}")
    except PanelError as exc:
        if exc.status != 404:  # 404: not in the conversation view yet
            raise
        return None
    return found


async def _screen(
    request: Request,
    v1: V1,
    conversation_id: UUID | None,
    session: str | None,
    said: int | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    """The Testar screen, for admins: the conversation (once it is in the view) and a
    fresh idempotency key for the next message."""
    me = await admin_me(v1)
    conversation = await _conversation(v1, conversation_id) if conversation_id else None
    return await page(
        request,
        v1,
        "testar.html",
        status_code=status_code,
        me=me,
        c=conversation,
        conversation_id=conversation_id,
        said=said,
        polling=still_coming(conversation, datetime.now(UTC), said),
        session=session,
        error=error,
        idempotency_key=uuid4().hex,
    )


@router.get("/testar")
async def chat_page(
    request: Request,
    v1: Api,
    c: UUID | None = None,
    s: str | None = None,
    n: Said = None,
) -> Response:
    session = s if s and re.fullmatch(SESSION_PATTERN, s) else None
    return await _screen(request, v1, c, session, n)


@router.get("/testar/{conversation_id}/fragment")
async def chat_fragment(
    request: Request,
    v1: Api,
    conversation_id: UUID,
    n: Said = None,
) -> Response:
    conversation = await _conversation(v1, conversation_id)
    return fragment(
        request,
        "_testar_thread.html",
        c=conversation,
        conversation_id=conversation_id,
        said=n,
        polling=still_coming(conversation, datetime.now(UTC), n),
    )


@router.post("/testar", dependencies=[OurForm])
async def say(
    request: Request,
    v1: Api,
    text: Annotated[str, Form(max_length=4096)],
    idempotency_key: Annotated[str, Form(pattern="^[A-Za-z0-9_-]{1,64}$")],
    session: Annotated[str, Form(pattern=f"{SESSION_PATTERN}|^$")] = "",
) -> Response:
    body: dict[str, Any] = {"text": text}
    if session:
        body["session"] = session
    try:
        said = await v1.post(
            "/console/messages", body, headers={"Idempotency-Key": idempotency_key}
        )
    except Refused as exc:
        return await _screen(request, v1, None, session or None, error=exc.detail, status_code=422)
    cid, key = said["conversation_id"], f"in:{said['seq']}"
    # The screen shows the message once the conversation view has it; the reply follows.
    await v1.until(
        f"/console/conversations/{cid}",
        lambda found: any(m["key"] == key for m in found["messages"]),
    )
    return to(f"/testar?c={cid}&s={said['session']}&n={said['seq']}")

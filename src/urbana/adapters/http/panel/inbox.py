"""The queue and the inbox (`Fila`): waiting for a person, mine, all, with filters.

The list is also a fragment the browser redraws when /v1/stream says a conversation
changed; `wait=CONVERSATION:POSITION` makes the redraw wait until the read models have
applied that event, so the list never shows the state from before it.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from urbana.adapters.http.panel.common import Api, fragment, page
from urbana.adapters.http.panel.session import PREFIX, OurForm
from urbana.adapters.http.panel.v1 import V1

router = APIRouter(prefix=PREFIX, include_in_schema=False)

VIEWS = {"waiting": "Aguardando", "mine": "Minhas", "all": "Todas"}
Text = Annotated[str | None, Query(max_length=128)]


async def _items(
    v1: V1, view: str, status: str | None, label: str | None, queue: str | None
) -> list[dict[str, Any]]:
    if view == "waiting":
        found = await v1.get("/queue", queue=queue, limit=100)
    else:
        assignee = "me" if view == "mine" else None
        found = await v1.get(
            "/conversations",
            assignee=assignee,
            status=status,
            label=label,
            queue=queue,
            limit=100,
        )
    items: list[dict[str, Any]] = found["items"]
    return items


async def _caught_up(v1: V1, wait: str | None) -> None:
    """Wait until the read models show the event `wait` names (`ID:POSITION`)."""
    if not wait or ":" not in wait:
        return
    conversation_id, _, position = wait.partition(":")
    if not position.isdigit():
        return
    target = int(position)
    await v1.caught_up(conversation_id, lambda c: int(c["position"]) >= target)


def _context(view: str, status: str | None, label: str | None, queue: str | None) -> dict[str, Any]:
    given = {"view": view, "status": status, "label": label, "queue": queue}
    return {**given, "query": urlencode({k: v for k, v in given.items() if v})}


@router.get("/")
async def inbox(
    request: Request,
    v1: Api,
    view: Annotated[str, Query(pattern="^(waiting|mine|all)$")] = "waiting",
    status: Annotated[str | None, Query(pattern="^(|ai|waiting_human|human|closed)$")] = None,
    label: Text = None,
    queue: Text = None,
) -> Response:
    me = await v1.get("/me")
    if me["role"] not in ("attendant", "supervisor", "admin", "auditor"):
        return await page(request, v1, "no_conversations.html", me=me)
    items = await _items(v1, view, status, label, queue)
    waiting = items if view == "waiting" else (await v1.get("/queue", limit=100))["items"]
    return await page(
        request,
        v1,
        "inbox.html",
        me=me,
        items=items,
        views=VIEWS,
        waiting_count=len(waiting),
        **_context(view, status, label, queue),
    )


@router.get("/fragments/list")
async def conversation_list(
    request: Request,
    v1: Api,
    view: Annotated[str, Query(pattern="^(waiting|mine|all)$")] = "waiting",
    status: Annotated[str | None, Query(pattern="^(|ai|waiting_human|human|closed)$")] = None,
    label: Text = None,
    queue: Text = None,
    wait: Annotated[str | None, Query(max_length=80)] = None,
) -> Response:
    await _caught_up(v1, wait)
    items = await _items(v1, view, status, label, queue)
    waiting = items if view == "waiting" else (await v1.get("/queue", limit=100))["items"]
    return fragment(
        request,
        "_list.html",
        items=items,
        waiting_count=len(waiting),
        **_context(view, status, label, queue),
    )


@router.post("/availability", dependencies=[OurForm])
async def availability(
    v1: Api,
    value: Annotated[str, Form(alias="availability", pattern="^(online|away|offline)$")],
    back: Annotated[str, Form(max_length=500)] = f"{PREFIX}/",
) -> Response:
    await v1.call("PUT", "/me/availability", json={"availability": value})
    # Only back to a panel page: the field must not send the browser elsewhere.
    target = back if back.startswith(f"{PREFIX}/") else f"{PREFIX}/"
    return RedirectResponse(target, status_code=303)

"""The queue and the inbox (`Fila`): waiting for a person, mine, all, with filters.

The list is also a fragment the browser redraws when /v1/stream says a conversation
changed; `wait=CONVERSATION:POSITION` makes the redraw wait until the read models have
applied that event, so the list never shows the state from before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from urbana.adapters.http.panel.common import Api, fragment, page
from urbana.adapters.http.panel.session import PREFIX, OurForm
from urbana.adapters.http.panel.v1 import V1

router = APIRouter(prefix=PREFIX, include_in_schema=False)

VIEWS = {"waiting": "Aguardando", "mine": "Minhas", "all": "Todas"}
Text = Annotated[str | None, Query(max_length=128)]


@dataclass(frozen=True)
class Filters:
    """What the list shows: a view (waiting, mine, all) and the filters on it."""

    view: str
    status: str | None
    label: str | None
    queue: str | None

    def context(self) -> dict[str, Any]:
        """The filters for the template, and as the query string the live redraw repeats."""
        given = {"view": self.view, "status": self.status, "label": self.label, "queue": self.queue}
        return {**given, "query": urlencode({k: v for k, v in given.items() if v})}


def _filters(
    view: Annotated[str, Query(pattern="^(waiting|mine|all)$")] = "waiting",
    status: Annotated[str | None, Query(pattern="^(|ai|waiting_human|human|closed)$")] = None,
    label: Text = None,
    queue: Text = None,
) -> Filters:
    return Filters(view, status, label, queue)


Filtered = Annotated[Filters, Depends(_filters)]


async def _listing(v1: V1, f: Filters) -> dict[str, Any]:
    """The conversations the filters select, the count waiting for a person, the filters."""
    if f.view == "waiting":
        found = await v1.get("/queue", queue=f.queue, limit=100)
    else:
        assignee = "me" if f.view == "mine" else None
        found = await v1.get(
            "/conversations",
            assignee=assignee,
            status=f.status,
            label=f.label,
            queue=f.queue,
            limit=100,
        )
    items: list[dict[str, Any]] = found["items"]
    waiting = items if f.view == "waiting" else (await v1.get("/queue", limit=100))["items"]
    return {"items": items, "waiting_count": len(waiting), **f.context()}


async def _caught_up(v1: V1, wait: str | None) -> bool:
    """Wait until the read models show the event `wait` names (`ID:POSITION`); False
    when they still do not at the end of the wait."""
    if not wait or ":" not in wait:
        return True
    conversation_id, _, position = wait.partition(":")
    if not position.isdigit():
        return True
    _, reached = await v1.at_position(conversation_id, int(position))
    return reached


@router.get("/")
async def inbox(request: Request, v1: Api, filters: Filtered) -> Response:
    me = await v1.get("/me")
    if me["role"] not in ("attendant", "supervisor", "admin", "auditor"):
        return await page(request, v1, "no_conversations.html", me=me)
    listing = await _listing(v1, filters)
    return await page(request, v1, "inbox.html", me=me, views=VIEWS, **listing)


@router.get("/fragments/list")
async def conversation_list(
    request: Request,
    v1: Api,
    filters: Filtered,
    wait: Annotated[str | None, Query(max_length=80)] = None,
) -> Response:
    shown = await _caught_up(v1, wait)
    return fragment(request, "_list.html", behind=not shown, **await _listing(v1, filters))


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

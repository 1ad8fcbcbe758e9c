"""What every panel screen shares: the /v1 client of the request, who is signed in,
and drawing a template with them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response

from urbana.adapters.http.panel.v1 import V1, PanelError
from urbana.adapters.http.panel.views import render
from urbana.adapters.live import LiveFeed

# Roles as the API names them, and what each may see in the panel (the API decides;
# the panel hides what it would refuse).
WORKERS = frozenset({"attendant", "supervisor", "admin"})
READERS = WORKERS | {"auditor"}
STEERING = frozenset({"supervisor", "admin", "analyst", "auditor"})
AUDITORS = frozenset({"auditor", "admin"})  # data subject requests (the privacy routes)


async def _v1(request: Request) -> AsyncIterator[V1]:
    # Where the live feed stands before the screen reads anything: a page's stream starts
    # right after it, so what happens while the page reaches the browser is not missed.
    feed: LiveFeed | None = getattr(request.app.state, "live", None)
    request.state.stream_after = feed.position if feed is not None and feed.following else None
    client = V1.of(request)
    try:
        yield client
    finally:
        await client.aclose()


Api = Annotated[V1, Depends(_v1)]


def may(me: dict[str, Any]) -> dict[str, bool]:
    role = me["role"]
    return {
        "read": role in READERS,
        "work": role in WORKERS,
        "kpis": role in STEERING,
        "admin": role == "admin",
        "audit": role in AUDITORS,
    }


async def me_who_may(v1: V1, right: str, refusal: str) -> dict[str, Any]:
    """Who is signed in, if `may` gives them `right`; a 403 page saying `refusal`
    otherwise (the API would refuse anyway)."""
    me: dict[str, Any] = await v1.get("/me")
    if not may(me)[right]:
        raise PanelError(403, refusal)
    return me


async def admin_me(v1: V1) -> dict[str, Any]:
    """Who is signed in, if an admin; a 403 page otherwise."""
    return await me_who_may(v1, "admin", "only admins")


async def team_of(v1: V1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The tenant's users, and the name each is shown by (the e-mail when it has none)."""
    team: list[dict[str, Any]] = (await v1.get("/users"))["items"]
    return team, {str(m["id"]): m.get("name") or m.get("email") for m in team}


async def page(
    request: Request, v1: V1, template: str, status_code: int = 200, **context: Any
) -> Response:
    """A full screen: the header needs who is signed in, so /v1/me is asked first."""
    me = context.pop("me", None) or await v1.get("/me")
    after = getattr(request.state, "stream_after", None)
    shared = {"me": me, "may": may(me), "stream_after": after}
    return render(request, template, {**shared, **context}, status_code)


BEHIND = "X-Urbana-Behind"


def fragment(request: Request, template: str, *, behind: bool = False, **context: Any) -> Response:
    """A piece of a screen, redrawn by the live updates; `behind` when the read models
    had not caught up with the event it was asked for by the end of the wait (the
    header tells panel.js to ask again)."""
    response = render(request, template, context)
    if behind:
        response.headers[BEHIND] = "1"
    return response

"""/v1/stream: the tenant's live events as Server-Sent Events (see `urbana.adapters.http.sse`).

The process's `LiveFeed` (started in the app's lifespan) follows the store's log, so a
client connected here sees what any process wrote; reconnecting with `Last-Event-ID`
resumes exactly after that event, also on another process or after a restart.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, HTTPException, Query, Request
from sse_starlette import EventSourceResponse

from urbana.adapters.http.auth import Anyone, v1_router
from urbana.adapters.http.common import UNAUTHORIZED, Responses
from urbana.adapters.http.sse import last_event_id, sse_messages
from urbana.adapters.live import LiveFeed, LiveFeedUnavailable

router = v1_router(tags=["live"])

SEND_TIMEOUT_S = 30.0  # a client that takes no bytes for this long is cut off

_STREAM_DOC: Responses = {
    200: {
        "description": "An endless event stream: `id:` is the event's global position, "
        "`event:` one of conversation.updated, message.created, handoff.requested, "
        "lead.updated, channel.updated (admins), `data:` JSON without personal data; "
        "heartbeat comments keep "
        "proxies from closing it",
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "example": 'id: 1842\nevent: conversation.updated\ndata: {"conversation_id":'
                ' "3d6f0e8a-1b2c-4d5e-8f90-a1b2c3d4e5f6", "status": "waiting_human"}\n\n',
            }
        },
    },
    400: {"description": "Last-Event-ID is not a position"},
    **UNAUTHORIZED,
    503: {"description": "This process's live feed is not following the log; retry"},
}


@router.get(
    "/stream",
    response_class=EventSourceResponse,
    responses=_STREAM_DOC,
    summary="Live updates (Server-Sent Events), resumable with Last-Event-ID",
)
async def stream(
    # Every role may listen; the feed sends each only the event types its role sees (an
    # analyst gets lead.updated alone).
    principal: Anyone,
    request: Request,
    last_seen: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=32,
            description="The last `id:` received: resume right after it",
        ),
    ] = None,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            description="Start right after this position: a panel page's, taken before it "
            "read what it shows (`Last-Event-ID`, sent on a reconnect, wins)",
        ),
    ] = None,
) -> EventSourceResponse:
    """What changes in the caller's tenant from now on, or after `Last-Event-ID` (or
    `after`)."""
    try:
        resumed = last_event_id(last_seen)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    feed: LiveFeed = request.app.state.live
    if not feed.following:
        # Said before the 200: a stream that could only end at once would make the
        # client reconnect in a tight loop.
        raise LiveFeedUnavailable("the live feed is not following the log")
    start = after if resumed is None else resumed
    items = feed.subscribe(principal.tenant_id, principal.role, start)
    return EventSourceResponse(sse_messages(items), ping=None, send_timeout=SEND_TIMEOUT_S)

"""Live events as Server-Sent Events, for the `/v1/stream` route (sse-starlette).

    feed: LiveFeed = request.app.state.live      # one per process, started in the lifespan
    after = last_event_id(request.headers.get("last-event-id"))  # ValueError: a 400
    items = feed.subscribe(principal.tenant_id, principal.role, after)
    return EventSourceResponse(sse_messages(items), ping=None, send_timeout=...)

Each live event is `id: <global position>`, `event: <type>`, `data: <JSON>`; a heartbeat
is a comment line, which proxies see as traffic and clients ignore (the feed makes them,
so the response's own ping is off). A client's `EventSource` sends the last id back as
`Last-Event-ID` when it reconnects, and the feed resumes from it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from sse_starlette import ServerSentEvent

from urbana.application.live import Heartbeat, LiveEvent


def last_event_id(header: str | None) -> int | None:
    """The position a reconnecting client names; None without one (start from now).

    ValueError for anything but a non-negative integer: our ids are positions, so only
    a client that made one up sends another.
    """
    if header is None or not header.strip():
        return None
    value = header.strip()
    if not (value.isascii() and value.isdigit()):
        raise ValueError("Last-Event-ID must be a position (a non-negative integer)")
    return int(value)


def sse_message(item: LiveEvent | Heartbeat) -> ServerSentEvent:
    """One server-sent event: a live event, or a heartbeat comment."""
    if isinstance(item, Heartbeat):
        return ServerSentEvent(comment="heartbeat")
    return ServerSentEvent(data=orjson.dumps(item.data).decode(), event=item.type, id=str(item.id))


async def sse_messages(
    items: AsyncIterator[LiveEvent | Heartbeat],
) -> AsyncIterator[ServerSentEvent]:
    """A subscription as server-sent events."""
    async for item in items:
        yield sse_message(item)

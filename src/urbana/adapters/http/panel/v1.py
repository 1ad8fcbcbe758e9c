"""The panel's only way to the data: the /v1 API, called in-process with the caller's token.

The panel's server side sends each request through the same ASGI app (httpx over
`ASGITransport`), so it passes through the same authentication, roles, validation and
error mapping a script meets; nothing is read behind the API's back. An answer the
panel cannot show as a page becomes one of the exceptions below, which `pages` turns
into a screen (401: back to the login; 403, 404: a page that says so).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import Request

from urbana.adapters.http.auth import SESSION_COOKIE

# How long an action waits for the read models to show what it did (they follow the
# store through Kafka); past it the page is drawn as it is, and the live stream brings
# the rest.
CATCH_UP_S = 5.0
CATCH_UP_POLL_S = 0.05


class PanelError(Exception):
    """A /v1 answer the panel shows as a page of its own."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class SignedOut(PanelError):
    """No session, or the API no longer accepts it: sign in again."""


class Refused(PanelError):
    """A 409 or 422: the conversation's state (or the input) does not allow it."""


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else str(detail or body)


class V1:
    """A /v1 client for one panel request, acting as the signed-in user."""

    def __init__(self, request: Request, token: str | None) -> None:
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=request.app),
            base_url="http://panel.internal",
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )

    @classmethod
    def of(cls, request: Request) -> V1:
        """The client for the session cookie's user; SignedOut without one."""
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            raise SignedOut(401, "sign in")
        return cls(request, token)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON of a successful answer (None for 204); a PanelError otherwise."""
        response = await self.fetch(method, path, **kwargs)
        return None if response.status_code == 204 else response.json()

    async def fetch(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A successful answer as it came (a download, say); a PanelError otherwise."""
        response = await self._client.request(method, f"/v1{path}", **kwargs)
        if response.is_success:
            return response
        detail = _detail(response)
        if response.status_code == 401:
            raise SignedOut(401, detail)
        if response.status_code in (409, 422):
            raise Refused(response.status_code, detail)
        raise PanelError(response.status_code, detail)

    async def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v not in (None, "")}
        return await self.call("GET", path, params=clean)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return await self.call("POST", path, json=body, **kwargs)

    async def caught_up(
        self, conversation_id: str, done: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any] | None:
        """The conversation once the read models show `done` of it (see `until`)."""
        return await self.until(f"/conversations/{conversation_id}", done)

    async def at_position(
        self, conversation_id: str, position: int
    ) -> tuple[dict[str, Any] | None, bool]:
        """The conversation once the read models reached the event at `position` (see
        `until`), and whether they had by the end of the wait."""
        found = await self.caught_up(conversation_id, lambda c: int(c["position"]) >= position)
        return found, found is not None and int(found["position"]) >= position

    async def until(
        self, path: str, done: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any] | None:
        """`GET path` once the read models show `done` of it; at CATCH_UP_S, as it is
        then (None while they do not have it at all: a new conversation, not yet
        projected)."""
        deadline = time.monotonic() + CATCH_UP_S
        while True:
            try:
                found: dict[str, Any] | None = await self.get(path)
            except PanelError as exc:
                if exc.status != 404:
                    raise
                found = None
            if (found is not None and done(found)) or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(CATCH_UP_POLL_S)

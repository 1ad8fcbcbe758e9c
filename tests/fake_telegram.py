"""A local stand-in for the Telegram Bot API's sendMessage, run in a thread of its own.

It answers as Telegram does: `{"ok": true, "result": {...message...}}`, or
`{"ok": false, "error_code", "description", "parameters"}`. Per bot token it can be
down (a 502 or a 429 with `retry_after`) or refuse (a 400), so tests drive outages
without timing anything: they wait on what the fake saw. Like Telegram, it refuses
buttons that link to a local URL.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class FakeTelegram:
    url: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)  # accepted, with "token"
    attempts: dict[str, int] = field(default_factory=dict)  # by token
    down: dict[str, int] = field(default_factory=dict)  # token -> 502 or 429
    refuse: dict[str, str] = field(default_factory=dict)  # token -> 400 description
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def to(self, token: str) -> list[dict[str, Any]]:
        with self._changed:
            return [m for m in self.messages if m["token"] == token]

    def wait_for(self, done: Callable[[FakeTelegram], bool], timeout: float = 60.0) -> None:
        """Block until `done(self)` holds (a guard against a hang, not a timing check)."""
        with self._changed:
            if not self._changed.wait_for(lambda: done(self), timeout=timeout):
                raise TimeoutError("the fake Telegram never saw what was awaited")

    async def until(self, done: Callable[[FakeTelegram], bool]) -> None:
        await asyncio.to_thread(self.wait_for, done)

    def set_down(self, token: str, status: int | None) -> None:
        with self._changed:
            if status is None:
                self.down.pop(token, None)
            else:
                self.down[token] = status

    async def send_message(self, request: Request) -> JSONResponse:
        token = request.path_params["token"]
        body = await request.json()
        with self._changed:
            self.attempts[token] = self.attempts.get(token, 0) + 1
            try:
                status = self.down.get(token)
                if status == 429:
                    return _error(429, "Too Many Requests: retry after 1", retry_after=1)
                if status is not None:
                    return _error(status, "Bad Gateway")
                if token in self.refuse:
                    return _error(400, self.refuse[token])
                if _local_button(body):  # as Telegram: no local URLs in buttons
                    return _error(400, "Bad Request: BUTTON_URL_INVALID")
                message = {
                    "message_id": len(self.messages) + 1,
                    "date": int(time.time()),
                    "chat": {"id": body["chat_id"], "type": "group"},
                    "text": body["text"],
                    "reply_markup": body.get("reply_markup"),
                }
                self.messages.append({"token": token, **message})
                return JSONResponse({"ok": True, "result": message})
            finally:
                self._changed.notify_all()


def _local_button(body: dict[str, Any]) -> bool:
    rows = (body.get("reply_markup") or {}).get("inline_keyboard", [])
    hosts = {urlsplit(b.get("url", "")).hostname for row in rows for b in row}
    return bool(hosts & {"localhost", "127.0.0.1"})


def _error(code: int, description: str, retry_after: int | None = None) -> JSONResponse:
    doc: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        doc["parameters"] = {"retry_after": retry_after}
    return JSONResponse(doc, status_code=code)


@contextmanager
def fake_telegram() -> Iterator[FakeTelegram]:
    fake = FakeTelegram()
    app = Starlette(routes=[Route("/bot{token}/sendMessage", fake.send_message, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    fake.url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join()

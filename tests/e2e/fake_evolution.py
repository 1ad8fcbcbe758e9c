"""A local stand-in for Evolution API v2's instance controller: `GET /instance/connect/{instance}`.

It answers as Evolution's `connectToWhatsapp` does: the instance's QR code
(`{pairingCode, code, base64, count}`) while it is not linked, `{instance: {instanceName,
state: "open"}}` once it is, 401 for a wrong `apikey` header and 404 for an unknown
instance (Evolution's error body shape).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

QR_IMAGE = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAQAAAAEAAQMAAABmvDolAAAAFAKEQR"
PAIRING_CODE = "WZYEH1YY"


@dataclass
class FakeEvolution:
    api_key: str
    url: str = ""
    linked: set[str] = field(default_factory=set)  # instances whose phone is linked
    known: set[str] = field(default_factory=set)
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def connect(self, request: Request) -> JSONResponse:
        instance = request.path_params["instance"]
        self.calls.append({"instance": instance, "apikey": request.headers.get("apikey")})
        if request.headers.get("apikey") != self.api_key:
            return JSONResponse(
                {"status": 401, "error": "Unauthorized", "response": {"message": "Unauthorized"}},
                status_code=401,
            )
        if instance not in self.known:
            message = f'The "{instance}" instance does not exist'
            return JSONResponse(
                {"status": 404, "error": "Not Found", "response": {"message": [message]}},
                status_code=404,
            )
        if instance in self.linked:
            return JSONResponse({"instance": {"instanceName": instance, "state": "open"}})
        return JSONResponse(
            {"pairingCode": PAIRING_CODE, "code": "2@ABC123XYZ789", "base64": QR_IMAGE, "count": 1}
        )


class _Thread(threading.Thread):
    def __init__(self, server: uvicorn.Server) -> None:
        super().__init__(daemon=True)
        self.server = server

    def run(self) -> None:
        asyncio.run(self.server.serve())


@contextmanager
def fake_evolution(api_key: str) -> Iterator[FakeEvolution]:
    fake = FakeEvolution(api_key)
    app = Starlette(routes=[Route("/instance/connect/{instance}", fake.connect)])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = _Thread(server)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("fake Evolution did not start")
        time.sleep(0.01)
    fake.url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)

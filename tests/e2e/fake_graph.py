"""A scripted stand-in for Meta's Graph API send endpoint, with the faults real gateways have.

`POST /{version}/{phone_number_id}/messages` answers as the Cloud API does, following a
script of phases played from `play()`:

- `ok`: the message is accepted (it reaches the lead: a `Delivery`), answered with its
  wamid after `latency` seconds;
- `error`: refused with an HTTP status and a Graph API error body (`code`), optionally
  with `Retry-After`; nothing is delivered;
- `slow`: accepted and delivered, but answered only after `hold` seconds, after the
  client has given up.

Like Meta, it posts a `sent` status webhook for every accepted message to the engine's
webhook, signed with `X-Hub-Signature-256` (the tenant's app secret) and echoing the
send's `biz_opaque_callback_data`, whether or not the client read the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass(frozen=True)
class Phase:
    mode: Literal["ok", "error", "slow"]
    seconds: float
    status: int = 200
    code: int | None = None
    retry_after: str | None = None
    hold: float = 0.0  # slow: how long the answer is held back


@dataclass(frozen=True)
class Delivery:
    """A message the gateway took: what the lead receives."""

    to: str
    text: str
    wamid: str
    callback_data: str | None
    at: float


@dataclass(frozen=True)
class Seen:
    """Any request, taken or refused."""

    to: str
    mode: str
    at: float


@dataclass
class Webhook:
    url: str
    app_secret: str


@dataclass
class FakeGraph:
    url: str = ""
    latency: float = 0.0
    status_delay: float = 0.1
    deliveries: list[Delivery] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    webhooks: dict[str, Webhook] = field(default_factory=dict)  # phone_number_id -> where
    status_posts: list[int] = field(default_factory=list)  # the engine's answers
    _script: tuple[Phase, ...] = ()
    _started: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def play(self, phases: Sequence[Phase]) -> None:
        """Start the script now; after its last phase every send is accepted."""
        with self._lock:
            self._script = tuple(phases)
            self._started = time.monotonic()

    def post_statuses(self, phone_number_id: str, engine_url: str, app_secret: str) -> None:
        self.webhooks[phone_number_id] = Webhook(
            f"{engine_url}/webhooks/whatsapp-cloud", app_secret
        )

    def delivered_to(self, wa_id: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.to == wa_id]

    def copies(self) -> Counter[str]:
        """Deliveries per recipient."""
        return Counter(d.to for d in self.deliveries)

    def refused(self) -> list[Seen]:
        return [r for r in self.requests if r.mode == "error"]

    def _phase(self) -> Phase:
        elapsed = time.monotonic() - self._started
        for phase in self._script:
            if elapsed < phase.seconds:
                return phase
            elapsed -= phase.seconds
        return Phase("ok", 0)

    async def send(self, request: Request) -> Response:
        body = await request.json()
        phase = self._phase()
        to = str(body.get("to") or body.get("recipient"))
        self.requests.append(Seen(to, phase.mode, time.monotonic()))
        if phase.mode == "error":
            headers = {"Retry-After": phase.retry_after} if phase.retry_after else {}
            return JSONResponse(
                {
                    "error": {
                        "message": f"(#{phase.code}) scripted fault",
                        "type": "OAuthException",
                        "code": phase.code,
                        "error_data": {"messaging_product": "whatsapp", "details": "scripted"},
                        "fbtrace_id": uuid.uuid4().hex,
                    }
                },
                status_code=phase.status,
                headers=headers,
            )
        wamid = f"wamid.{uuid.uuid4().hex}"
        callback = body.get("biz_opaque_callback_data")
        self.deliveries.append(
            Delivery(to, body.get("text", {}).get("body", ""), wamid, callback, time.monotonic())
        )
        phone_number_id = request.path_params["phone_number_id"]
        if phone_number_id in self.webhooks:
            status = _status_webhook(phone_number_id, wamid, to, callback)
            asyncio.get_running_loop().create_task(
                self._post_status(self.webhooks[phone_number_id], status)
            )
        self.in_flight += 1
        try:
            await asyncio.sleep(phase.hold if phase.mode == "slow" else self.latency)
        finally:
            self.in_flight -= 1
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid}],
            }
        )

    async def _post_status(self, hook: Webhook, payload: dict[str, Any]) -> None:
        await asyncio.sleep(self.status_delay)
        body = json.dumps(payload).encode()
        signature = "sha256=" + hmac.new(hook.app_secret.encode(), body, hashlib.sha256).hexdigest()
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(20):  # Meta retries webhooks that are not answered 200
                try:
                    answer = await client.post(
                        hook.url,
                        content=body,
                        headers={
                            "Content-Type": "application/json",
                            "X-Hub-Signature-256": signature,
                        },
                    )
                except httpx.HTTPError:
                    await asyncio.sleep(0.5)
                    continue
                self.status_posts.append(answer.status_code)
                if answer.status_code == 200:
                    return
                await asyncio.sleep(0.5)


def _status_webhook(
    phone_number_id: str, wamid: str, to: str, callback: str | None
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "id": wamid,
        "status": "sent",
        "timestamp": str(int(time.time())),
        "recipient_id": to,
        "conversation": {"id": uuid.uuid4().hex, "origin": {"type": "service"}},
        "pricing": {"billable": False, "pricing_model": "PMP", "category": "service"},
    }
    if callback is not None:
        status["biz_opaque_callback_data"] = callback
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "5511933334444",
                                "phone_number_id": phone_number_id,
                            },
                            "statuses": [status],
                        },
                    }
                ],
            }
        ],
    }


class _Thread(threading.Thread):
    def __init__(self, server: uvicorn.Server) -> None:
        super().__init__(daemon=True)
        self.server = server

    def run(self) -> None:
        asyncio.run(self.server.serve())


@contextmanager
def running_graph() -> Iterator[FakeGraph]:
    """The fake on a free local port, for the time of the `with`."""
    graph = FakeGraph()
    app = Starlette(
        routes=[Route("/{version}/{phone_number_id}/messages", graph.send, methods=["POST"])]
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=1
        )
    )
    thread = _Thread(server)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    graph.url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        yield graph
    finally:
        server.should_exit = True
        thread.join(timeout=15)

"""Local stand-ins for the edges we don't own: an OpenAI-compatible server and Meta's
Graph API send endpoint, speaking the real protocols to the real client code."""

from __future__ import annotations

import asyncio
import json
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

from tests.provider_ids import cloud_wamid

ANSWER = {
    "reply": "Atendemos de segunda a sexta, das 8h às 18h.",
    "intent": "faq",
    "confidence": 0.92,
    "should_handoff": False,
    "handoff_reason": None,
    "score_delta": 5,
}


SUMMARY = "Cliente pediu para falar com uma pessoa sobre o pedido."


@dataclass
class Outside:
    """The scripted outside world. `decisions` maps a word in the burst to an answer."""

    url: str = ""
    decisions: dict[str, dict[str, Any] | int] = field(default_factory=dict)
    llm_requests: list[dict[str, Any]] = field(default_factory=list)  # reply decisions
    summary_requests: list[dict[str, Any]] = field(default_factory=list)  # handoff summaries
    sends: list[dict[str, Any]] = field(default_factory=list)
    llm_delay: float = 0.0

    def sends_to(self, wa_id: str) -> list[dict[str, Any]]:
        return [s for s in self.sends if s["body"].get("to") == wa_id]

    def llm_calls_about(self, word: str) -> list[dict[str, Any]]:
        return [r for r in self.llm_requests if word in json.dumps(r, ensure_ascii=False)]

    async def completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        if "response_format" not in body:  # the handoff summary: plain text, not a decision
            self.summary_requests.append(body)
            return _completion(body, SUMMARY)
        self.llm_requests.append(body)
        if self.llm_delay:
            await asyncio.sleep(self.llm_delay)
        last_user = next(
            (m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), ""
        )
        decision: dict[str, Any] | int = ANSWER
        for word, scripted in self.decisions.items():
            if word in last_user:
                decision = scripted
        if isinstance(decision, int):
            return JSONResponse({"error": {"message": "scripted"}}, status_code=decision)
        return _completion(body, json.dumps(decision))

    async def graph_send(self, request: Request) -> JSONResponse:
        body = await request.json()
        # A real wamid embeds the recipient's phone (see tests/provider_ids.py).
        wamid = cloud_wamid(str(body.get("to")), from_business=True)
        self.sends.append(
            {
                "path": request.url.path,
                "auth": request.headers.get("authorization"),
                "body": body,
                "at": time.monotonic(),
                "wamid": wamid,
            }
        )
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": body.get("to"), "wa_id": body.get("to")}],
                "messages": [{"id": wamid}],
            }
        )


def _completion(body: dict[str, Any], content: str) -> JSONResponse:
    return JSONResponse(
        {
            "id": "chatcmpl-e2e",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 321, "completion_tokens": 42, "total_tokens": 363},
        }
    )


class _Thread(threading.Thread):
    def __init__(self, server: uvicorn.Server) -> None:
        super().__init__(daemon=True)
        self.server = server

    def run(self) -> None:
        asyncio.run(self.server.serve())


@contextmanager
def serving_outside() -> Iterator[Outside]:
    """The fake OpenAI and Graph API, served while the block runs."""
    fake, server, thread = start_outside()
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def start_outside() -> tuple[Outside, uvicorn.Server, threading.Thread]:
    outside = Outside()
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", outside.completions, methods=["POST"]),
            Route("/{version}/{phone_number_id}/messages", outside.graph_send, methods=["POST"]),
        ]
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = _Thread(server)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    outside.url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    return outside, server, thread

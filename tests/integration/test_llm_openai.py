"""The OpenAI adapter through the real openai client against a local scripted server.

The server is a small Starlette app under uvicorn on 127.0.0.1 (port 0) in a thread;
each test scripts its answers (a decision, a status, a delay, raw content) in order.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from urbana.adapters.llm.openai_llm import CircuitBreaker, OpenAILLM, estimate_cost
from urbana.application.ai import Passage, Prompt, build_prompt
from urbana.domain.reply import DEFAULT_MESSAGES, AIDecision

pytestmark = pytest.mark.integration

DECISION = {
    "reply": "Atendemos de segunda a sexta, das 8h às 18h.",
    "intent": "faq",
    "confidence": 0.92,
    "should_handoff": False,
    "handoff_reason": None,
    "score_delta": 3,
}


@dataclass
class ScriptedServer:
    """What the next requests get, in order; the last step repeats when the script ends."""

    script: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def reset(self, *steps: dict[str, Any]) -> None:
        self.script[:] = list(steps)
        self.requests.clear()

    async def completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append({"body": body, "auth": request.headers.get("authorization")})
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if "delay" in step:
            await asyncio.sleep(step["delay"])
        if "status" in step:
            return JSONResponse(
                {"error": {"message": "scripted", "type": "server_error", "code": None}},
                status_code=step["status"],
                headers=step.get("headers"),
            )
        content = step.get("content")
        if content is None:
            content = json.dumps(step.get("decision", DECISION))
        return JSONResponse(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "finish_reason": step.get("finish_reason", "stop"),
                    }
                ],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
            }
        )


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    app = Starlette(routes=[Route("/v1/chat/completions", scripted.completions, methods=["POST"])])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="error", lifespan="off", ws="none",
        timeout_graceful_shutdown=1,
    )  # fmt: skip
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("scripted LLM server did not start")
        time.sleep(0.01)
    port = uv.servers[0].sockets[0].getsockname()[1]
    scripted.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield scripted
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def llm(server: ScriptedServer, http: httpx.AsyncClient, **kw: Any) -> OpenAILLM:
    options: dict[str, Any] = {
        "api_key": "sk-test",
        "base_url": server.url,
        "model": "gpt-4o-mini",
        "fallback_model": "gpt-4.1-mini",
        "timeout": 2.0,
        "attempts": 3,
        "backoff": 0.01,
        "backoff_max": 0.05,
    }
    options.update(kw)
    return OpenAILLM(http, **options)


def prompt() -> Prompt:
    return build_prompt(
        history=[{"role": "lead", "seq": 1, "kind": "text", "text": "Qual o horário?"}],
        answered_seq=0,
        tenant_prompt="Você é a Sol.",
        passages=[Passage("Atendemos de segunda a sexta, das 8h às 18h.", 0.9)],
    )


def models(server: ScriptedServer) -> list[str]:
    return [r["body"]["model"] for r in server.requests]


async def test_structured_output_is_parsed_with_usage_and_cost(
    server: ScriptedServer, http: httpx.AsyncClient
) -> None:
    server.reset({"decision": DECISION})
    result = await llm(server, http).complete(prompt())

    assert result.decision == AIDecision.from_dict(DECISION)
    assert result.failure is None
    assert result.usage.model == "gpt-4o-mini"
    assert (result.usage.tokens_in, result.usage.tokens_out) == (1000, 100)
    assert result.usage.cost_usd == pytest.approx((1000 * 0.15 + 100 * 0.60) / 1e6)
    assert result.usage.latency_ms >= 0
    sent = server.requests[0]
    assert sent["auth"] == "Bearer sk-test"
    fmt = sent["body"]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["strict"] is True
    assert set(fmt["json_schema"]["schema"]["required"]) == set(DECISION)
    assert sent["body"]["messages"][0]["role"] == "system"
    assert sent["body"]["messages"][-1] == {"role": "user", "content": "Qual o horário?"}


async def test_429_is_retried_then_succeeds(
    server: ScriptedServer, http: httpx.AsyncClient
) -> None:
    server.reset({"status": 429, "headers": {"retry-after": "0"}}, {"decision": DECISION})
    result = await llm(server, http).complete(prompt())

    assert result.failure is None
    assert result.decision.reply == DECISION["reply"]
    assert models(server) == ["gpt-4o-mini", "gpt-4o-mini"]
    assert result.attempts == ["gpt-4o-mini:http_429", "gpt-4o-mini:ok"]


async def test_500s_open_the_breaker_and_then_no_request_goes_out(
    server: ScriptedServer, http: httpx.AsyncClient
) -> None:
    clock = FakeClock()
    adapter = llm(
        server, http, fallback_model=None, attempts=2, breaker_failures=3, breaker_reset=30,
        clock=clock,
    )  # fmt: skip
    server.reset({"status": 500})

    first = await adapter.complete(prompt())  # 2 failures
    second = await adapter.complete(prompt())  # 1 more opens the circuit; no 2nd attempt
    assert len(server.requests) == 3
    assert adapter.breaker("gpt-4o-mini").state == "open"
    third = await adapter.complete(prompt())
    assert len(server.requests) == 3  # short-circuited
    for result in (first, second, third):
        assert result.decision.should_handoff
        assert result.decision.handoff_reason == "llm_failure"
        assert result.decision.reply == DEFAULT_MESSAGES["fallback"]
    assert third.failure == "circuit_open"

    clock.now += 31  # half-open: one probe goes out and closes the circuit
    server.reset({"decision": DECISION})
    probe = await adapter.complete(prompt())
    assert probe.failure is None
    assert adapter.breaker("gpt-4o-mini").state == "closed"


async def test_timeout_is_retried_then_falls_back(
    server: ScriptedServer, http: httpx.AsyncClient
) -> None:
    server.reset({"delay": 0.6, "decision": DECISION})
    adapter = llm(server, http, timeout=0.15, attempts=2, fallback_model="gpt-4.1-mini")
    started = time.perf_counter()
    result = await adapter.complete(prompt())

    assert time.perf_counter() - started < 2.0
    assert result.failure == "timeout"
    assert result.decision.handoff_reason == "llm_failure"
    assert models(server) == ["gpt-4o-mini"] * 2 + ["gpt-4.1-mini"] * 2


async def test_malformed_json_goes_to_the_fallback_model(
    server: ScriptedServer, http: httpx.AsyncClient
) -> None:
    server.reset({"content": '{"reply": "Olá", "intent": '}, {"decision": DECISION})
    result = await llm(server, http).complete(prompt())

    assert models(server) == ["gpt-4o-mini", "gpt-4.1-mini"]
    assert result.failure is None
    assert result.usage.model == "gpt-4.1-mini"
    assert result.usage.tokens_in == 2000  # the wasted call is paid for too
    assert result.attempts == ["gpt-4o-mini:invalid_output", "gpt-4.1-mini:ok"]


async def test_malformed_json_everywhere_ends_in_the_generic_answer_and_handoff(
    server: ScriptedServer, http: httpx.AsyncClient
) -> None:
    bad_contract = {**DECISION, "confidence": 7}
    server.reset({"content": "não é json"}, {"decision": bad_contract})
    result = await llm(server, http).complete(prompt())

    assert models(server) == ["gpt-4o-mini", "gpt-4.1-mini"]
    assert result.failure == "invalid_output"
    assert result.decision == AIDecision(
        reply=DEFAULT_MESSAGES["fallback"],
        intent="other",
        confidence=0.0,
        should_handoff=True,
        handoff_reason="llm_failure",
    )


async def test_truncated_answer_is_not_trusted(
    server: ScriptedServer, http: httpx.AsyncClient
) -> None:
    server.reset({"decision": DECISION, "finish_reason": "length"})
    result = await llm(server, http, fallback_model=None).complete(prompt())
    assert result.failure == "invalid_output"


async def test_client_error_is_not_retried(server: ScriptedServer, http: httpx.AsyncClient) -> None:
    server.reset({"status": 400})
    result = await llm(server, http, fallback_model=None).complete(prompt())
    assert len(server.requests) == 1
    assert result.failure == "http_400"


async def test_unreachable_server_hands_off(http: httpx.AsyncClient) -> None:
    adapter = OpenAILLM(
        http, api_key="sk", base_url="http://127.0.0.1:9/v1", attempts=2, backoff=0.01,
        backoff_max=0.02, fallback_model=None,
    )  # fmt: skip
    result = await adapter.complete(prompt())
    assert result.failure == "connection_error"
    assert result.decision.should_handoff


def test_breaker_allows_a_single_probe_when_half_open() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, reset_after=10, clock=clock)
    breaker.record_failure()
    assert not breaker.allow()
    clock.now += 10
    assert breaker.allow()
    assert not breaker.allow()  # the probe is in flight
    breaker.record_failure()
    assert breaker.state == "open"


def test_cost_uses_the_model_family_and_ignores_unknown_models() -> None:
    prices = {"gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6)}
    assert estimate_cost("gpt-4o-mini-2024-07-18", 1_000_000, 0, prices) == 0.15
    assert estimate_cost("llama3", 1000, 1000, prices) == 0.0

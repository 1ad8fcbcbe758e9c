"""The handoff summarizer through the real openai client, on httpx.MockTransport speaking
the chat completions protocol: what it asks, what it returns, and None on failure."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from urbana.adapters.llm.summary import INSTRUCTIONS, OpenAISummarizer

TRANSCRIPT = [("Cliente", "vocês parcelam?"), ("IA", "Sim, em até 10x."), ("Cliente", "atendente")]


def completion(content: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70},
    }


def summarizer(answer: Callable[[httpx.Request], httpx.Response]) -> OpenAISummarizer:
    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return OpenAISummarizer(http, api_key="sk-test", base_url="https://llm.test/v1")


async def test_the_model_is_asked_with_the_reason_and_the_transcript() -> None:
    seen: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append({"url": str(request.url), "body": json.loads(request.content)})
        return httpx.Response(200, json=completion("  Cliente quer parcelar;\n pediu atendente. "))

    got = await summarizer(answer).summarize(TRANSCRIPT, "explicit_request")
    assert got == "Cliente quer parcelar; pediu atendente."
    assert seen[0]["url"] == "https://llm.test/v1/chat/completions"
    messages = seen[0]["body"]["messages"]
    assert messages[0] == {"role": "system", "content": INSTRUCTIONS}
    assert messages[1]["content"] == (
        "Motivo da transferência: explicit_request\n\n"
        "Cliente: vocês parcelam?\nIA: Sim, em até 10x.\nCliente: atendente"
    )


async def test_a_failing_or_empty_model_gives_none_so_the_template_is_used() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": {"message": "overloaded"}})

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    def empty(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=completion(""))

    for answer in (down, timeout, empty):
        assert await summarizer(answer).summarize(TRANSCRIPT, "low_confidence") is None


async def test_a_long_summary_is_cut() -> None:
    def chatty(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=completion("palavra " * 500))

    got = await summarizer(chatty).summarize(TRANSCRIPT, "hot_lead")
    assert got is not None
    assert len(got) == 600
    assert got.endswith("...")

"""The composition root: what a caller gives `build` is what the running roles use.

An API with the relay, the responder and the dispatcher, given an LLM, embeddings, a
Cloud API sender and a clock of the test's own (implementing the application's ports):
a webhook is answered by that LLM, and the answer goes out through that sender, at the
time of that clock.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.conftest import Api, start_api, stop_api
from tests.e2e.webhook_helpers import cloud_tenant, cloud_text, post_cloud
from urbana.adapters.embedded import ServiceUrls
from urbana.application.ai import LLMResult, Prompt, Usage
from urbana.application.channels import OutboundRequest
from urbana.domain.conversation import Conversation
from urbana.domain.reply import AIDecision

pytestmark = pytest.mark.e2e

REPLY = "Olá! Sou o assistente da loja, como posso ajudar?"


class ScriptedLLM:
    """LLM: always the same answer; remembers the bursts it was asked about."""

    def __init__(self) -> None:
        self.bursts: list[str] = []

    async def complete(self, prompt: Prompt) -> LLMResult:
        self.bursts.append(prompt.burst)
        decision = AIDecision(reply=REPLY, intent="greeting", confidence=0.99, should_handoff=False)
        return LLMResult(decision=decision, usage=Usage(model="scripted"))


class ConstantEmbeddings:
    """Embeddings: one fixed unit vector for every text (no model to load)."""

    model = "constant"
    dim = 384

    async def embed_query(self, text: str) -> list[float]:
        return [1.0] + [0.0] * (self.dim - 1)

    async def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        return [await self.embed_query(t) for t in texts]


class RecordingSender:
    """Sender: keeps what it was asked to send, answers a provider id."""

    reconciles = False

    def __init__(self) -> None:
        self.sent: list[OutboundRequest] = []
        self._lock = threading.Lock()

    async def send(self, config: Mapping[str, str], request: OutboundRequest) -> str:
        with self._lock:
            self.sent.append(request)
        return f"wamid.{uuid4().hex}"


class CountingClock:
    """Clock: the system's time, counting how often it was read."""

    def __init__(self) -> None:
        self.reads = 0

    def now(self) -> datetime:
        self.reads += 1
        return datetime.now(UTC)


def wait_until(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def wired() -> tuple[ScriptedLLM, RecordingSender, CountingClock]:
    return ScriptedLLM(), RecordingSender(), CountingClock()


@pytest.fixture(scope="module")
def api(
    services: ServiceUrls, wired: tuple[ScriptedLLM, RecordingSender, CountingClock]
) -> Iterator[Api]:
    llm, sender, clock = wired
    run = uuid4().hex[:8]
    running = start_api(
        services,
        f"wired_{run}",
        os.urandom(32),
        roles=("relay", "responder", "dispatcher"),
        wiring={
            "llm": llm,
            "embeddings": ConstantEmbeddings(),
            "senders": {"cloud": sender},
            "clock": clock,
        },
        events_topic=f"e2e.wired.{run}",
        consumer_group_prefix=f"e2e.wired.{run}",
        debounce_ms=0,
    )
    try:
        yield running
    finally:
        stop_api(running)


def test_the_roles_answer_with_the_given_llm_through_the_given_sender(
    api: Api, wired: tuple[ScriptedLLM, RecordingSender, CountingClock]
) -> None:
    llm, sender, clock = wired
    t = cloud_tenant(api)
    api.store.app.change_settings(UUID(t.tenant_id), debounce_ms=0)
    wa_id = f"551197{uuid4().int % 10**7:07d}"
    with httpx.Client(timeout=10) as client:
        r = post_cloud(client, api, t, cloud_text(t.phone_number_id, wa_id, "Bom dia!"))
    assert r.status_code == 200, r.text

    (request,) = wait_until(lambda: [s for s in sender.sent if s.to == wa_id])
    assert request.text == REPLY
    assert "Bom dia!" in llm.bursts
    assert clock.reads > 0  # the dispatcher's send-time checks read the given clock
    conversation_id = Conversation.create_id(UUID(t.tenant_id), "cloud", wa_id)

    def names() -> list[str]:
        return [type(e).__qualname__ for e in api.store.app.stream(conversation_id)]

    wait_until(lambda: "Conversation.OutboundMessageSent" in names())
    assert "Conversation.AIReplyGenerated" in names()

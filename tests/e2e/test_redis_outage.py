"""Redis is a fast path and a coordinator, not an authority.

While it is down, webhooks are still accepted (the event store refuses a redelivered
provider id by itself) and the responder waits: it needs Redis for the debounce and the
conversation lock, so it retries with a short capped backoff and answers within
seconds of Redis's return, once per burst.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from tests.e2e.conftest import start_api, stop_api
from tests.e2e.fakes import Outside, serving_outside
from tests.e2e.test_ai_loop import add_knowledge, events, send, settle, wa, wait_until
from tests.e2e.webhook_helpers import cloud_tenant, cloud_text, post_cloud
from tests.redis_server import RedisServer
from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.runtime import ROLES

pytestmark = pytest.mark.e2e

QUESTION = "Qual o horário de atendimento?"


@pytest.fixture
def outside() -> Iterator[Outside]:
    with serving_outside() as fake:
        yield fake


def test_webhooks_are_accepted_while_redis_is_down_and_replies_resume_when_it_returns(
    services: ServiceUrls, outside: Outside, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    run = uuid4().hex[:8]
    api = start_api(
        services,
        f"redis_{run}",
        os.urandom(32),
        roles=ROLES,
        redis_url=redis.url,
        openai_api_key="sk-test-e2e",
        openai_base_url=f"{outside.url}/v1",
        llm_model="gpt-test",
        llm_fallback_model="gpt-test-fallback",
        events_topic=f"e2e.events.{run}",
        consumer_group_prefix=f"e2e.{run}",
        debounce_ms=0,
    )
    try:
        t = cloud_tenant(api, api_base_url=outside.url)
        add_knowledge(api, t)
        warm = wa()
        send(api, t, warm, QUESTION)
        settle(outside, warm, 1, quiet=0)  # the whole loop runs, every consumer has joined

        redis.stop()
        contacts = [wa() for _ in range(4)]
        payloads = [cloud_text(t.phone_number_id, c, QUESTION) for c in contacts]
        with httpx.Client(timeout=15) as client:
            first = [post_cloud(client, api, t, p) for p in payloads]
            again = [post_cloud(client, api, t, p) for p in payloads]  # gateway redeliveries
        assert [r.status_code for r in first + again] == [200] * 8, [r.text for r in first + again]
        assert [r.json()["received"] for r in first] == [1] * 4
        assert [r.json()["duplicates"] for r in again] == [1] * 4
        for contact in contacts:
            assert len(events(api, t, contact, "MessageReceived")) == 1
        time.sleep(3)  # the responder meets the outage and keeps retrying
        assert not [s for c in contacts for s in outside.sends_to(c)]

        redis.start()
        back = time.monotonic()
        wait_until(lambda: all(outside.sends_to(c) for c in contacts), timeout=60)
        resumed = max(outside.sends_to(c)[0]["at"] for c in contacts) - back
        assert resumed < 8.0, f"replies resumed {resumed:.1f} s after Redis came back"
        time.sleep(1.5)
        assert [len(outside.sends_to(c)) for c in contacts] == [1] * 4
        for contact in contacts:
            assert len(events(api, t, contact, "AIReplyGenerated")) == 1
    finally:
        stop_api(api)
        redis.stop()

"""Replies under gateway faults and dispatcher crashes: delayed, never lost, never doubled.

The whole stack (webhook -> store -> relay -> Kafka -> AI responder -> dispatcher) against
a fake Cloud API (`tests.e2e.fake_graph`) that fails the way gateways do. Durations are
short (settings), the mechanics are those of production.
"""

from __future__ import annotations

import base64
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.conftest import Api, start_api, stop_api
from tests.e2e.fake_graph import FakeGraph, Phase, running_graph
from tests.e2e.fakes import Outside
from tests.e2e.test_ai_loop import add_knowledge, wa, wait_until
from tests.e2e.webhook_helpers import CloudTenant, cloud_tenant, cloud_text, post_cloud
from urbana.adapters.embedded import ServiceUrls
from urbana.domain.conversation import Conversation
from urbana.domain.errors import NotFound
from urbana.domain.outbound import Delivery

pytestmark = pytest.mark.e2e

URBANA = str(Path(sys.executable).with_name("urbana"))

# Short, but the same mechanics as the defaults.
FAST: dict[str, Any] = {
    "send_timeout_s": 1.0,
    "dispatch_horizon_s": 120.0,
    "dispatch_backoff_initial_s": 0.2,
    "dispatch_backoff_max_s": 1.0,
    "dispatch_reconcile_wait_s": 4.0,
    "dispatch_breaker_failures": 3,
    "dispatch_breaker_open_s": 0.5,
    "dispatch_breaker_max_open_s": 2.0,
}


@pytest.fixture(scope="module")
def graph() -> Iterator[FakeGraph]:
    with running_graph() as fake:
        yield fake


@dataclass
class Stack:
    api: Api
    master_key: bytes


def _start(services: ServiceUrls, outside: Outside, roles: tuple[str, ...], **extra: Any) -> Stack:
    run = uuid4().hex[:8]
    key = os.urandom(32)
    api = start_api(
        services,
        f"faults_{run}",
        key,
        roles=roles,
        openai_api_key="sk-test-e2e",
        openai_base_url=f"{outside.url}/v1",
        llm_model="gpt-test",
        llm_fallback_model="gpt-test-fallback",
        events_topic=f"e2e.faults.{run}",
        consumer_group_prefix=f"e2e.faults.{run}",
        debounce_ms=0,
        **FAST,
        **extra,
    )
    return Stack(api, key)


@pytest.fixture(scope="module")
def stack(services: ServiceUrls, outside: Outside) -> Iterator[Stack]:
    running = _start(
        services, outside, ("relay", "projector", "responder", "dispatcher", "knowledge")
    )
    try:
        yield running
    finally:
        stop_api(running.api)


def _tenant(api: Api, graph: FakeGraph) -> CloudTenant:
    t = cloud_tenant(api, api_base_url=graph.url)
    api.store.app.change_settings(UUID(t.tenant_id), debounce_ms=0)
    add_knowledge(api, t)
    graph.post_statuses(t.phone_number_id, api.url, t.app_secret)
    return t


def _write_to(api: Api, t: CloudTenant, contacts: list[str]) -> None:
    """One inbound message from each contact, all at once."""
    with httpx.Client(timeout=15) as client, ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda c: (
                    post_cloud(
                        client, api, t, cloud_text(t.phone_number_id, c, "Qual o horário?")
                    ).status_code
                ),
                contacts,
            )
        )
    assert codes == [200] * len(contacts)


def _outbound(api: Api, t: CloudTenant, contact: str) -> dict[str, Delivery]:
    conv = api.store.app.get(
        Conversation, Conversation.create_id(UUID(t.tenant_id), "cloud", contact)
    )
    return {outbound_id: m.delivery for outbound_id, m in conv.outbound.items()}


def _events(api: Api, t: CloudTenant, contact: str, name: str) -> list[Any]:
    conv_id = Conversation.create_id(UUID(t.tenant_id), "cloud", contact)
    return [e for e in api.store.app.stream(conv_id) if type(e).__name__ == name]


def _all_sent(api: Api, t: CloudTenant, contacts: list[str]) -> bool:
    for contact in contacts:
        try:
            out = _outbound(api, t, contact)
        except NotFound:  # the conversation is not there yet
            return False
        if not out or any(s is Delivery.QUEUED for s in out.values()):
            return False
    return True


def _assert_each_got_exactly_one_reply(
    api: Api, t: CloudTenant, graph: FakeGraph, contacts: list[str]
) -> None:
    wait_until(lambda: _all_sent(api, t, contacts), timeout=120)
    time.sleep(2.0)  # anything extra would show up now
    copies = graph.copies()
    assert {c: copies[c] for c in contacts} == dict.fromkeys(contacts, 1)  # none lost, none twice
    for contact in contacts:
        assert _events(api, t, contact, "OutboundMessageFailed") == []
        (sent,) = _events(api, t, contact, "OutboundMessageSent")
        (delivered,) = graph.delivered_to(contact)
        key = api.store.app.provider_key(UUID(t.tenant_id), "cloud", delivered.wamid)
        assert sent.provider_message_id == key


def test_a_gateway_down_then_throttling_delays_replies_and_loses_none(
    stack: Stack, graph: FakeGraph
) -> None:
    t = _tenant(stack.api, graph)
    contacts = [wa() for _ in range(16)]
    before = len(graph.requests)
    graph.play(
        [
            Phase("error", 3.0, status=500, code=2),
            Phase("error", 3.0, status=429, code=130429),
        ]
    )
    _write_to(stack.api, t, contacts)
    _assert_each_got_exactly_one_reply(stack.api, t, graph, contacts)
    # The breaker kept the dispatcher off the gateway while it was down: far fewer calls
    # than every message retrying on its own (about 8 tries each over those 6 s).
    refused = [r for r in graph.requests[before:] if r.mode == "error"]
    assert refused
    assert len(refused) <= 2 * len(contacts)


def test_a_gateway_answering_after_the_timeout_delivers_each_reply_once(
    stack: Stack, graph: FakeGraph
) -> None:
    t = _tenant(stack.api, graph)
    contacts = [wa() for _ in range(10)]
    # Taken and delivered, but answered after any client's timeout (10 s by default).
    graph.play([Phase("slow", 3.0, hold=11.0)])
    _write_to(stack.api, t, contacts)
    _assert_each_got_exactly_one_reply(stack.api, t, graph, contacts)
    assert any(_events(stack.api, t, c, "OutboundSendAttempted") for c in contacts)


def test_the_per_tenant_rate_limit_holds_under_a_burst(stack: Stack, graph: FakeGraph) -> None:
    app = stack.api.store.app
    t = _tenant(stack.api, graph)
    tid = UUID(t.tenant_id)
    limit = 4
    # A long debounce keeps the AI out of these conversations: attendants answer them.
    app.change_settings(tid, rate_limit_per_s=limit, debounce_ms=60_000)
    contacts = [wa() for _ in range(3 * limit)]
    _write_to(stack.api, t, contacts)
    ids = [Conversation.create_id(tid, "cloud", c) for c in contacts]
    wait_until(lambda: all(app.get(Conversation, i).inbound_seq == 1 for i in ids))
    for conversation_id in ids:
        app.accept_handoff(conversation_id, attendant="ana")
    start = len(graph.deliveries)
    for conversation_id in ids:  # 3x the limit queued at once
        app.attendant_reply(conversation_id, attendant="ana", text="Olá, sou a Ana")
    wait_until(lambda: _all_sent(stack.api, t, contacts), timeout=60)
    times = sorted(d.at for d in graph.deliveries[start:] if d.to in set(contacts))
    assert len(times) == 3 * limit
    # However the one-second windows are placed, none holds more than the limit. The
    # margin (200 ms) is for the time from the limiter to the gateway, which the event
    # loop of a busy test process stretches unevenly; a limiter that counts per calendar
    # second lets twice the limit through within a few milliseconds.
    window = 0.8
    busiest = max(sum(1 for u in times if t0 <= u < t0 + window) for t0 in times)
    assert busiest <= limit, [round(u - times[0], 3) for u in times]
    assert times[-1] - times[0] >= 2 * window


# ------------------------------------------------------------- a dispatcher killed


@pytest.fixture(scope="module")
def stack_without_dispatcher(services: ServiceUrls, outside: Outside) -> Iterator[Stack]:
    running = _start(services, outside, ("relay", "projector", "responder", "knowledge"))
    try:
        yield running
    finally:
        stop_api(running.api)


def _dispatcher(services: ServiceUrls, stack: Stack, data_dir: Path) -> subprocess.Popen[bytes]:
    s = stack.api.settings
    env = {
        **os.environ,
        "URBANA_ENV": "test",
        "URBANA_DATABASE_URL": services.postgres,
        "URBANA_DATABASE_SCHEMA": s.database_schema or "",
        "URBANA_KAFKA_BOOTSTRAP": services.kafka,
        "URBANA_REDIS_URL": services.redis,
        "URBANA_MASTER_KEY": base64.urlsafe_b64encode(stack.master_key).decode(),
        "URBANA_EVENTS_TOPIC": s.events_topic,
        "URBANA_CONSUMER_GROUP_PREFIX": s.consumer_group_prefix,
        "URBANA_DATA_DIR": str(data_dir),
        "URBANA_POOL_SIZE": "2",
        **{f"URBANA_{k.upper()}": str(v) for k, v in FAST.items()},
    }
    return subprocess.Popen(
        [URBANA, "worker", "--role", "dispatcher"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_a_dispatcher_killed_at_random_moments_loses_and_doubles_nothing(
    services: ServiceUrls,
    stack_without_dispatcher: Stack,
    graph: FakeGraph,
    tmp_path: Path,
) -> None:
    api = stack_without_dispatcher.api
    t = _tenant(api, graph)
    contacts = [wa() for _ in range(12)]
    graph.latency = 0.4  # every send is in flight long enough to be killed in the middle
    chance = random.Random(int.from_bytes(os.urandom(4), "big"))
    proc = _dispatcher(services, stack_without_dispatcher, tmp_path)
    try:
        _write_to(api, t, contacts)
        for _ in range(3):
            # Kill it while a send is on the wire (taken by the gateway, not yet answered).
            wait_until(lambda: graph.in_flight > 0 or _all_sent(api, t, contacts), timeout=90)
            time.sleep(chance.uniform(0.0, 0.3))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            proc = _dispatcher(services, stack_without_dispatcher, tmp_path)
        _assert_each_got_exactly_one_reply(api, t, graph, contacts)
    finally:
        graph.latency = 0.0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

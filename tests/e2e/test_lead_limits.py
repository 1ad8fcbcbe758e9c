"""Lead limits over HTTP, through the real relay, projector, responder and dispatcher.

A tenant on a plan of one new lead a month: the first lead is answered; the second is
recorded in full, flagged for the tenant's admins (lead API, panel) and never reaches
the LLM; `/v1/settings` and `/v1/kpis` count it. The next month (the process's clock,
given to the composition root, moved to São Paulo's 1st) counts from zero again.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.e2e.access_helpers import team
from tests.e2e.conftest import Api, start_api, stop_api
from tests.e2e.webhook_helpers import CloudTenant, admin, cloud_tenant, cloud_text, post_cloud
from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.http.auth import SESSION_COOKIE
from urbana.adapters.kafka.topics import partition_counts
from urbana.application.ai import LLMResult, Prompt, Usage
from urbana.application.channels import OutboundRequest
from urbana.domain.conversation import Conversation
from urbana.domain.lead import Lead
from urbana.domain.plans import BILLING_ZONE, billing_month
from urbana.domain.reply import AIDecision
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

REPLY = "Olá! Como posso ajudar?"


class ScriptedLLM:
    """LLM: one answer for everything; remembers every burst it was asked about."""

    def __init__(self) -> None:
        self.bursts: list[str] = []

    async def complete(self, prompt: Prompt) -> LLMResult:
        self.bursts.append(prompt.burst)
        decision = AIDecision(reply=REPLY, intent="greeting", confidence=0.99, should_handoff=False)
        return LLMResult(decision=decision, usage=Usage(model="scripted"))


class ConstantEmbeddings:
    model = "constant"
    dim = 384

    async def embed_query(self, text: str) -> list[float]:
        return [1.0] + [0.0] * (self.dim - 1)

    async def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        return [await self.embed_query(t) for t in texts]


class RecordingSender:
    reconciles = False

    def __init__(self) -> None:
        self.sent: list[OutboundRequest] = []
        self._lock = threading.Lock()

    async def send(self, config: Mapping[str, str], request: OutboundRequest) -> str:
        with self._lock:
            self.sent.append(request)
        return f"wamid.{uuid4().hex}"


class MovableClock:
    """Clock: the system's time moved by `offset` (it keeps running: deadlines pass)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


class Wired:
    def __init__(self) -> None:
        self.llm = ScriptedLLM()
        self.sender = RecordingSender()
        self.clock = MovableClock()


def wait_until(check: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def wired() -> Wired:
    return Wired()


@pytest.fixture(scope="module")
def api(services: ServiceUrls, wired: Wired) -> Iterator[Api]:
    run = uuid4().hex[:8]
    running = start_api(
        services,
        f"limits_{run}",
        os.urandom(32),
        roles=("relay", "projector", "responder", "dispatcher"),
        wiring={
            "llm": wired.llm,
            "embeddings": ConstantEmbeddings(),
            "senders": {"cloud": wired.sender},
            "clock": wired.clock,
        },
        events_topic=f"e2e.limits.{run}",
        consumer_group_prefix=f"e2e.limits.{run}",
        debounce_ms=0,
    )
    try:
        yield running
    finally:
        stop_api(running)


def limited_tenant(api: Api, limit: int) -> CloudTenant:
    t = cloud_tenant(api)
    api.store.app.change_settings(UUID(t.tenant_id), debounce_ms=0)
    r = httpx.put(
        f"{api.url}/admin/tenants/{t.tenant_id}/plan",
        json={"plan": "custom", "lead_limit": limit},
        headers=admin(api),
    )
    assert r.status_code == 200, r.text
    assert r.json()["lead_limit"] == limit
    return t


def write(api: Api, t: CloudTenant, wa_id: str, text: str, at: datetime | None = None) -> None:
    payload = cloud_text(t.phone_number_id, wa_id, text)
    if at is not None:
        message = payload["entry"][0]["changes"][0]["value"]["messages"][0]
        message["timestamp"] = str(int(at.timestamp()))
    with httpx.Client(timeout=10) as client:
        r = post_cloud(client, api, t, payload)
    assert r.status_code == 200, r.text


def new_phone() -> str:
    return f"551197{uuid4().int % 10**7:07d}"


def names(api: Api, stream: UUID) -> list[str]:
    return [type(e).__name__ for e in api.store.app.stream(stream)]


def responder_caught_up(api: Api) -> None:
    """Wait until the responder has handled everything published so far.

    It commits a partition's offset only past what it finished, so once its committed
    offsets reach the topic's end, every message before was answered or skipped.
    """
    bootstrap = api.settings.kafka_bootstrap
    assert bootstrap is not None
    topic = api.settings.events_topic
    group = f"{api.settings.consumer_group_prefix}.worker.responder"

    async def offsets() -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        count = (await partition_counts(bootstrap))[topic]
        partitions = [TopicPartition(topic, p) for p in range(count)]
        # Never subscribed, so it never joins the group: it only reads its offsets.
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
        await consumer.start()
        try:
            ends = dict(await consumer.end_offsets(partitions))
            done = {tp: await consumer.committed(tp) or 0 for tp in partitions}
        finally:
            await consumer.stop()
        return ends, done

    target, _ = asyncio.run(offsets())

    def caught_up() -> bool:
        _, done = asyncio.run(offsets())
        return all(done[tp] >= end for tp, end in target.items())

    wait_until(caught_up)


def test_past_the_limit_a_new_lead_is_recorded_and_flagged_but_not_answered(
    api: Api, wired: Wired
) -> None:
    t = limited_tenant(api, 1)
    tid = UUID(t.tenant_id)
    crew = team(api, tid)
    first, second = new_phone(), new_phone()

    write(api, t, first, "Bom dia!")
    wait_until(lambda: [s for s in wired.sender.sent if s.to == first])
    write(api, t, second, "Quero saber o preço do apartamento")
    conversation = Conversation.create_id(tid, "cloud", second)
    lead = api.store.app.get(Conversation, conversation).lead_id

    # Recorded in full: the message, the lead, the read models.
    assert names(api, conversation) == ["ConversationStarted", "MessageReceived"]
    assert names(api, lead) == ["LeadCreated", "LeadOverPlanLimit"]
    assert api.store.app.get(Lead, lead).over_plan_limit
    headers = crew.headers(Role.ADMIN)
    shown = wait_until(
        lambda: (
            r.json()
            if (r := httpx.get(f"{api.url}/v1/leads/{lead}", headers=headers)).status_code == 200
            else None
        )
    )
    assert shown["over_plan_limit"] is True
    thread = wait_until(
        lambda: (
            r.json()
            if (
                r := httpx.get(f"{api.url}/v1/conversations/{conversation}", headers=headers)
            ).status_code
            == 200
            else None
        )
    )
    assert [m["text"] for m in thread["messages"]] == ["Quero saber o preço do apartamento"]

    # Not answered: the responder handled the message and asked the LLM nothing.
    responder_caught_up(api)
    assert "Quero saber o preço do apartamento" not in wired.llm.bursts
    assert "Bom dia!" in wired.llm.bursts
    assert [s for s in wired.sender.sent if s.to == second] == []
    assert names(api, conversation) == ["ConversationStarted", "MessageReceived"]

    # The count and the limit, for the tenant's admins (settings) and supervisors (KPIs).
    month = billing_month(wired.clock.now())
    usage = {"plan": "custom", "lead_limit": 1, "month": month, "leads": 1, "over_limit": 1}
    assert httpx.get(f"{api.url}/v1/settings", headers=headers).json()["plan"] == usage
    kpis = httpx.get(f"{api.url}/v1/kpis", headers=crew.headers(Role.SUPERVISOR))
    assert kpis.json()["plan"] == usage
    # A tenant's admin cannot lift its own limit.
    refused = httpx.patch(
        f"{api.url}/v1/settings", json={"plan": {"lead_limit": None}}, headers=headers
    )
    assert refused.status_code == 422
    assert httpx.get(f"{api.url}/v1/settings", headers=headers).json()["plan"] == usage

    # The panel shows the flag on the lead's card and the count on the KPI screen.
    with httpx.Client(
        base_url=api.url, cookies={SESSION_COOKIE: crew.tokens[Role.ADMIN]}, timeout=10
    ) as panel:
        board = panel.get("/panel/leads")
        assert board.status_code == 200
        assert board.text.count("acima do limite do plano") == 1
        screen = panel.get("/panel/kpis")
        assert "Leads no mês: 1 de 1 · 1 acima do limite do plano" in screen.text


def test_the_count_starts_again_on_the_first_in_sao_paulo(api: Api, wired: Wired) -> None:
    t = limited_tenant(api, 1)
    tid = UUID(t.tenant_id)
    crew = team(api, tid)
    write(api, t, new_phone(), "Oi")
    full = {"leads": 1, "over_limit": 0}
    settings = httpx.get(f"{api.url}/v1/settings", headers=crew.headers(Role.ADMIN)).json()
    assert {k: settings["plan"][k] for k in full} == full

    local = datetime.now(UTC).astimezone(BILLING_ZONE)
    first_of_next = (local.replace(day=1) + timedelta(days=32)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    wired.clock.offset = first_of_next + timedelta(minutes=5) - datetime.now(UTC)
    try:
        newcomer = new_phone()
        write(api, t, newcomer, "Boa noite, ainda atendem?", at=wired.clock.now())
        wait_until(lambda: [s for s in wired.sender.sent if s.to == newcomer])
        lead = api.store.app.get(
            Conversation, Conversation.create_id(tid, "cloud", newcomer)
        ).lead_id
        assert not api.store.app.get(Lead, lead).over_plan_limit
        plan = httpx.get(f"{api.url}/v1/settings", headers=crew.headers(Role.ADMIN)).json()["plan"]
        assert plan["month"] == first_of_next.strftime("%Y-%m")
        assert (plan["leads"], plan["over_limit"]) == (1, 0)
    finally:
        wired.clock.offset = timedelta()


def test_only_the_operator_sets_a_plan_and_an_unknown_one_changes_nothing(api: Api) -> None:
    t = cloud_tenant(api)
    url = f"{api.url}/admin/tenants/{t.tenant_id}/plan"
    version = len(api.store.app.stream(UUID(t.tenant_id)))
    assert httpx.put(url, json={"plan": "pro"}).status_code == 401
    unknown = httpx.put(url, json={"plan": "gold"}, headers=admin(api))
    assert unknown.status_code == 422
    assert unknown.headers["content-type"] == "application/problem+json"
    assert len(api.store.app.stream(UUID(t.tenant_id))) == version
    done = httpx.put(url, json={"plan": "pro"}, headers=admin(api))
    assert done.json() == {"tenant_id": t.tenant_id, "plan": "pro", "lead_limit": 1000}

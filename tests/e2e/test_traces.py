"""One trace per inbound message, across every process of the topology.

`urbana serve` and one `urbana worker --role R` process per role (relay, projector,
responder, dispatcher) run as an operator runs them, on the test's embedded services,
with `OTEL_EXPORTER_OTLP_ENDPOINT` naming a local OTLP/HTTP endpoint
(tests.otlp_receiver). A signed Cloud API webhook goes in, the AI (the fake OpenAI)
answers, the dispatcher sends the answer to the fake Graph API; then the spans that
reached the endpoint must hold one trace that starts at the webhook and runs through
every process with the right parents, and no span may carry the lead's phone, name or
words, nor the answer.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.conftest import ADMIN_KEY, JWT_SECRET
from tests.e2e.fakes import ANSWER, Outside
from tests.e2e.webhook_helpers import CloudTenant, cloud_text, post_cloud
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver
from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.kafka.topics import create_topics, load_topics, spec_for
from urbana.adapters.postgres.schema import ensure_schema
from urbana.adapters.postgres.store import open_store
from urbana.domain.conversation import Conversation

pytestmark = pytest.mark.e2e

URBANA = str(Path(sys.executable).with_name("urbana"))
ROLES = ("relay", "projector", "responder", "dispatcher")
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # opentelemetry.proto Span.SpanKind
TEXT = "Qual o horário de atendimento?"
NAME = "Benedita Quixadá"
# Promises nothing, so the output guard lets it through without a knowledge base.
DECISION = {**ANSWER, "reply": "Olá, Benedita! Em que posso ajudar?", "intent": "greeting"}


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Topology:
    api: str
    env: dict[str, str]
    collector: OtlpReceiver
    processes: list[Process]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail()}" for p in self.processes)


def wait_until(check: Callable[[], Any], what: str, top: Topology, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        for p in top.processes:
            assert p.proc.poll() is None, f"{p.name} exited\n{top.logs()}"
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen\n{top.logs()}")


def spawn(name: str, argv: list[str], env: dict[str, str], root: Path) -> Process:
    log = root / f"{name}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
    return Process(name, proc, log)


def stop(processes: list[Process]) -> None:
    for p in processes:
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGTERM)
    for p in processes:
        try:
            p.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def topology(
    services: ServiceUrls, outside: Outside, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Topology]:
    root = tmp_path_factory.mktemp("traces")
    run = uuid4().hex[:8]
    schema = f"traces_{run}"
    topic = f"e2e.events.{run}"
    master_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    port = free_port()
    ensure_schema(services.postgres, schema)
    # The consumers subscribe to the topic: it exists before they start, as `kafka init`
    # makes it in production.
    asyncio.run(create_topics(services.kafka, [spec_for(topic, load_topics())]))
    with otlp_receiver() as collector:
        env = {
            **os.environ,
            "URBANA_ENV": "test",
            "URBANA_DATABASE_URL": services.postgres,
            "URBANA_DATABASE_SCHEMA": schema,
            "URBANA_KAFKA_BOOTSTRAP": services.kafka,
            "URBANA_REDIS_URL": services.redis,
            "URBANA_MASTER_KEY": master_key,
            "URBANA_ADMIN_API_KEY": ADMIN_KEY,
            "URBANA_JWT_SECRET": JWT_SECRET,
            "URBANA_DATA_DIR": str(root),
            "URBANA_EVENTS_TOPIC": topic,
            "URBANA_CONSUMER_GROUP_PREFIX": f"e2e.{run}",
            "URBANA_OPENAI_API_KEY": "sk-test-e2e",
            "URBANA_OPENAI_BASE_URL": f"{outside.url}/v1",
            "URBANA_LLM_MODEL": "gpt-test",
            "URBANA_LLM_FALLBACK_MODEL": "gpt-test-fallback",
            "URBANA_DEBOUNCE_MS": "0",
            "URBANA_POOL_SIZE": "2",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        processes = [
            spawn("serve", [URBANA, "serve", "--host", "127.0.0.1", "--port", str(port)], env, root)
        ]
        top = Topology(f"http://127.0.0.1:{port}", env, collector, processes)
        try:
            for role in ROLES:
                processes.append(spawn(role, [URBANA, "worker", "--role", role], env, root))
            wait_until(lambda: _ready(top), "the API answering /readyz", top)
            wait_until(
                lambda: all("worker:" in p.tail() for p in processes[1:]), "workers started", top
            )
            yield top
        finally:
            stop(processes)


def _ready(top: Topology) -> bool:
    try:
        return httpx.get(f"{top.api}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def cloud_tenant(top: Topology, outside: Outside) -> CloudTenant:
    admin = {"X-Admin-Key": ADMIN_KEY}
    created = httpx.post(
        f"{top.api}/admin/tenants", json={"name": f"Loja {uuid4().hex[:6]}"}, headers=admin
    )
    assert created.status_code == 201, created.text
    t = CloudTenant(created.json()["tenant_id"], str(uuid4().int)[:15], uuid4().hex, uuid4().hex)
    connected = httpx.post(
        f"{top.api}/admin/tenants/{t.tenant_id}/channels",
        json={
            "kind": "cloud",
            "fields": {
                "phone_number_id": t.phone_number_id,
                "app_secret": t.app_secret,
                "verify_token": t.verify_token,
                "access_token": "EAAG" + uuid4().hex,
                "api_base_url": outside.url,
            },
        },
        headers=admin,
    )
    assert connected.status_code == 200, connected.text
    return t


def by_id(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.span_id: s for s in spans}


def one(spans: list[ReceivedSpan], what: str, match: Callable[[ReceivedSpan], bool]) -> Any:
    found = [s for s in spans if match(s)]
    assert found, f"no span {what} in {[(s.service, s.name) for s in spans]}"
    return found


def test_one_trace_follows_a_message_through_every_process(
    topology: Topology, outside: Outside
) -> None:
    top = topology
    outside.decisions["horário"] = DECISION
    tenant = cloud_tenant(top, outside)
    wa_id = f"551197{uuid4().int % 10**7:07d}"
    with httpx.Client(timeout=30) as client:
        answer = post_cloud(
            client, top.api, tenant, cloud_text(tenant.phone_number_id, wa_id, TEXT, name=NAME)
        )
    assert answer.status_code == 200, answer.text
    wait_until(lambda: outside.sends_to(wa_id), "the reply reaching the Graph API", top)

    def webhook_span() -> ReceivedSpan | None:
        return next(
            (
                s
                for s in top.collector.spans()
                if s.service == "urbana-serve" and s.name == "POST /webhooks/whatsapp-cloud"
            ),
            None,
        )

    root = wait_until(webhook_span, "the webhook's span exported", top)
    needed = {
        ("urbana-serve", "urbana.store.append"),
        ("urbana-relay", "publish " + top.env["URBANA_EVENTS_TOPIC"]),
        ("urbana-responder", "responder MessageReceived"),
        ("urbana-responder", "retrieval"),
        ("urbana-responder", "chat"),
        ("urbana-dispatcher", "dispatcher OutboundMessageQueued"),
        ("urbana-dispatcher", "send cloud"),
        ("urbana-projector", "project conversation_view"),
    }

    def whole_trace() -> list[ReceivedSpan] | None:
        spans = [s for s in top.collector.spans() if s.trace_id == root.trace_id]
        if not needed <= {(s.service, s.name) for s in spans}:
            return None
        # ... and the projector has applied what each step appended, and every parent
        # span has been exported too.
        ids = by_id(spans)
        if any(s.parent_id and s.parent_id not in ids for s in spans):
            return None
        grandparents = {
            ids[ids[s.parent_id].parent_id].service
            for s in spans
            if s.service == "urbana-projector"
            and s.parent_id in ids
            and ids[s.parent_id].parent_id in ids
        }
        return (
            spans
            if grandparents >= {"urbana-serve", "urbana-responder", "urbana-dispatcher"}
            else None
        )

    spans = wait_until(
        whole_trace,
        f"every process's spans in trace {root.trace_id}: "
        + repr([(s.service, s.name, s.span_id, s.parent_id) for s in top.collector.spans()]),
        top,
    )
    assert {s.service for s in spans} >= {f"urbana-{r}" for r in ("serve", *ROLES)}

    # Parents: the webhook starts the trace; every other span's parent is in it.
    ids = by_id(spans)
    assert root.parent_id == ""
    assert root.kind == SERVER
    assert root.attributes["http.route"] == "/webhooks/whatsapp-cloud"
    orphans = [(s.service, s.name) for s in spans if s is not root and s.parent_id not in ids]
    assert orphans == []

    def parent(s: ReceivedSpan) -> ReceivedSpan:
        return ids[s.parent_id]

    append = one(spans, "store append", lambda s: s.name == "urbana.store.append")[0]
    assert parent(append) is root
    # The webhook's events were published under the append; the responder went on from there.
    (received,) = one(spans, "responder", lambda s: s.name == "responder MessageReceived")
    assert received.kind == CONSUMER
    relay_in = parent(received)
    assert (relay_in.service, relay_in.kind) == ("urbana-relay", PRODUCER)
    assert parent(relay_in) is append
    (chat,) = one(spans, "LLM call", lambda s: s.name == "chat")
    (retrieval,) = one(spans, "retrieval", lambda s: s.name == "retrieval")
    assert parent(chat) is received
    assert parent(retrieval) is received
    assert chat.kind == CLIENT
    assert chat.attributes["gen_ai.response.model"].startswith("gpt-test")
    assert chat.attributes["gen_ai.usage.input_tokens"] > 0
    assert "gen_ai.usage.output_tokens" in chat.attributes
    # The AI's outcome went out under the responder's span, to the dispatcher.
    dispatched = one(spans, "dispatcher", lambda s: s.name == "dispatcher OutboundMessageQueued")
    relay_out = parent(dispatched[0])
    assert relay_out.service == "urbana-relay"
    assert parent(relay_out) is received
    (send,) = one(spans, "gateway call", lambda s: s.name == "send cloud")
    assert (send.kind, parent(send)) == (CLIENT, dispatched[0])
    # The projector applied events of every step of the way.
    projected = one(spans, "projector", lambda s: s.service == "urbana-projector")
    assert {parent(p).service for p in projected} == {"urbana-relay"}
    assert {parent(parent(p)).service for p in projected} >= {
        "urbana-serve",
        "urbana-responder",
        "urbana-dispatcher",
    }

    store = open_store(
        top.env["URBANA_DATABASE_URL"],
        base64.urlsafe_b64decode(top.env["URBANA_MASTER_KEY"]),
        schema=top.env["URBANA_DATABASE_SCHEMA"],
        pool_size=1,
    )
    try:
        conversation_id = Conversation.create_id(UUID(tenant.tenant_id), "cloud", wa_id)
        assert [s["body"]["text"]["body"] for s in outside.sends_to(wa_id)] == [DECISION["reply"]]
        assert store.app.get(Conversation, conversation_id).answered_seq == 1
    finally:
        store.close()

    # No personal data in any span of any trace: not the phone, the name, the words.
    secrets = [wa_id, NAME, "Benedita", TEXT, str(DECISION["reply"]), tenant.app_secret]
    leaks = [
        (s.service, s.name, key)
        for s in top.collector.spans()
        for key, value in [("name", s.name), *s.attributes.items()]
        if any(secret in str(value) for secret in secrets)
    ]
    assert leaks == []

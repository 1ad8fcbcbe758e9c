"""Traces: off without an OTLP endpoint; exported to one when set; stored with events.

The processes' spans across the whole topology are checked in tests/e2e/test_traces.py.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from uuid import uuid4

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from tests.otlp_receiver import otlp_receiver

from urbana.adapters import tracing
from urbana.adapters.postgres.log import LogReader
from urbana.adapters.postgres.store import Store, open_store
from urbana.application.app import ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.application.envelope import Envelope
from urbana.application.inbound import Received
from urbana.config import conninfo
from urbana.domain.conversation import Conversation

pytestmark = pytest.mark.integration

TRACE_A = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_B = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_without_an_endpoint_no_exporter_is_installed() -> None:
    for environ in (
        {},
        {tracing.ENDPOINT: ""},
        {tracing.ENDPOINT: "http://x:4318", "OTEL_SDK_DISABLED": "true"},
    ):
        assert tracing.traces_endpoint(environ) is None
        assert tracing.build_provider("serve", environ) is None
        assert tracing.start("serve", environ) is None
    assert not tracing.enabled()
    # The API's default provider: spans from it record nothing and go nowhere.
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with tracing.span("ingest") as span:
        assert span is None
        assert tracing.current_traceparent() is None
    with tracing.fan_out("publish", [TRACE_A], kind=tracing.SpanKind.PRODUCER) as traces:
        assert traces == {}
    assert tracing.header([("traceparent", TRACE_A.encode())]) is None


def test_the_endpoint_receives_the_spans_under_the_roles_name() -> None:
    with otlp_receiver() as collector:
        provider = tracing.build_provider("responder", {tracing.ENDPOINT: collector.url + "/"})
        assert provider is not None
        try:
            with provider.get_tracer("test").start_as_current_span("chat"):
                pass
            assert provider.force_flush(30_000)
        finally:
            provider.shutdown()
        spans = collector.spans()
    assert [(s.service, s.name) for s in spans] == [("urbana-responder", "chat")]


def test_the_traces_endpoint_wins_and_the_service_name_can_be_set() -> None:
    environ = {
        tracing.ENDPOINT: "http://collector:4318",
        tracing.TRACES_ENDPOINT: "http://traces:4318/custom",
    }
    assert tracing.traces_endpoint(environ) == "http://traces:4318/custom"
    assert (
        tracing.traces_endpoint({tracing.ENDPOINT: "http://c:4318/"}) == "http://c:4318/v1/traces"
    )
    with otlp_receiver() as collector:
        provider = tracing.build_provider(
            "relay",
            {
                tracing.TRACES_ENDPOINT: collector.url + "/v1/traces",
                "OTEL_SERVICE_NAME": "urbana-relay-eu",
            },
        )
        assert provider is not None
        try:
            provider.get_tracer("test").start_span("publish").end()
            assert provider.force_flush(30_000)
        finally:
            provider.shutdown()
        assert [s.service for s in collector.spans()] == ["urbana-relay-eu"]


def message(contact: str) -> InboundMessage:
    return InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=contact,
        phone=contact,
        sent_at=datetime.now(UTC),
        kind="text",
        text="Qual o horário?",
    )


def envelopes(store: Store) -> list[Envelope]:
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        return [
            e for page in LogReader(store.schema).pages(conn.cursor(), 0) for e in page.envelopes
        ]


@pytest.fixture
def traced_store(store: Store, master_key: bytes):
    """The same schema, opened by a process whose span in progress is always TRACE_A."""
    opened = open_store(
        store.url, master_key, schema=store.schema, pool_size=1, trace=lambda: TRACE_A
    )
    try:
        yield opened
    finally:
        opened.close()


def test_an_event_is_stored_with_the_trace_in_progress(traced_store: Store) -> None:
    app = traced_store.app
    tenant_id, _ = app.register_tenant(f"Loja {uuid4().hex[:6]}")
    received = app.receive_message(ReceiveMessage(tenant_id, "cloud", message("5511988881111")))
    stored = envelopes(traced_store)
    assert stored
    assert {e.traceparent for e in stored} == {TRACE_A}
    assert all("_trace_" not in e.data for e in stored)
    assert b"_trace_" not in b"".join(e.to_json() for e in stored)  # headers carry it
    events = app.stream(received.conversation_id)
    assert events
    assert all("_trace_" not in vars(e) for e in events)
    assert app.get(Conversation, received.conversation_id).inbound_seq == 1


def test_a_batch_of_requests_stores_each_events_own_trace(store: Store) -> None:
    app = store.app
    tenant_id, _ = app.register_tenant(f"Loja {uuid4().hex[:6]}")
    first, second = "5511988882222", "5511988883333"
    outcomes = app.ingest(
        [
            ReceiveMessage(tenant_id, "cloud", message(first), trace=TRACE_A),
            ReceiveMessage(tenant_id, "cloud", message(second), trace=TRACE_B),
            ReceiveMessage(tenant_id, "cloud", message(first), trace=None),
        ]
    )
    ids = {o.conversation_id for o in outcomes if isinstance(o, Received)}
    assert len(ids) == 2
    conversations = {str(Conversation.create_id(tenant_id, "cloud", c)): c for c in (first, second)}
    traces: dict[tuple[str, str], set[str | None]] = {}
    for e in envelopes(store):
        if e.type == "TenantRegistered":
            assert e.traceparent is None  # appended outside any trace
            continue
        traces.setdefault((e.type, e.stream_id), set()).add(e.traceparent)
    by_conversation = {
        conversations[stream]: found
        for (kind, stream), found in traces.items()
        if kind == "MessageReceived"
    }
    assert by_conversation == {first: {TRACE_A, None}, second: {TRACE_B}}
    # The lead and the message references of each request are traced with it too.
    started = {found.pop() for (kind, _), found in traces.items() if kind == "LeadCreated"}
    assert started == {TRACE_A, TRACE_B}


STOPPING = """
import sys, time
from urbana.adapters import tracing
tracing.start("relay", {tracing.ENDPOINT: sys.argv[1]})
with tracing.span("publish"):
    pass
began = time.monotonic()
tracing.shutdown(wait_s=1.0)
print(round(time.monotonic() - began, 2))
"""


def test_an_endpoint_that_never_answers_does_not_hold_up_a_stop() -> None:
    # It accepts connections and never answers: each export would wait out its 10 s
    # timeout, and the SDK's own shutdown waits up to 30 s for them.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", STOPPING, url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        took = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) < 9.0  # the 1 s wait, not the exporter's 10 s
    assert took < 30.0
    assert "spans still buffered are dropped" in done.stderr

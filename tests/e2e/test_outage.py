"""Our own faults are 503 with Retry-After, promptly, write nothing partial, and heal by themselves.

Each test runs its own embedded PostgreSQL (the session's one is shared by other tests), stops
it, and plays the gateway: it posts while the store is down, then retries what got a 503.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.access_helpers import access, bearer
from tests.e2e.conftest import Api, start_api, stop_api
from tests.e2e.metrics_helpers import scrape, value
from tests.e2e.webhook_helpers import CloudTenant, cloud_tenant, cloud_text, post_cloud
from tests.e2e.workspace_helpers import conversation
from urbana.adapters.embedded import EmbeddedStack, ServiceUrls
from urbana.adapters.postgres.store import open_store
from urbana.domain.conversation import Conversation
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

# The store wait is 2 s by default; this leaves a second for everything else on a busy box.
PROMPT_S = 3.0


@dataclass
class Outage:
    """An API on a PostgreSQL of its own, which the test may stop and start."""

    api: Api
    stack: EmbeddedStack
    master_key: bytes

    def stop_store(self) -> None:
        self.api.store.close()  # the test's own handle; the API keeps its pools
        self.stack.stop()

    def start_store(self) -> None:
        self.stack.start()
        self.api.store = open_store(
            self.stack.urls.postgres,
            self.master_key,
            schema=self.api.settings.database_schema,
            pool_size=1,
        )


@pytest.fixture
def outage(services: ServiceUrls) -> Iterator[Outage]:
    # Not under pytest's tmp_path: another pytest run resets its root to mode 0700, which
    # locks out the server when it runs as another user.
    with tempfile.TemporaryDirectory(prefix="urbana-outage-") as tmp:
        stack = EmbeddedStack(
            Path(tmp) / "pg", kafka_bootstrap=services.kafka, redis_url=services.redis
        )
        urls = stack.start()
        key = os.urandom(32)
        try:
            api = start_api(urls, f"outage_{uuid4().hex[:8]}", key, database_url=urls.postgres)
            try:
                yield Outage(api, stack, key)
            finally:
                stop_api(api)
        finally:
            stack.stop()


@dataclass
class Sent:
    """One gateway delivery: what it carried, what it got, how long it waited."""

    contact: str
    text: str
    payload: dict[str, Any]
    status: int
    seconds: float
    retry_after: str | None
    content_type: str | None


def deliver(client: httpx.Client, api: Api, t: CloudTenant, contact: str, text: str) -> Sent:
    payload = cloud_text(t.phone_number_id, contact, text, wamid=f"wamid.{uuid4().hex}")
    return redeliver(client, api, t, Sent(contact, text, payload, 0, 0.0, None, None))


def redeliver(client: httpx.Client, api: Api, t: CloudTenant, sent: Sent) -> Sent:
    began = time.monotonic()
    r = post_cloud(client, api, t, sent.payload)
    return Sent(
        sent.contact,
        sent.text,
        sent.payload,
        r.status_code,
        time.monotonic() - began,
        r.headers.get("retry-after"),
        r.headers.get("content-type"),
    )


def assert_prompt_503(answers: list[Sent]) -> None:
    assert answers
    for a in answers:
        assert a.status == 503, a
        assert a.retry_after is not None, a
        assert int(a.retry_after) > 0, a
        assert a.content_type == "application/problem+json", a
    slowest = max(a.seconds for a in answers)
    assert slowest < PROMPT_S, f"slowest 503 took {slowest:.2f}s"


def retry_until_accepted(
    client: httpx.Client, api: Api, t: CloudTenant, pending: list[Sent], within: float = 60.0
) -> list[Sent]:
    """What a gateway does with a 503: deliver the same body again, until it is taken."""
    deadline = time.monotonic() + within
    accepted: list[Sent] = []
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} still refused after {within}s"
        again = [redeliver(client, api, t, s) for s in pending]
        assert all(a.status in (200, 503) for a in again), [a.status for a in again]
        accepted += [a for a in again if a.status == 200]
        pending = [a for a in again if a.status != 200]
        if pending:
            time.sleep(0.3)
    return accepted


def lead_texts(api: Api, tenant_id: str, contact: str) -> list[str]:
    conversation = api.store.app.get(
        Conversation, Conversation.create_id(UUID(tenant_id), "cloud", contact)
    )
    return [h["text"] for h in conversation.history if h["role"] == "lead"]


def contact() -> str:
    return f"55119{uuid4().int % 10**8:08d}"


def test_store_down_answers_503_promptly_and_nothing_is_lost_or_doubled(outage: Outage) -> None:
    api = outage.api
    t = cloud_tenant(api)
    with httpx.Client(timeout=30) as client:
        assert deliver(client, api, t, contact(), "antes").status == 200
        outage.stop_store()
        contacts = [contact() for _ in range(24)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda c: deliver(client, api, t, c, f"durante {c}"), contacts))
        assert_prompt_503(answers)
        gate = scrape(api.url)  # /v1/status would need the store to check the caller
        assert value(gate, "urbana_store_down") == 1
        assert value(gate, "urbana_store_refused_total") > 0  # answered at once, never queued
        outage.start_store()
        accepted = retry_until_accepted(client, api, t, answers)
        assert value(scrape(api.url), "urbana_store_down") == 0
    assert sorted(a.contact for a in accepted) == sorted(contacts)
    for a in accepted:
        assert lead_texts(api, t.tenant_id, a.contact) == [a.text]


def test_a_long_outage_answers_every_request_promptly(outage: Outage) -> None:
    api = outage.api
    t = cloud_tenant(api)
    answers: list[Sent] = []
    lock = threading.Lock()
    with httpx.Client(timeout=30) as client:
        assert deliver(client, api, t, contact(), "antes").status == 200
        outage.stop_store()
        down_until = time.monotonic() + 15.0

        def gateway() -> None:
            while time.monotonic() < down_until:
                sent = deliver(client, api, t, contact(), "durante")
                with lock:
                    answers.append(sent)
                time.sleep(0.2)

        with ThreadPoolExecutor(3) as pool:
            for f in [pool.submit(gateway) for _ in range(3)]:
                f.result()
        assert len(answers) >= 30
        assert_prompt_503(answers)
        outage.start_store()
        accepted = retry_until_accepted(client, api, t, answers)
    assert len(accepted) == len(answers)
    for a in accepted:
        assert lead_texts(api, t.tenant_id, a.contact) == ["durante"]


def test_a_503_leaves_nothing_partial_and_the_retry_lands_once(outage: Outage) -> None:
    api = outage.api
    t = cloud_tenant(api)
    wa_id = contact()
    with httpx.Client(timeout=30) as client:
        assert deliver(client, api, t, wa_id, "um").status == 200
        before = api.event_count()
        outage.stop_store()
        down = deliver(client, api, t, wa_id, "dois")
        assert_prompt_503([down])
        outage.start_store()
        # The pool reconnects on its own; no operator action. The gateway retries "dois".
        (accepted,) = retry_until_accepted(client, api, t, [down])
        assert deliver(client, api, t, wa_id, "três").status == 200
    assert accepted.status == 200
    assert lead_texts(api, t.tenant_id, wa_id) == ["um", "dois", "três"]
    assert api.event_count() > before


def test_an_attendant_command_while_the_store_is_down_is_503_and_its_retry_lands_once(
    outage: Outage,
) -> None:
    api = outage.api
    tenant_id, _ = api.store.app.register_tenant(f"Queda {uuid4().hex[:8]}")
    key = access(api).create_api_key(tenant_id, role=Role.ATTENDANT, by=None)
    cid = conversation(api, tenant_id)
    url = f"{api.url}/v1/conversations/{cid}/notes"
    headers = {**bearer(key.token), "Idempotency-Key": "nota-1"}
    assert (
        httpx.post(
            url, json={"text": "antes"}, headers=headers | {"Idempotency-Key": "0"}
        ).status_code
        == 201
    )
    outage.stop_store()
    try:
        started = time.monotonic()
        down = httpx.post(url, json={"text": "durante"}, headers=headers, timeout=30)
        assert down.status_code == 503, down.text
        assert down.headers["content-type"] == "application/problem+json"
        assert int(down.headers["retry-after"]) >= 1
        # The credential check and the command each wait for the store at most once.
        assert time.monotonic() - started < 2 * PROMPT_S
    finally:
        outage.start_store()
    deadline = time.monotonic() + 30
    while True:
        again = httpx.post(url, json={"text": "durante"}, headers=headers, timeout=30)
        if again.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert again.status_code == 201, again.text
    notes = [e for e in api.store.app.stream(cid) if type(e).__name__ == "NoteAdded"]
    assert [n.text for n in notes] == ["antes", "durante"]

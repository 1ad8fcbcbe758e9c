"""`urbana serve --workers 2`: two processes, two group committers, one store.

Both workers write the same conversations concurrently; the store stays the authority
on duplicates and optimistic concurrency, so nothing is lost or recorded twice.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.conftest import Api, start_api, stop_api
from tests.e2e.metrics_helpers import scrape, value
from tests.e2e.webhook_helpers import CloudTenant, cloud_tenant, cloud_text, post_cloud
from urbana.adapters.embedded import ServiceUrls
from urbana.domain.conversation import Conversation

pytestmark = pytest.mark.e2e

URBANA = str(Path(sys.executable).with_name("urbana"))


@dataclass
class Workers:
    api: Api  # in-thread, for admin calls and assertions
    url: str
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def workers(services: ServiceUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """An in-thread API (for admin calls and assertions) and a 2-worker server beside it."""
    master = os.urandom(32)
    api = start_api(services, f"e2e_{uuid4().hex[:10]}", master)
    port = free_port()
    env = {
        **os.environ,
        "URBANA_ENV": "test",
        "URBANA_DATABASE_URL": services.postgres,
        "URBANA_DATABASE_SCHEMA": api.settings.database_schema or "",
        "URBANA_KAFKA_BOOTSTRAP": services.kafka,
        "URBANA_REDIS_URL": services.redis,
        "URBANA_MASTER_KEY": base64.urlsafe_b64encode(master).decode(),
        "URBANA_DATA_DIR": str(tmp_path_factory.mktemp("workers")),
        "URBANA_POOL_SIZE": "2",
    }
    proc = subprocess.Popen(
        [URBANA, "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            stop_api(api)
            raise AssertionError("urbana serve --workers 2 did not start")
        time.sleep(0.1)
    try:
        yield Workers(api, url, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        stop_api(api)


def _post(w: Workers, client: httpx.Client, t: CloudTenant, payload: dict[str, object]) -> int:
    return post_cloud(client, w.url, t, payload).status_code


def _received(api: Api, conversation_id: UUID) -> int:
    return sum(
        1
        for e in api.store.app.stream(conversation_id)
        if type(e).__qualname__ == "Conversation.MessageReceived"
    )


def test_identical_webhooks_across_workers_record_one_message(workers: Workers) -> None:
    t = cloud_tenant(workers.api)
    wa_id = f"551199{uuid4().int % 10**7:07d}"
    payload = cloud_text(t.phone_number_id, wa_id, "Tem horário amanhã?")
    with httpx.Client(timeout=15) as c, ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(lambda _: _post(workers, c, t, payload), range(20)))
    assert codes == [200] * 20
    conv_id = Conversation.create_id(UUID(t.tenant_id), "cloud", wa_id)
    assert _received(workers.api, conv_id) == 1


def test_concurrent_follow_ups_across_workers_lose_nothing(workers: Workers) -> None:
    t = cloud_tenant(workers.api)
    contacts = [f"551198{uuid4().int % 10**7:07d}" for _ in range(4)]
    payloads = [
        cloud_text(t.phone_number_id, wa_id, f"mensagem {i}")
        for wa_id in contacts
        for i in range(10)
    ]
    with httpx.Client(timeout=15) as c, ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda p: _post(workers, c, t, p), payloads))
    assert codes == [200] * len(payloads)
    for wa_id in contacts:
        conv_id = Conversation.create_id(UUID(t.tenant_id), "cloud", wa_id)
        assert _received(workers.api, conv_id) == 10
        assert workers.api.store.app.get(Conversation, conv_id).inbound_seq == 10


def test_every_scrape_counts_the_webhooks_of_both_workers(workers: Workers) -> None:
    """Whichever process answers a scrape, it tells the figures of both (multiprocess mode)."""
    t = cloud_tenant(workers.api)
    received = ("urbana_ingest_outcomes_total", {"outcome": "received"})
    before = value(scrape(workers.url), received[0], **received[1])
    payloads = [
        cloud_text(t.phone_number_id, f"551196{uuid4().int % 10**7:07d}", "Oi") for _ in range(16)
    ]
    with httpx.Client(timeout=15) as c, ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda p: _post(workers, c, t, p), payloads))
    assert codes == [200] * len(payloads)
    # Fresh connections, so the kernel spreads the scrapes over the two processes too.
    scrapes = [scrape(workers.url) for _ in range(8)]
    assert {value(s, received[0], **received[1]) for s in scrapes} == {before + len(payloads)}


def test_sigterm_stops_every_worker(workers: Workers) -> None:
    proc = workers.proc
    children = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and (p / "stat").exists()
        and int((p / "stat").read_text().split(")")[-1].split()[1]) == proc.pid
    ]
    assert children, "the server runs its workers as child processes"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0

    def running(pid: int) -> bool:
        try:
            return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return False

    # Workers are joined by the supervisor; multiprocessing's resource tracker notices
    # its parent is gone a moment later. None may outlive that.
    deadline = time.monotonic() + 10
    while any(running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in children if running(pid)] == []

"""A restarted worker role is back to work within seconds.

`urbana worker --role responder` runs as a user runs it, in its own process, against the
test services; an in-thread API with the relay feeds it. A worker stopped by SIGTERM
leaves its consumer group, so its successor is assigned the partitions at once; a killed
one cannot leave, and the group's short session timeout bounds how long its partitions
stay with the dead member.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from eventsourcing.application import AggregateNotFoundError

from tests.e2e.conftest import Api, start_api, stop_api
from tests.e2e.fakes import Outside
from tests.e2e.test_ai_loop import send, wa, wait_until
from tests.e2e.webhook_helpers import CloudTenant, cloud_tenant
from urbana.adapters.embedded import ServiceUrls
from urbana.domain.conversation import Conversation

pytestmark = pytest.mark.e2e

URBANA = str(Path(sys.executable).with_name("urbana"))

# Generous against the few seconds it takes, and far under the ~20 s it took before.
BACK_TO_WORK_S = 8.0
SINCE_KILL_S = 15.0


@pytest.fixture(scope="module")
def relay_api(services: ServiceUrls, outside: Outside) -> Iterator[Api]:
    run = uuid4().hex[:8]
    api = start_api(
        services,
        f"restart_{run}",
        os.urandom(32),
        roles=("relay",),
        events_topic=f"e2e.events.{run}",
        consumer_group_prefix=f"e2e.{run}",
    )
    try:
        yield api
    finally:
        stop_api(api)


@pytest.fixture(scope="module")
def tenant(relay_api: Api, outside: Outside) -> CloudTenant:
    t = cloud_tenant(relay_api, api_base_url=outside.url)
    relay_api.store.app.change_settings(UUID(t.tenant_id), debounce_ms=0)
    return t


class Worker:
    """One `urbana worker --role responder` process; `ready` is when it said so."""

    def __init__(self, api: Api, outside: Outside, group_prefix: str, log: Path) -> None:
        s = api.settings
        assert s.master_key is not None
        env = {
            **os.environ,
            "URBANA_ENV": "test",
            "URBANA_DATABASE_URL": s.database_url or "",
            "URBANA_DATABASE_SCHEMA": s.database_schema or "",
            "URBANA_KAFKA_BOOTSTRAP": s.kafka_bootstrap or "",
            "URBANA_REDIS_URL": s.redis_url or "",
            "URBANA_MASTER_KEY": s.master_key.get_secret_value(),
            "URBANA_DATA_DIR": str(log.parent),
            "URBANA_EVENTS_TOPIC": s.events_topic,
            "URBANA_CONSUMER_GROUP_PREFIX": group_prefix,
            "URBANA_OPENAI_API_KEY": "sk-test-e2e",
            "URBANA_OPENAI_BASE_URL": f"{outside.url}/v1",
            "URBANA_LLM_MODEL": "gpt-test",
            "URBANA_DEBOUNCE_MS": "0",
            "URBANA_POOL_SIZE": "2",
        }
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [URBANA, "worker", "--role", "responder"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self.log = log
        self._ready = threading.Event()
        self.ready = 0.0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(b"worker:"):
                self.ready = time.monotonic()
                self._ready.set()

    def wait_ready(self, timeout: float = 60.0) -> float:
        if not self._ready.wait(timeout):
            raise AssertionError(f"worker not ready:\n{self.log.read_text()[-3000:]}")
        return self.ready

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def answered(api: Api, t: CloudTenant, wa_id: str) -> bool:
    conversation_id = Conversation.create_id(UUID(t.tenant_id), "cloud", wa_id)
    try:
        return bool(api.store.app.get(Conversation, conversation_id).answered_seq >= 1)
    except AggregateNotFoundError:  # the webhook's events are not stored yet
        return False


def answer_time(api: Api, t: CloudTenant, text: str, timeout: float = 60.0) -> float:
    """Send a new lead's message; the moment the responder has answered it."""
    wa_id = wa()
    send(api, t, wa_id, text)
    wait_until(lambda: answered(api, t, wa_id), timeout=timeout)
    return time.monotonic()


def members(api: Api, group_id: str) -> list[Any]:
    async def describe() -> list[Any]:
        admin = AIOKafkaAdminClient(bootstrap_servers=api.settings.kafka_bootstrap)
        await admin.start()
        try:
            (response,) = await admin.describe_consumer_groups([group_id])
        finally:
            await admin.close()
        (group,) = response.groups
        return list(group[-1])  # (error, id, state, protocol type, protocol, members)

    return asyncio.run(describe())


def test_a_worker_stopped_by_sigterm_leaves_its_group_and_its_successor_starts_at_once(
    relay_api: Api, tenant: CloudTenant, outside: Outside, tmp_path: Path
) -> None:
    prefix = f"e2e.term.{uuid4().hex[:8]}"
    group = f"{prefix}.worker.responder"
    first = Worker(relay_api, outside, prefix, tmp_path / "first.log")
    second: Worker | None = None
    try:
        first.wait_ready()
        answer_time(relay_api, tenant, "Oi, primeira mensagem")
        assert len(members(relay_api, group)) == 1
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(timeout=30) == 0
        assert members(relay_api, group) == []  # it left; nobody waits for its session

        second = Worker(relay_api, outside, prefix, tmp_path / "second.log")
        ready = second.wait_ready()
        took = answer_time(relay_api, tenant, "Oi, depois do SIGTERM") - ready
        assert took < BACK_TO_WORK_S, f"{took:.1f} s to answer after a restart"
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_a_killed_worker_is_replaced_within_seconds(
    relay_api: Api, tenant: CloudTenant, outside: Outside, tmp_path: Path
) -> None:
    prefix = f"e2e.kill.{uuid4().hex[:8]}"
    first = Worker(relay_api, outside, prefix, tmp_path / "first.log")
    second: Worker | None = None
    try:
        first.wait_ready()
        answer_time(relay_api, tenant, "Oi, antes do kill")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        killed_at = time.monotonic()

        second = Worker(relay_api, outside, prefix, tmp_path / "second.log")
        ready = second.wait_ready()
        answered_at = answer_time(relay_api, tenant, "Oi, depois do kill")
        took = answered_at - ready
        assert took < BACK_TO_WORK_S, f"{took:.1f} s to answer after a restart"
        # From the kill too: a successor slow to start would otherwise hide the dead
        # member's session (before, the session alone kept the partitions ~10 s, and each
        # join waited 5 s more). This includes the process's own start, hence the margin.
        since_kill = answered_at - killed_at
        assert since_kill < SINCE_KILL_S, f"{since_kill:.1f} s from the kill to an answer"
    finally:
        first.stop()
        if second is not None:
            second.stop()

"""The production processes' own output: `urbana serve` and `urbana worker` write JSON lines
on stderr without personal data, and a worker serves its GET /metrics on its own port."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.conftest import Api, start_api, stop_api
from tests.e2e.metrics_helpers import scrape, value
from tests.e2e.webhook_helpers import cloud_tenant, cloud_text, post_cloud
from urbana.adapters.embedded import ServiceUrls

pytestmark = pytest.mark.e2e

URBANA = str(Path(sys.executable).with_name("urbana"))
TOKEN = "metrics-" + uuid4().hex
FIELDS = {"time", "level", "role", "logger", "event"}


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def lines(self) -> list[dict[str, Any]]:
        """Every stderr line, each parsed as JSON (a line that is not fails the test)."""
        text = self.stderr.read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


@dataclass
class Stack:
    api: Api  # in-thread, for setup
    serve: Process
    serve_url: str
    worker: Process
    metrics_url: str


def wait_for(check: Callable[[], Any], what: str, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def launch(argv: list[str], env: dict[str, str], folder: Path, name: str) -> Process:
    out, err = folder / f"{name}.out", folder / f"{name}.err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen([URBANA, *argv], env=env, stdout=o, stderr=e)
    return Process(proc, out, err)


@pytest.fixture(scope="module")
def stack(services: ServiceUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    master = os.urandom(32)
    api = start_api(services, f"e2e_{uuid4().hex[:10]}", master)
    folder = tmp_path_factory.mktemp("process-logs")
    run = uuid4().hex[:8]
    env = {
        **os.environ,
        "URBANA_ENV": "test",
        "URBANA_DATABASE_URL": services.postgres,
        "URBANA_DATABASE_SCHEMA": api.settings.database_schema or "",
        "URBANA_KAFKA_BOOTSTRAP": services.kafka,
        "URBANA_REDIS_URL": services.redis,
        "URBANA_MASTER_KEY": base64.urlsafe_b64encode(master).decode(),
        "URBANA_DATA_DIR": str(folder),
        "URBANA_POOL_SIZE": "2",
        "URBANA_METRICS_TOKEN": TOKEN,
        "URBANA_EVENTS_TOPIC": f"e2e.events.{run}",
        "URBANA_CONSUMER_GROUP_PREFIX": f"e2e.{run}",
    }
    port = free_port()
    serve = launch(["serve", "--port", str(port)], env, folder, "serve")
    worker = launch(
        ["worker", "--role", "relay", "--role", "scheduler", "--metrics-port", "0"],
        env,
        folder,
        "worker",
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert serve.proc.poll() is None, serve.stderr.read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, "urbana serve")

        def metrics_line() -> str | None:
            assert worker.proc.poll() is None, worker.stderr.read_text()
            found = re.search(r"metrics: (http://\S+)/metrics", worker.stdout.read_text())
            return found.group(1) if found else None

        yield Stack(api, serve, url, worker, wait_for(metrics_line, "the worker's metrics"))
    finally:
        serve.stop()
        worker.stop()
        stop_api(api)


def test_serve_logs_json_lines_without_personal_data(stack: Stack) -> None:
    t = cloud_tenant(stack.api)
    phone = f"5511{uuid4().int % 10**9:09d}"
    text = f"Quero o plano familia {uuid4().hex[:8]}"
    name = f"Joana {uuid4().hex[:6]}"
    with httpx.Client(timeout=30) as client:
        answer = post_cloud(
            client, stack.serve_url, t, cloud_text(t.phone_number_id, phone, text, name=name)
        )
        assert answer.status_code == 200, answer.text
        # A phone in a path and in a query string, on routes that refuse the caller.
        assert client.get(f"{stack.serve_url}/v1/leads", params={"phone": phone}).status_code == 401
        assert (
            client.post(f"{stack.serve_url}/webhooks/evolution/{phone}", json={}).status_code == 404
        )
        assert client.get(f"{stack.serve_url}/nada/{phone}", params={"q": text}).status_code == 404

    expected = {
        ("POST", "/webhooks/whatsapp-cloud"),
        ("GET", "/v1/leads"),
        ("POST", "/webhooks/evolution/{webhook_secret}"),
        ("GET", "unmatched"),
    }

    def requests() -> list[dict[str, Any]]:
        # A line is written once its response is sent, so the last may trail the client.
        lines = [line for line in stack.serve.lines() if line["event"] == "request"]
        return lines if expected <= {(r["method"], r["route"]) for r in lines} else []

    wait_for(requests, "one line per request")
    lines = stack.serve.lines()
    raw = stack.serve.stderr.read_text()
    for secret in (phone, text, name, phone[-8:]):
        assert secret not in raw
    for line in lines:
        assert set(line) >= FIELDS, line
        assert line["role"] == "api"
    by_route = {(r["method"], r["route"]): r for r in lines if r["event"] == "request"}
    webhook = by_route[("POST", "/webhooks/whatsapp-cloud")]
    assert webhook["status"] == 200
    assert webhook["tenant"] == t.tenant_id
    assert webhook["duration_ms"] >= 0
    assert by_route[("GET", "/v1/leads")]["status"] == 401
    assert by_route[("POST", "/webhooks/evolution/{webhook_secret}")]["status"] == 404
    assert by_route[("GET", "unmatched")]["status"] == 404


def test_a_worker_serves_its_metrics_on_its_own_port(stack: Stack) -> None:
    url = stack.metrics_url
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    refused = httpx.get(f"{url}/metrics", timeout=10)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"

    def relayed() -> bool:
        return value(scrape(url, TOKEN), "urbana_relay_position") > 0

    t = cloud_tenant(stack.api)  # events in the store, for the relay to publish
    with httpx.Client(timeout=30) as client:
        post_cloud(client, stack.serve_url, t, cloud_text(t.phone_number_id, "5511900000001", "Oi"))
    wait_for(relayed, "the worker's relay publishing")
    samples = scrape(url, TOKEN)
    names = {name for name, _ in samples}
    assert {"urbana_relay_lag_events", "urbana_relay_published_total"} <= names
    assert "urbana_scheduler_leading" in names
    assert "urbana_ingest_seconds_count" in names  # declared everywhere, counted where it runs
    for line in stack.worker.lines():
        assert set(line) >= FIELDS, line
        assert line["role"] == "relay,scheduler"

"""`urbana dlq list` and `urbana dlq retry` as an operator runs them, against `urbana dev`.

A reply the gateway refuses for good (Meta's 131030, recipient not allowed) is recorded
as failed with the gateway's reason; the operator sees it, fixes the cause, and queues it
again; the dispatcher then sends it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.e2e.fake_graph import FakeGraph, Phase, running_graph
from tests.e2e.fakes import Outside
from tests.e2e.test_ai_loop import KNOWLEDGE, wa, wait_until
from tests.e2e.webhook_helpers import CloudTenant, cloud_text, post_cloud

pytestmark = pytest.mark.e2e

URBANA = str(Path(sys.executable).with_name("urbana"))


@pytest.fixture(scope="module")
def graph() -> Iterator[FakeGraph]:
    with running_graph() as fake:
        yield fake


@pytest.fixture(scope="module")
def dev(outside: Outside, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A running `urbana dev` (its data dir and API URL) whose AI is the scripted fake."""
    data_dir = tmp_path_factory.mktemp("dlq") / "data"
    env = {
        **os.environ,
        "URBANA_OPENAI_API_KEY": "sk-test-e2e",
        "URBANA_OPENAI_BASE_URL": f"{outside.url}/v1",
        "URBANA_LLM_MODEL": "gpt-test",
        "URBANA_LLM_FALLBACK_MODEL": "gpt-test-fallback",
        "URBANA_DEBOUNCE_MS": "0",
    }
    proc = subprocess.Popen(
        [URBANA, "dev", "--data-dir", str(data_dir), "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + 90
        while proc.stdout.readline().strip() != "ready":
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("urbana dev did not get ready")
        api = json.loads((data_dir / "services.json").read_text())["api"]
        yield data_dir, api
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        proc.stdout.close()


def urbana(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [URBANA, *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def dlq(data_dir: Path, *args: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(urbana(data_dir, "dlq", "list", *args, "--json").stdout)
    return loaded


def test_a_refused_reply_is_listed_with_its_reason_and_sent_once_retried(
    dev: tuple[Path, str], graph: FakeGraph, tmp_path: Path
) -> None:
    data_dir, api = dev
    created = urbana(data_dir, "tenant", "create", f"Loja DLQ {uuid4().hex[:6]}", "--json")
    tenant_id = json.loads(created.stdout)["tenant_id"]
    t = CloudTenant(tenant_id, str(uuid4().int)[:15], uuid4().hex, uuid4().hex)
    urbana(
        data_dir,
        "channel",
        "connect",
        tenant_id,
        "cloud",
        "--phone-number-id",
        t.phone_number_id,
        "--app-secret",
        t.app_secret,
        "--verify-token",
        t.verify_token,
        "--access-token",
        "EAAG" + uuid4().hex,
        "--api-base-url",
        graph.url,
    )
    doc = tmp_path / "atendimento.md"
    doc.write_text(KNOWLEDGE, encoding="utf-8")
    urbana(data_dir, "kb", "add", tenant_id, str(doc))
    graph.post_statuses(t.phone_number_id, api, t.app_secret)
    graph.play([Phase("error", 3600, status=400, code=131030)])

    contact = wa()
    with httpx.Client(timeout=15) as client:
        answer = post_cloud(client, api, t, cloud_text(t.phone_number_id, contact, "Horário?"))
    assert answer.status_code == 200, answer.text

    listed = wait_until(lambda: dlq(data_dir, "--tenant", tenant_id)["failed"], timeout=90)
    (item,) = listed
    assert item["tenant_id"] == tenant_id
    assert item["channel"] == "cloud"
    assert item["author"] == "ai"
    assert item["code"] == "131030"
    assert "HTTP 400" in item["reason"]
    assert item["retryable"] is True
    assert [r.to for r in graph.refused()][-1:] == [contact]
    assert graph.delivered_to(contact) == []
    # Another tenant's list does not show it; the text output names it.
    assert dlq(data_dir, "--tenant", str(uuid4()))["failed"] == []
    assert item["outbound_id"] in urbana(data_dir, "dlq", "list").stdout

    graph.play([])  # the operator fixed the cause: the gateway takes messages again
    retried = json.loads(urbana(data_dir, "dlq", "retry", item["outbound_id"], "--json").stdout)
    assert retried == {
        "retried": [
            {"outbound_id": item["outbound_id"], "conversation_id": item["conversation_id"]}
        ],
        "refused": [],
    }
    (delivered,) = wait_until(lambda: graph.delivered_to(contact), timeout=60)
    assert delivered.callback_data == f"{item['conversation_id']}:{item['outbound_id']}"
    wait_until(lambda: dlq(data_dir, "--tenant", tenant_id)["failed"] == [], timeout=30)
    time.sleep(1.0)
    assert len(graph.delivered_to(contact)) == 1

    # Once sent, it is no dead letter: naming it again is refused (exit 1), and --all
    # finds nothing for this tenant.
    again = urbana(data_dir, "dlq", "retry", item["outbound_id"], "--json", check=False)
    assert again.returncode == 1
    assert json.loads(again.stdout) == {
        "retried": [],
        "refused": [{"outbound_id": item["outbound_id"], "reason": "no failed message"}],
    }
    everything = urbana(data_dir, "dlq", "retry", "--all", "--tenant", tenant_id, "--json")
    assert json.loads(everything.stdout) == {"retried": [], "refused": []}
    usage = urbana(data_dir, "dlq", "retry", check=False)
    assert usage.returncode == 2

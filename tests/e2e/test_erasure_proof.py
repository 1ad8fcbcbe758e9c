"""The proof that erasure reaches every copy: a byte scan of a running `urbana dev`.

A lead with a known phone, name and message texts writes through signed Cloud API
webhooks, the AI answers, then an auditor's operator erases the subject with
`urbana privacy erase`. Before erasure the scan of every table of the database, every
record of every Kafka topic (keys, values, headers), the Redis keyspace and the dev
process's logs finds none of them in plaintext, hex or base64 (they are sealed); after
it, still none, and the read models no longer hold the subject. Positive controls show
the scan sees what is there (the tenant id in the database and in Kafka).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.e2e import byte_scan
from tests.e2e.fakes import Outside
from tests.e2e.test_ai_loop import KNOWLEDGE, wait_until
from tests.e2e.webhook_helpers import CloudTenant, cloud_status, cloud_text, post_cloud
from tests.provider_ids import cloud_wamid

pytestmark = pytest.mark.e2e

URBANA = str(Path(sys.executable).with_name("urbana"))


@dataclass
class Dev:
    data_dir: Path
    services: dict[str, str]
    logs: list[Path]


@pytest.fixture(scope="module")
def dev(outside: Outside, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """A running `urbana dev` whose AI is the scripted fake; its output goes to files."""
    root = tmp_path_factory.mktemp("proof")
    data_dir, stdout, stderr = root / "data", root / "dev.out", root / "dev.err"
    env = {
        **os.environ,
        "URBANA_OPENAI_API_KEY": "sk-test-e2e",
        "URBANA_OPENAI_BASE_URL": f"{outside.url}/v1",
        "URBANA_LLM_MODEL": "gpt-test",
        "URBANA_LLM_FALLBACK_MODEL": "gpt-test-fallback",
        "URBANA_DEBOUNCE_MS": "0",
    }
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [URBANA, "dev", "--data-dir", str(data_dir), "--port", "0"],
            env=env,
            stdout=out,
            stderr=err,
        )
    try:
        wait_until(
            lambda: proc.poll() is not None or b"\nready" in b"\n" + stdout.read_bytes(),
            timeout=120,
        )
        assert proc.poll() is None, stderr.read_text()
        services = json.loads((data_dir / "services.json").read_text())
        yield Dev(data_dir, services, [stdout, stderr])
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def urbana(dev: Dev, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [URBANA, *args, "--data-dir", str(dev.data_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    # What the commands print is part of what the processes log.
    with (dev.data_dir.parent / "cli.log").open("a") as log:
        log.write(done.stdout + done.stderr)
    return done


def scan(dev: Dev, needles: list[str]) -> tuple[list[byte_scan.Found], dict[str, int]]:
    found_pg, tables = byte_scan.scan_postgres(dev.services["postgres"], needles)
    found_kafka, topics = byte_scan.scan_kafka(dev.services["kafka"], needles)
    found_redis, keys = byte_scan.scan_redis(dev.services["redis"], needles)
    logs = [*dev.logs, dev.data_dir.parent / "cli.log"]
    found_logs = byte_scan.scan_logs([p for p in logs if p.exists()], needles)
    sizes = {"tables": tables, "topics": topics, "redis_keys": keys}
    return [*found_pg, *found_kafka, *found_redis, *found_logs], sizes


def test_after_erasure_no_byte_of_the_subject_is_left(
    dev: Dev, outside: Outside, tmp_path: Path
) -> None:
    created = urbana(dev, "tenant", "create", f"Loja Prova {uuid4().hex[:6]}", "--json")
    tenant_id = json.loads(created.stdout)["tenant_id"]
    t = CloudTenant(tenant_id, str(uuid4().int)[:15], uuid4().hex, uuid4().hex)
    urbana(
        dev,
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
        outside.url,
    )
    urbana(dev, "tenant", "configure", tenant_id, "--set", "debounce_ms=0")
    doc = tmp_path / "atendimento.md"
    doc.write_text(KNOWLEDGE, encoding="utf-8")
    urbana(dev, "kb", "add", tenant_id, str(doc))
    key = json.loads(
        urbana(dev, "apikey", "create", tenant_id, "--role", "auditor", "--json").stdout
    )
    auditor = {"Authorization": f"Bearer {key['key']}"}
    api = dev.services["api"]

    mark = uuid4().hex[:8]
    phone = f"55119{uuid4().int % 10**8:08d}"
    name = f"Zuleica Fonterrada {mark}"
    texts = [f"Meu CPF termina em {mark} e moro na Travessa Quixaba", f"Qual o horario {mark}?"]
    needles = [phone, name, *texts]
    # Real wamids: each is base64 of a struct that starts with the lead's phone.
    wamids = [cloud_wamid(phone) for _ in texts]
    with httpx.Client(timeout=15) as client:
        for text, wamid in zip(texts, wamids, strict=True):
            webhook = cloud_text(t.phone_number_id, phone, text, wamid=wamid, name=name)
            answer = post_cloud(client, api, t, webhook)
            assert answer.status_code == 200, answer.text
        # A redelivery is still a duplicate, though the store never holds the wamid.
        again_first = cloud_text(t.phone_number_id, phone, texts[0], wamid=wamids[0], name=name)
        assert post_cloud(client, api, t, again_first).json()["duplicates"] == 1
        wait_until(lambda: outside.sends_to(phone), timeout=90)  # the AI answered
        # Meta's delivery tick names the answer by its wamid (which embeds the phone too).
        sent = outside.sends_to(phone)[0]["wamid"]
        tick = post_cloud(client, api, t, cloud_status(t.phone_number_id, sent, phone, "delivered"))
        assert tick.status_code == 200, tick.text

        def projected() -> Any:
            page = client.get(f"{api}/v1/conversations", headers=auditor).json()
            if not page["items"]:
                return None
            detail = client.get(
                f"{api}/v1/conversations/{page['items'][0]['id']}", headers=auditor
            ).json()
            out = [m for m in detail["messages"] if m["direction"] == "out"]
            ticked = bool(out) and out[0]["status"] == "delivered"
            return detail if len(detail["messages"]) >= 3 and ticked else None

        detail = wait_until(projected, timeout=90)
        # The data is there, and readable by those allowed to read it.
        assert [m["text"] for m in detail["messages"][:2]] == texts
        assert detail["contact_name"] == name

        before, sizes = scan(dev, needles)
        assert before == [], f"personal data in clear before erasure: {before}"
        # What was scanned holds the JSON log lines, one per HTTP request among them.
        logged = [json.loads(line) for line in dev.logs[1].read_text().splitlines() if line]
        assert any(
            line["event"] == "request"
            and line["route"] == "/webhooks/whatsapp-cloud"
            and line.get("tenant") == tenant_id
            for line in logged
        )
        assert sizes["tables"] >= 15  # the store, keys, read models, knowledge, ledgers
        assert sizes["topics"] >= 1
        assert sizes["redis_keys"] >= 1
        controls, _ = scan(dev, [tenant_id])
        assert {f.where.split(":")[0] for f in controls} >= {"postgres", "kafka"}

        receipt = json.loads(
            urbana(
                dev,
                "privacy",
                "erase",
                tenant_id,
                "--phone",
                "+" + phone,
                "--reason",
                "subject_request",
                "--yes",
                "--json",
            ).stdout
        )
        assert receipt["lead_id"] == detail["lead_id"]
        assert receipt["removed"]["data_keys"] == 1
        assert receipt["removed"]["messages"] >= 3

        # The projector consumes SubjectErased too: nothing of the subject comes back.
        def gone() -> bool:
            conversations = client.get(f"{api}/v1/conversations", headers=auditor).json()
            leads = client.get(f"{api}/v1/leads", headers=auditor).json()
            return bool(conversations["items"] == [] and leads["items"] == [])

        wait_until(gone, timeout=60)
        after, _ = scan(dev, needles)
        assert after == [], f"personal data left after erasure: {after}"
        erased_in_kafka, _ = scan(dev, ["SubjectErased"])
        assert any(f.where.startswith("kafka:") for f in erased_in_kafka)

        # The same phone writes again: a new subject, with nothing of the old one.
        again = "Oi de novo"
        answer = post_cloud(
            client, api, t, cloud_text(t.phone_number_id, phone, again, name="Zuleica")
        )
        assert answer.status_code == 200, answer.text

        def new_subject() -> Any:
            page = client.get(f"{api}/v1/conversations", headers=auditor).json()
            return page["items"][0] if page["items"] else None

        fresh = wait_until(new_subject, timeout=60)
        assert fresh["lead_id"] != receipt["lead_id"]
        assert fresh["id"] != detail["id"]
        shown = client.get(f"{api}/v1/conversations/{fresh['id']}", headers=auditor).json()
        assert [m["text"] for m in shown["messages"] if m["direction"] == "in"] == [again]


def run_cli(dev: Dev, *args: str, answer: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [URBANA, *args, "--data-dir", str(dev.data_dir)],
        capture_output=True,
        text=True,
        input=answer,
        timeout=120,
        check=False,
    )


def test_the_cli_asks_before_destroying_and_retention_lists_what_is_due(dev: Dev) -> None:
    created = urbana(dev, "tenant", "create", f"Loja CLI {uuid4().hex[:6]}", "--json")
    tenant_id = json.loads(created.stdout)["tenant_id"]
    t = CloudTenant(tenant_id, str(uuid4().int)[:15], uuid4().hex, uuid4().hex)
    urbana(
        dev,
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
    )
    phone = f"55119{uuid4().int % 10**8:08d}"
    with httpx.Client(timeout=15) as client:
        sent = post_cloud(
            client, dev.services["api"], t, cloud_text(t.phone_number_id, phone, "Oi")
        )
    assert sent.status_code == 200, sent.text
    args = ("privacy", "erase", tenant_id, "--phone", phone, "--reason", "subject_request")

    refused = run_cli(dev, *args, answer="n\n")
    assert refused.returncode == 1
    assert "destroys the data key of lead" in refused.stderr
    assert "Erase?" in refused.stderr
    usage = run_cli(dev, "privacy", "erase", tenant_id, "--reason", "subject_request", "--yes")
    assert usage.returncode == 2  # neither --phone nor --lead
    bad = run_cli(dev, *args, "--reason", "porque sim", "--yes")
    assert bad.returncode == 2
    unknown = run_cli(
        dev,
        "privacy",
        "erase",
        tenant_id,
        "--lead",
        str(uuid4()),
        "--reason",
        "subject_request",
        "--yes",
    )
    assert unknown.returncode == 1

    confirmed = run_cli(dev, *args, "--json", answer="y\n")
    assert confirmed.returncode == 0, confirmed.stderr
    receipt = json.loads(confirmed.stdout)
    assert receipt["removed"]["data_keys"] == 1
    twice = json.loads(urbana(dev, *args, "--yes", "--json").stdout)
    assert (twice["lead_id"], twice["already_erased"]) == (receipt["lead_id"], True)

    unset = urbana(dev, "privacy", "retention", "run", tenant_id, "--dry-run")
    assert "retention_days is not set" in unset.stdout
    urbana(dev, "tenant", "configure", tenant_id, "--set", "retention_days=30")
    due = json.loads(urbana(dev, "privacy", "retention", "run", tenant_id, "--json").stdout)
    assert (due["retention_days"], due["due"], due["erased"]) == (30, [], 0)

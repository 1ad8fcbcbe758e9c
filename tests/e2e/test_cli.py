"""Every `urbana` command run as a user runs it: a subprocess against a running `urbana dev`.

One `urbana dev` (started through `URBANA_DATA_DIR`, on port 0) serves the module. Each
command runs once with `--data-dir DIR` (text output) and once with only
`URBANA_DATA_DIR=DIR` in its environment (`--json` output), from a working directory
that has no `.env` and must not get a `.urbana` of its own. Each test checks what the
command printed and what it did: the tenant in the store, the channel routing a signed
webhook (and the AI's answer reaching a stand-in for the Graph API), knowledge the AI
answers from, topics on the broker, a worker projecting an event then leaving on
SIGTERM, read models rebuilt, events republished and consumed, the demo's data kept.
The last test stops `urbana dev` with SIGINT and checks nothing is left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from tests.e2e.fakes import Outside, start_outside
from tests.e2e.webhook_helpers import CloudTenant, cloud_text, post_cloud
from urbana.adapters.crypto import parse_master_key
from urbana.adapters.postgres.store import Store, open_store
from urbana.application.gateways import gateway_config
from urbana.config import conninfo
from urbana.domain.conversation import Conversation
from urbana.domain.tenant import TelegramTarget, Tenant

pytestmark = pytest.mark.e2e

URBANA = str(Path(sys.executable).with_name("urbana"))
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FLAG, ENV = "--data-dir", "URBANA_DATA_DIR"
# (how the data dir is given, --json or text); ids name both
WAYS = [
    pytest.param(FLAG, False, id="data-dir-text"),
    pytest.param(ENV, True, id="env-json"),
]
KNOWLEDGE = "# Garantia\n\nTodos os colchões têm garantia de 2 anos contra defeitos de fábrica.\n"
T = TypeVar("T")


def clean_environment() -> dict[str, str]:
    """The caller's environment without Urbana's settings (or an OpenAI key)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("URBANA_") and k not in ("OPENAI_API_KEY",)
    }


def wait_until(check: Callable[[], T | None], timeout: float = 60.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not in time: {what}")


@dataclass
class Dev:
    """The running `urbana dev` and what the tests use beside it."""

    data_dir: Path
    home: Path  # every command's working directory
    proc: subprocess.Popen[str]
    lines: list[str]  # its stdout, drained by a thread
    log: Path  # its stderr
    services: dict[str, str]
    store: Store
    outside: Outside
    children: set[int] = field(default_factory=set)

    def env(self, via: str, **extra: str) -> dict[str, str]:
        env = {**clean_environment(), **extra}
        if via == ENV:
            env[ENV] = str(self.data_dir)
        return env

    def argv(self, via: str, *args: str) -> list[str]:
        return [URBANA, *args, *([FLAG, str(self.data_dir)] if via == FLAG else [])]

    def urbana(self, via: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a command to its end; it must succeed and leave the working dir alone."""
        done = subprocess.run(
            self.argv(via, *args),
            env=self.env(via),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        assert not (self.home / ".urbana").exists(), "the command used ./.urbana"
        return done

    def sql(self, query: str, *params: Any, schema: str | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(conninfo(self.services["postgres"], schema), autocommit=True) as c:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else []

    def cloud_tenant(self) -> CloudTenant:
        """A tenant whose Cloud API channel sends to the stand-in Graph API (set up directly)."""
        tid, _ = self.store.app.register_tenant(f"Loja {uuid4().hex[:8]}")
        t = CloudTenant(str(tid), str(uuid4().int)[:15], uuid4().hex, uuid4().hex)
        fields = {
            "phone_number_id": t.phone_number_id,
            "app_secret": t.app_secret,
            "verify_token": t.verify_token,
            "access_token": "EAAG" + uuid4().hex,
            "api_base_url": self.outside.url,
        }
        self.store.app.connect_channel(tid, gateway_config("cloud", fields))
        return t

    def send_text(self, t: CloudTenant, text: str) -> str:
        """A signed Cloud API webhook from a new contact; returns the contact's wa_id."""
        wa_id = f"551197{uuid4().int % 10**7:07d}"
        with httpx.Client(timeout=15) as client:
            r = post_cloud(
                client, self.services["api"], t, cloud_text(t.phone_number_id, wa_id, text)
            )
        assert r.status_code == 200, r.text
        assert r.json()["received"] == 1
        return wa_id

    def answers_to(self, wa_id: str, timeout: float = 60.0) -> list[str]:
        """The texts the dispatcher sent this contact through the stand-in Graph API."""
        sends = wait_until(lambda: self.outside.sends_to(wa_id), timeout, f"a reply to {wa_id}")
        return [s["body"]["text"]["body"] for s in sends]


def _drain(stream: Any, into: list[str]) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat.split(")")[-1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    root = tmp_path_factory.mktemp("cli")
    data_dir, home = root / "data", root / "home"
    home.mkdir()
    log = root / "dev.stderr"
    outside, server, thread = start_outside()
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [URBANA, "dev", "--port", "0"],  # the data dir only through the environment
            env={**clean_environment(), ENV: str(data_dir)},
            cwd=home,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert proc.stdout is not None
    lines: list[str] = []
    drain = threading.Thread(target=_drain, args=(proc.stdout, lines), daemon=True)
    drain.start()
    store: Store | None = None
    try:
        wait_until(lambda: "ready" in lines or proc.poll() is not None, 90, "urbana dev ready")
        assert "ready" in lines, f"urbana dev did not start: {lines}\n{log.read_text()[-3000:]}"
        services = json.loads((data_dir / "services.json").read_text())
        master_key = (data_dir / "master.key").read_text().strip()
        store = open_store(services["postgres"], parse_master_key(master_key), pool_size=2)
        running = Dev(data_dir, home, proc, lines, log, services, store, outside)
        running.children = _children(proc.pid) | {
            int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
        }
        yield running
    finally:
        if store is not None:
            store.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        drain.join(timeout=10)
        proc.stdout.close()
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.usefixtures("demos")  # start them now: they run beside the tests below
def test_dev_takes_its_data_dir_from_the_environment(dev: Dev) -> None:
    started = dev.lines[: dev.lines.index("ready") + 1]
    assert [line.split(":", 1)[0] for line in started[-5:]] == [
        "postgres",
        "kafka",
        "redis",
        "api",
        "ready",
    ]
    assert f"api: {dev.services['api']}" in dev.lines
    assert str(dev.data_dir / "postgres") in dev.services["postgres"]
    assert not (dev.home / ".urbana").exists()
    assert httpx.get(dev.services["api"] + "/readyz", timeout=10).status_code == 200


# ------------------------------------------------------------------------- tenants


@pytest.mark.parametrize(("via", "as_json"), WAYS)
def test_tenant_create(dev: Dev, via: str, as_json: bool) -> None:
    name = f"Loja {uuid4().hex[:8]}"
    done = dev.urbana(via, "tenant", "create", name, *(["--json"] if as_json else []))
    if as_json:
        printed = json.loads(done.stdout)
        assert printed["created"] is True
        tenant_id = UUID(printed["tenant_id"])
    else:
        tenant_id = UUID(done.stdout.strip())
    assert dev.store.app.get(Tenant, tenant_id).name == name
    if via == FLAG:  # registering twice is harmless
        again = dev.urbana(via, "tenant", "create", name, "--json")
        assert json.loads(again.stdout) == {"tenant_id": str(tenant_id), "created": False}


@pytest.mark.parametrize(("via", "as_json"), WAYS)
def test_tenant_telegram_sets_where_handoff_notices_go_and_turns_them_off(
    dev: Dev, via: str, as_json: bool
) -> None:
    tenant_id = dev.store.app.register_tenant(f"Loja {uuid4().hex[:8]}")[0]
    json_flag = ["--json"] if as_json else []
    done = dev.urbana(
        via, "tenant", "telegram", str(tenant_id), "--chat-id", "-100987",
        "--bot-token", "123456:XYZ", *json_flag,
    )  # fmt: skip
    if as_json:
        assert json.loads(done.stdout) == {
            "tenant_id": str(tenant_id),
            "telegram_chat_id": "-100987",
        }
    else:
        assert done.stdout.strip() == f"handoff notices of {tenant_id} go to telegram chat -100987"
    assert dev.store.app.get(Tenant, tenant_id).telegram == TelegramTarget("-100987", "123456:XYZ")
    dev.urbana(via, "tenant", "telegram", str(tenant_id), "--off", *json_flag)
    assert dev.store.app.get(Tenant, tenant_id).telegram is None


# ------------------------------------------------------------------------ channels


def connect(dev: Dev, via: str, as_json: bool, kind: str, *options: str) -> tuple[str, str]:
    """`channel connect` for a new tenant; (tenant id, route key printed)."""
    tenant_id = str(dev.store.app.register_tenant(f"Loja {uuid4().hex[:8]}")[0])
    done = dev.urbana(
        via, "channel", "connect", tenant_id, kind, *options, *(["--json"] if as_json else [])
    )
    if as_json:
        printed = json.loads(done.stdout)
        assert (printed["tenant_id"], printed["channel"]) == (tenant_id, kind)
        return tenant_id, printed["route_key"]
    match = re.fullmatch(rf"connected {kind} (\S+) to {tenant_id}", done.stdout.strip())
    assert match, done.stdout
    return tenant_id, match.group(1)


@pytest.mark.parametrize(("via", "as_json"), WAYS)
def test_channel_connect_cloud(dev: Dev, via: str, as_json: bool) -> None:
    t = CloudTenant("", str(uuid4().int)[:15], uuid4().hex, uuid4().hex)
    t.tenant_id, route = connect(
        dev,
        via,
        as_json,
        "cloud",
        *("--phone-number-id", t.phone_number_id, "--app-secret", t.app_secret),
        *("--verify-token", t.verify_token, "--access-token", "EAAG" + uuid4().hex),
        *("--api-base-url", dev.outside.url),
    )
    assert route == t.phone_number_id
    handshake = httpx.get(
        dev.services["api"] + "/webhooks/whatsapp-cloud",
        params={"hub.mode": "subscribe", "hub.verify_token": t.verify_token, "hub.challenge": "42"},
    )
    assert (handshake.status_code, handshake.text) == (200, "42")
    wa_id = dev.send_text(t, "Oi")  # routed by phone_number_id, signed with the app secret
    conversation = Conversation.create_id(UUID(t.tenant_id), "cloud", wa_id)
    assert dev.store.app.get(Conversation, conversation).inbound_seq == 1
    assert dev.answers_to(wa_id)  # and the answer went out through this channel


@pytest.mark.parametrize(("via", "as_json"), WAYS)
def test_channel_connect_evolution(dev: Dev, via: str, as_json: bool) -> None:
    instance, secret = f"loja-{uuid4().hex[:8]}", uuid4().hex
    tenant_id, route = connect(
        dev,
        via,
        as_json,
        "evolution",
        *("--instance", instance, "--webhook-secret", secret),
        *("--api-url", "http://127.0.0.1:9", "--api-key", "k" * 24),
    )
    assert route == instance
    payload = json.loads((FIXTURES / "evolution" / "text_conversation.json").read_text())
    number = f"551196{uuid4().int % 10**7:07d}"
    payload["instance"] = instance
    payload["data"]["key"].update({"remoteJid": f"{number}@s.whatsapp.net", "fromMe": False})
    payload["data"]["key"]["id"] = uuid4().hex.upper()
    payload["data"]["messageTimestamp"] = int(time.time())
    r = httpx.post(f"{dev.services['api']}/webhooks/evolution/{secret}", json=payload)
    assert r.status_code == 200, r.text
    assert r.json()["received"] == 1
    conversation = Conversation.create_id(UUID(tenant_id), "evolution", number)
    assert dev.store.app.get(Conversation, conversation).inbound_seq == 1


@pytest.mark.parametrize(("via", "as_json"), WAYS)
def test_channel_connect_zapi(dev: Dev, via: str, as_json: bool) -> None:
    instance_id, secret = uuid4().hex.upper(), uuid4().hex
    tenant_id, route = connect(
        dev,
        via,
        as_json,
        "zapi",
        *("--instance-id", instance_id, "--webhook-secret", secret),
        *("--token", "t" * 24, "--client-token", "c" * 24),
        *("--api-base-url", "http://127.0.0.1:9"),
    )
    assert route == instance_id
    payload = json.loads((FIXTURES / "zapi" / "text.json").read_text())
    number = f"551195{uuid4().int % 10**7:07d}"
    payload.update({"instanceId": instance_id, "messageId": uuid4().hex.upper(), "phone": number})
    r = httpx.post(f"{dev.services['api']}/webhooks/zapi/{secret}", json=payload)
    assert r.status_code == 200, r.text
    assert r.json()["received"] == 1
    conversation = Conversation.create_id(UUID(tenant_id), "zapi", number)
    assert dev.store.app.get(Conversation, conversation).inbound_seq == 1


# ----------------------------------------------------------------------- knowledge


def chunks(dev: Dev, tenant_id: str) -> list[str]:
    table = dev.sql("SELECT to_regclass('kb_chunks')")
    if not table or table[0][0] is None:
        return []
    rows = dev.sql(
        "SELECT text FROM kb_chunks WHERE tenant_id = %s ORDER BY chunk_no", UUID(tenant_id)
    )
    return [r[0] for r in rows]


@pytest.mark.parametrize(("via", "as_json"), WAYS)
def test_kb_add_makes_the_knowledge_answerable(dev: Dev, via: str, as_json: bool) -> None:
    t = dev.cloud_tenant()
    doc = dev.home / f"garantia-{uuid4().hex[:6]}.md"
    doc.write_text(KNOWLEDGE, encoding="utf-8")
    done = dev.urbana(via, "kb", "add", t.tenant_id, str(doc), *(["--json"] if as_json else []))
    if as_json:
        [added] = json.loads(done.stdout)["documents"]
        assert (added["name"], added["chunks"], added["characters"]) == (
            doc.name,
            1,
            len(KNOWLEDGE),
        )
    else:
        assert done.stdout.strip() == f"added {doc.name} (1 chunks)"
    assert any("garantia de 2 anos" in c for c in chunks(dev, t.tenant_id))  # before it returned
    wa_id = dev.send_text(t, "Qual é a garantia dos colchões?")
    assert any("garantia de 2 anos" in text for text in dev.answers_to(wa_id))


@pytest.mark.parametrize(("via", "as_json"), WAYS)
def test_kb_reindex_rebuilds_the_index(dev: Dev, via: str, as_json: bool) -> None:
    t = dev.cloud_tenant()
    dev.store.app.add_knowledge_document(UUID(t.tenant_id), "garantia.md", KNOWLEDGE)
    wait_until(lambda: chunks(dev, t.tenant_id), what="the knowledge role indexed it")
    dev.sql("DELETE FROM kb_chunks WHERE tenant_id = %s", UUID(t.tenant_id))
    done = dev.urbana(via, "kb", "reindex", t.tenant_id, *(["--json"] if as_json else []))
    if as_json:
        [indexed] = json.loads(done.stdout)["documents"]
        assert (indexed["name"], indexed["chunks"]) == ("garantia.md", 1)
    else:
        assert done.stdout.strip() == "indexed garantia.md (1 chunks)"
    assert any("garantia de 2 anos" in c for c in chunks(dev, t.tenant_id))


# --------------------------------------------------------------------------- kafka


async def topics(bootstrap: str) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}
    finally:
        await admin.close()


@pytest.mark.parametrize(("via", "as_json"), WAYS)
def test_kafka_init_creates_the_topics_of_the_file(dev: Dev, via: str, as_json: bool) -> None:
    run = uuid4().hex[:8]
    names = [f"cli.{run}.events", f"cli.{run}.dlq"]
    spec = dev.home / f"topics-{run}.yaml"
    spec.write_text(
        f"topics:\n  - name: {names[0]}\n    partitions: 3\n"
        f"  - name: {names[1]}\n    partitions: 1\n",
        encoding="utf-8",
    )
    args = ["kafka", "init", "--topics-file", str(spec)]
    done = dev.urbana(via, *args, *(["--json"] if as_json else []))
    if as_json:
        assert json.loads(done.stdout) == {"created": names}
    else:
        assert done.stdout.strip() == f"created: {names[0]}, {names[1]}"
    existing = asyncio.run(topics(dev.services["kafka"]))
    assert (existing[names[0]], existing[names[1]]) == (3, 1)
    if via == FLAG:  # idempotent
        again = dev.urbana(via, *args)
        assert again.stdout.strip() == "created: nothing (all exist)"


def test_kafka_init_needs_only_kafka(dev: Dev, tmp_path: Path) -> None:
    # Production's kafka-init runs before PostgreSQL answers: no database URL, no
    # services.json in its data dir, only the broker.
    run = uuid4().hex[:8]
    spec = tmp_path / "topics.yaml"
    spec.write_text(f"topics:\n  - name: cli.{run}.only\n    partitions: 2\n", encoding="utf-8")
    done = subprocess.run(
        [URBANA, "kafka", "init", "--topics-file", str(spec), "--json"],
        env={
            **clean_environment(),
            "URBANA_DATA_DIR": str(tmp_path / "empty"),
            "URBANA_KAFKA_BOOTSTRAP": dev.services["kafka"],
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"created": [f"cli.{run}.only"]}
    assert asyncio.run(topics(dev.services["kafka"]))[f"cli.{run}.only"] == 2


# -------------------------------------------------------------------------- worker


@pytest.mark.parametrize("via", [FLAG, ENV])
def test_worker_projects_an_event_then_stops_on_sigterm(dev: Dev, via: str) -> None:
    # Its own schema and consumer group: the read models it builds are its work alone.
    schema = f"worker_{uuid4().hex[:8]}"
    with (dev.home / f"{schema}.stderr").open("w+") as stderr:
        proc = subprocess.Popen(
            dev.argv(via, "worker", "--role", "projector"),
            env=dev.env(via, URBANA_DATABASE_SCHEMA=schema, URBANA_CONSUMER_GROUP_PREFIX=schema),
            cwd=dev.home,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        assert proc.stdout is not None
        lines: list[str] = []
        drain = threading.Thread(target=_drain, args=(proc.stdout, lines), daemon=True)
        drain.start()
        try:
            wait_until(lambda: lines or proc.poll() is not None, what="the worker started")
            assert lines == ["worker: projector"]
            t = dev.cloud_tenant()
            wa_id = dev.send_text(t, "Vocês entregam no sábado?")
            conversation = Conversation.create_id(UUID(t.tenant_id), "cloud", wa_id)

            def projected() -> list[tuple[Any, ...]]:
                exists = dev.sql("SELECT to_regclass('rm_conversations_v3')", schema=schema)
                if not exists or exists[0][0] is None:
                    return []
                return dev.sql(
                    "SELECT inbound_count FROM rm_conversations_v3 WHERE id = %s",
                    conversation,
                    schema=schema,
                )

            assert wait_until(projected, what="the worker projected the message") == [(1,)]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            drain.join(timeout=10)
            proc.stdout.close()
        stderr.seek(0)
        logged = stderr.read()
    assert logged.strip().endswith("stopping"), logged[-3000:]
    assert "Traceback" not in logged, logged[-3000:]
    assert "Fatal error" not in logged, logged[-3000:]  # e.g. a connection torn mid-read
    assert not (dev.home / ".urbana").exists()


# -------------------------------------------------------------------------- replay


@pytest.mark.parametrize(("via", "as_json"), WAYS)
def test_replay_all_rebuilds_and_prints_counts(dev: Dev, via: str, as_json: bool) -> None:
    t = dev.cloud_tenant()
    dev.send_text(t, "Bom dia")
    done = dev.urbana(via, "replay", "--all", *(["--json"] if as_json else []))
    if as_json:
        printed = json.loads(done.stdout)
        assert printed["projections"] == [
            "conversation_view",
            "lead_pipeline",
            "kpis",
            "team",
            "workspace",
        ]
        events, position = printed["events"], printed["position"]
        assert printed["resumed_from"] is None
    else:
        match = re.fullmatch(
            r"rebuilt conversation_view, lead_pipeline, kpis, team, workspace: ([\d,]+) events in "
            r"[\d.]+ s \([\d,]+ ev/s\), position (\d+)",
            done.stdout.strip(),
        )
        assert match, done.stdout
        events, position = int(match.group(1).replace(",", "")), int(match.group(2))
        assert f"{events}/{events} events" in done.stderr  # the progress bar
    [(stored,)] = dev.sql(
        "SELECT count(*) FROM urbana_events WHERE notification_id <= %s", position
    )
    assert events == stored > 0
    floors = dev.sql("SELECT projection, position FROM rm_tracking WHERE partition = -1")
    assert {p for p, at in floors if at == position} == {
        "conversation_view",
        "lead_pipeline",
        "kpis",
        "team",
        "workspace",
    }
    assert dev.sql(
        "SELECT count(*) FROM rm_conversations WHERE tenant_id = %s", UUID(t.tenant_id)
    ) == [(1,)]


async def consume(bootstrap: str, topic: str, expected: int) -> list[dict[str, Any]]:
    """Every record of `topic` (waits for `expected`, then makes sure no more come)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 60
        while len(records) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(json.loads(r.value) for r in batch)
        for batch in (await consumer.getmany(timeout_ms=1000)).values():
            records.extend(json.loads(r.value) for r in batch)
    finally:
        await consumer.stop()
    return records


@pytest.mark.parametrize(("via", "as_json"), WAYS)
def test_replay_to_kafka_republishes_the_events(dev: Dev, via: str, as_json: bool) -> None:
    t = dev.cloud_tenant()
    dev.send_text(t, "Boa noite")
    topic = f"cli.republish.{uuid4().hex[:8]}"
    args = ["replay", "--to-kafka", "--topic", topic]
    done = dev.urbana(via, *args, *(["--json"] if as_json else []))
    if as_json:
        printed = json.loads(done.stdout)
        published, position = printed["published"], printed["position"]
    else:
        match = re.fullmatch(
            r"republished ([\d,]+) events up to position (\d+) \(job republish-\w+\)",
            done.stdout.strip(),
        )
        assert match, done.stdout
        published, position = int(match.group(1).replace(",", "")), int(match.group(2))
    stored = dev.sql(
        "SELECT notification_id FROM urbana_events WHERE notification_id <= %s", position
    )
    assert published == len(stored) > 0
    records = asyncio.run(consume(dev.services["kafka"], topic, published))
    assert sorted(r["position"] for r in records) == sorted(n for (n,) in stored)


# ---------------------------------------------------------------------------- demo


@dataclass
class Demo:
    data_dir: Path
    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path


@pytest.fixture(scope="module")
def demos(dev: Dev, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Demo]]:
    """`urbana demo` both ways, started early: they run beside the other tests (each on
    its own embedded services), which mostly wait on the system; the demo tests at the
    end collect them."""
    root = tmp_path_factory.mktemp("demos")
    started: dict[str, Demo] = {}
    for via in (FLAG, ENV):
        name = "flag" if via == FLAG else "env"
        data_dir, stdout, stderr = root / name / "data", root / f"{name}.out", root / f"{name}.err"
        argv = [URBANA, "demo", *([FLAG, str(data_dir)] if via == FLAG else [])]
        env = {**clean_environment(), **({ENV: str(data_dir)} if via == ENV else {})}
        with stdout.open("wb") as out, stderr.open("wb") as err:
            proc = subprocess.Popen(argv, env=env, cwd=dev.home, stdout=out, stderr=err)
        started[via] = Demo(data_dir, proc, stdout, stderr)
    try:
        yield started
    finally:
        for demo in started.values():
            if demo.proc.poll() is None:
                demo.proc.kill()
                demo.proc.wait()


@pytest.mark.parametrize("via", [FLAG, ENV])
def test_demo_runs_and_keeps_its_data_where_told(
    dev: Dev, demos: dict[str, Demo], via: str
) -> None:
    demo = demos[via]
    code = demo.proc.wait(timeout=300)
    out, err = demo.stdout.read_text(), demo.stderr.read_text()
    assert code == 0, err[-3000:]
    assert "demo finished" in out
    assert '"duplicates":1' in out
    assert (demo.data_dir / "master.key").exists()  # its data stayed where it was told
    assert (demo.data_dir / "postgres" / "PG_VERSION").exists()
    assert not (dev.home / ".urbana").exists()


# --------------------------------------------------------------------------- the end


def test_dev_stops_on_sigint_and_leaves_nothing_behind(dev: Dev) -> None:
    assert all(_alive(pid) for pid in dev.children)
    dev.proc.send_signal(signal.SIGINT)
    assert dev.proc.wait(timeout=30) in (0, 130, -signal.SIGINT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in dev.children):
        time.sleep(0.1)
    assert [pid for pid in dev.children if _alive(pid)] == []
    assert not (dev.data_dir / "services.json").exists()
    assert not (dev.home / ".urbana").exists()

"""The production topology of infra/compose.yaml, run without containers.

Each Urbana service of the default profile runs as a process with exactly its compose
command and its container's environment (the image's ENV, then the service's
`environment` with the variables of a filled-in .env.example), in a directory laid out
as the image's /app. The compose hosts `postgres`, `kafka` and `redis` are embedded
services of this test's own; nothing else is substituted. Services start in their
`depends_on` order: a one-shot must exit 0, a service waited for as healthy must pass
its own compose healthcheck. Then a conversation goes through it, a signed Cloud API
webhook in and the AI's reply out to a local stand-in for the Graph API, and SIGTERM
stops every process, leaving none behind.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest
import redis
import yaml
from psycopg.conninfo import make_conninfo

from tests import compose_file as cf
from tests.e2e.fakes import ANSWER, Outside
from tests.e2e.metrics_helpers import scrape, value
from tests.e2e.webhook_helpers import CloudTenant, cloud_text, post_cloud
from urbana.adapters.embedded import EmbeddedStack, ServiceUrls
from urbana.adapters.postgres.store import open_store
from urbana.config import postgres_parts
from urbana.domain.conversation import Conversation

pytestmark = pytest.mark.e2e

EMBEDDED = {"postgres", "kafka", "redis"}  # the compose hosts the embedded services stand for
BIN = Path(sys.executable).parent
KNOWLEDGE = """# Atendimento
Atendemos de segunda a sexta, das 8h às 18h.
"""


@dataclass
class Running:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Topology:
    services: dict[str, Any]  # the default profile, interpolated
    operator: dict[str, str]  # the filled-in .env
    urls: ServiceUrls
    api: str
    app_dir: Path
    running: dict[str, Running] = field(default_factory=dict)
    jobs: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    def logs(self) -> str:
        return "\n".join(f"--- {r.name}\n{r.tail()}" for r in self.running.values())


def operator_env(outside: Outside) -> dict[str, str]:
    """.env.example filled in as an operator would, with the LLM at the local stand-in."""
    env = cf.env_example()
    env |= {
        "POSTGRES_PASSWORD": uuid4().hex,
        "URBANA_MASTER_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "URBANA_ADMIN_API_KEY": uuid4().hex + uuid4().hex,
        "URBANA_JWT_SECRET": uuid4().hex + uuid4().hex,
        "OPENAI_API_KEY": "sk-e2e-" + uuid4().hex,
        "URBANA_OPENAI_BASE_URL": f"{outside.url}/v1",
        "URBANA_METRICS_TOKEN": uuid4().hex,
    }
    return env


def substitute(value: str, urls: ServiceUrls) -> str:
    """The embedded service's address for a value naming a compose host of EMBEDDED."""
    if "://" in value:
        host = urlparse(value).hostname
        if host == "postgres":
            return urls.postgres
        if host == "redis":
            return urls.redis
        return value
    servers = value.split(",")
    if all(s.split(":")[0] == "kafka" for s in servers):
        return urls.kafka
    return value


def app_dir(root: Path) -> Path:
    """The image's WORKDIR with what the Dockerfile copies into it (links to the repo)."""
    image = cf.urbana_image()
    app = root / "app"
    app.mkdir()
    for source, target in image.copies:
        relative = Path(target).relative_to(image.workdir)
        (app / relative).parent.mkdir(parents=True, exist_ok=True)
        (app / relative).symlink_to(cf.ROOT / source)
    return app


def argv_of(command: list[str]) -> list[str]:
    """The container's executables are this virtualenv's."""
    first, *rest = command
    if first == "python":
        return [sys.executable, *rest]
    return [str(BIN / first), *rest]


def start_order(services: dict[str, Any]) -> list[str]:
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        if name in order or name in EMBEDDED:
            return
        for dep in cf.depends_on(services[name]):
            visit(dep, (*path, name))
        order.append(name)

    for name in services:
        visit(name, ())
    return order


def healthy(top: Topology, name: str, timeout: float = 90.0) -> None:
    """Run the service's compose healthcheck until it passes."""
    check = cf.healthcheck(top.services[name])
    assert check is not None, f"{name} has no healthcheck"
    running = top.running[name]
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(
            argv_of(check),
            env=running.env,
            cwd=top.app_dir,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if done.returncode == 0:
            return
        assert running.proc.poll() is None, f"{name} exited:\n{running.tail()}"
        assert time.monotonic() < deadline, f"{name} unhealthy: {done.stderr}\n{running.tail()}"
        time.sleep(0.5)


def base_env(root: Path) -> dict[str, str]:
    """What a container has without the image and the service: a PATH, a home."""
    runtime = root / "run"
    runtime.mkdir(mode=0o700)
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(root),
        "XDG_RUNTIME_DIR": str(runtime),
        "LANG": "C.UTF-8",
    }
    if "PYTHONPATH" in os.environ:  # this checkout's sources, as the image installs them
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def start(top: Topology, root: Path) -> None:
    image = cf.urbana_image()
    base = base_env(root)
    for name in start_order(top.services):
        service = top.services[name]
        for dep, condition in cf.depends_on(service).items():
            if condition == "service_healthy" and dep not in EMBEDDED:
                healthy(top, dep)
            if condition == "service_completed_successfully":
                job = top.jobs[dep]
                assert job.returncode == 0, (
                    f"{dep} ({' '.join(cf.command(top.services[dep]))}) exited "
                    f"{job.returncode}: {job.stderr.strip()}"
                )
        env = {
            k: substitute(v, top.urls)
            for k, v in cf.container_env(service, top.operator, image).items()
        }
        names = set(top.services) | EMBEDDED
        leftover = {k: v for k, v in env.items() if cf.service_references(v, names) - {name}}
        assert leftover == {}, f"{name} names hosts this topology does not provide"
        env = {**base, **env}
        argv = argv_of(cf.command(service))
        if name in cf.one_shots(top.services):
            top.jobs[name] = subprocess.run(
                argv,
                env=env,
                cwd=top.app_dir,
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            continue
        log = root / f"{name}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                argv, env=env, cwd=top.app_dir, stdout=sink, stderr=subprocess.STDOUT
            )
        top.running[name] = Running(name, argv, env, proc, log)


def descendants(pid: int) -> set[int]:
    children: dict[int, set[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(parent, set()).add(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, outside: Outside) -> Iterator[Topology]:
    root = tmp_path_factory.mktemp("topology")
    operator = operator_env(outside)
    services = cf.active(cf.load(operator)["services"], set())
    stand_ins = {n for n, s in services.items() if not cf.uses_urbana_image(s)}
    assert stand_ins == EMBEDDED, "every other default service runs from the Urbana image"
    stack = EmbeddedStack(root / "services")
    urls = stack.start()
    port = int(services["api"]["environment"]["URBANA_PORT"])
    top = Topology(services, operator, urls, f"http://127.0.0.1:{port}", app_dir(root))
    try:
        start(top, root)
        for name in top.running:
            healthy(top, name, timeout=120)
        yield top
    finally:
        for running in top.running.values():
            if running.proc.poll() is None:
                running.proc.kill()
                running.proc.wait(timeout=30)
        stack.stop()


def admin(top: Topology, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{top.api}{path}",
        json=body,
        headers={"X-Admin-Key": top.operator["URBANA_ADMIN_API_KEY"]},
        timeout=30,
    )


def wait_until(check: Callable[[], Any], what: str, top: Topology, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen\n{top.logs()}")


def test_a_conversation_goes_through_every_process(topology: Topology, outside: Outside) -> None:
    top = topology
    created = admin(top, "/admin/tenants", {"name": f"Loja {uuid4().hex[:6]}"})
    assert created.status_code == 201, created.text
    tenant = CloudTenant(
        created.json()["tenant_id"], str(uuid4().int)[:15], uuid4().hex, uuid4().hex
    )
    connected = admin(
        top,
        f"/admin/tenants/{tenant.tenant_id}/channels",
        {
            "kind": "cloud",
            "fields": {
                "phone_number_id": tenant.phone_number_id,
                "app_secret": tenant.app_secret,
                "verify_token": tenant.verify_token,
                "access_token": "EAAG" + uuid4().hex,
                "api_base_url": outside.url,
            },
        },
    )
    assert connected.status_code == 200, connected.text
    added = admin(
        top,
        f"/admin/tenants/{tenant.tenant_id}/knowledge",
        {"name": "atendimento.md", "text": KNOWLEDGE},
    )
    assert added.status_code == 202, added.text

    def indexed() -> bool:
        with psycopg.connect(make_conninfo(**postgres_parts(top.urls.postgres))) as conn:
            if conn.execute("SELECT to_regclass('kb_chunks')").fetchone() == (None,):
                return False
            row = conn.execute(
                "SELECT count(*) FROM kb_chunks WHERE tenant_id = %s", (UUID(tenant.tenant_id),)
            ).fetchone()
        return bool(row and row[0])

    wait_until(indexed, "the knowledge role indexing the document", top)

    wa_id = f"551197{uuid4().int % 10**7:07d}"
    with httpx.Client(timeout=30) as client:
        answer = post_cloud(
            client, top.api, tenant, cloud_text(tenant.phone_number_id, wa_id, "Qual o horário?")
        )
    assert answer.status_code == 200, answer.text
    wait_until(lambda: outside.sends_to(wa_id), "the reply reaching the Graph API", top)
    store = open_store(
        top.urls.postgres, base64.urlsafe_b64decode(top.operator["URBANA_MASTER_KEY"]), pool_size=1
    )
    try:
        conversation_id = Conversation.create_id(UUID(tenant.tenant_id), "cloud", wa_id)

        def sent() -> list[str]:
            names = [type(e).__name__ for e in store.app.stream(conversation_id)]
            return names if "OutboundMessageSent" in names else []

        names = wait_until(sent, "OutboundMessageSent recorded", top)
    finally:
        store.close()
    sends = outside.sends_to(wa_id)
    assert [s["body"]["text"]["body"] for s in sends] == [ANSWER["reply"]]
    assert sends[0]["path"].endswith(f"/{tenant.phone_number_id}/messages")
    for name in ("MessageReceived", "AIReplyGenerated", "OutboundMessageQueued"):
        assert name in names


def scrape_targets() -> dict[str, str]:
    """The compose service of each target of the observability Prometheus, by address."""
    config = yaml.safe_load((cf.ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    targets: dict[str, str] = {}
    for job in config["scrape_configs"]:
        assert job["metrics_path"] == "/metrics"
        assert job["authorization"]["credentials_file"]
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                targets[target] = target.split(":")[0]
        for dns in job.get("dns_sd_configs", []):
            (name,) = dns["names"]
            targets[f"{name}:{dns['port']}"] = name
    return targets


# What each process has counted once the conversation went through it.
COUNTED = {
    "api": ("urbana_ingest_outcomes_total", {"outcome": "received"}),
    "relay": ("urbana_relay_published_total", {}),
    "projector": ("urbana_projection_applied_total", {"projection": "conversation_view"}),
    "responder": ("urbana_llm_seconds_count", {"model": "gpt-4o-mini", "outcome": "ok"}),
    "dispatcher": ("urbana_sends_total", {"outcome": "sent"}),
    "knowledge": ("urbana_worker_events_total", {"role": "knowledge", "outcome": "handled"}),
}


def test_prometheus_scrapes_every_process_with_the_token(topology: Topology) -> None:
    token = topology.operator["URBANA_METRICS_TOKEN"]
    targets = scrape_targets()
    assert set(targets.values()) == set(topology.running), "one target per Urbana service"
    for target, service in targets.items():
        port = target.split(":")[1]
        command = cf.command(topology.services[service])
        assert service == "api" or command[-2:] == ["--metrics-port", port], service
        url = f"http://127.0.0.1:{port}"
        refused = httpx.get(f"{url}/metrics", timeout=30)
        assert refused.status_code == 401, (service, refused.text)
        samples = scrape(url, token)
        if service in COUNTED:
            name, labels = COUNTED[service]
            assert value(samples, name, **labels) >= 1, (service, name)
    scheduler = scrape(f"http://127.0.0.1:{targets_port(targets, 'scheduler')}", token)
    assert ("urbana_scheduler_leading", ()) in scheduler


def targets_port(targets: dict[str, str], service: str) -> str:
    return next(t for t, s in targets.items() if s == service).split(":")[1]


def test_sigterm_stops_every_process_and_leaves_nothing_behind(topology: Topology) -> None:
    top = topology
    spawned = {pid for r in top.running.values() for pid in descendants(r.proc.pid)}
    assert spawned, "`serve --workers 2` runs its workers as child processes"
    for running in top.running.values():
        running.proc.send_signal(signal.SIGTERM)
    codes: dict[str, int | None] = {}
    for name, running in top.running.items():
        try:
            codes[name] = running.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            codes[name] = None
    assert codes == dict.fromkeys(top.running, 0), top.logs()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in spawned) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in spawned if alive(p)] == []

    def connections() -> tuple[int, int]:
        """Client connections to PostgreSQL and Redis other than this check's own."""
        with psycopg.connect(make_conninfo(**postgres_parts(top.urls.postgres))) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND pid <> pg_backend_pid()"
            ).fetchone()
        cache = redis.Redis.from_url(top.urls.redis)
        try:
            clients = len(cache.client_list()) - 1
        finally:
            cache.close()
        return (row[0] if row else -1), clients

    # A server notices a closed client connection at its next read: soon, not at once.
    wait_until(lambda: connections() == (0, 0), "every connection closed", top, timeout=10)

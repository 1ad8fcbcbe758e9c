"""Engine overhead from webhook received to the gateway's send request, end to end.

    python bench/ttfr.py [--quick] [--rate 5] [--ladder 5,10,20,...] [--no-capacity]

Starts embedded PostgreSQL, Kafka-protocol broker and Redis, then the engine as it is
deployed (`--topology processes`, the default, as in infra/compose.yaml: `urbana
serve` and one `urbana worker` process per role: relay, projector, responder,
dispatcher, knowledge) or all in one process (`--topology dev`, as `urbana dev`), with
an instant local OpenAI-compatible server and a stand-in for Meta's Graph API send
endpoint (both in this process), debounce 0, and posts signed Cloud API webhooks that
each open a new conversation, paced at `--rate` (default 5/s). The leads' questions are
a realistic mix (`_questions.QuestionMix`: a few hundred distinct ones with Zipf-like
repeats and 30 % one-off ones, written as leads write). For each conversation: time
from sending the webhook to the gateway receiving the reply, and where it went
(`stages_ms`, from the events' timestamps).

CPU: the user + system seconds of every process of the topology (the engine's, the
embedded servers' and PostgreSQL's backends; not this process) over the paced run,
divided by the conversations (`cpu_ms_per_conversation`, by process too); the idle
topology's CPU over the same length of time, measured just before, is the baseline
(`idle_cpu_ms_per_s`).

Cache: the responder's query-vector cache (a burst asked again is not embedded again),
its hits and misses over the paced run from the responder's `/metrics`
(`query_vector_cache`, with `hit_rate`), on the question mix below.

Capacity: the rate is then stepped up the ladder, `--step-seconds` at each rate, up to
the first rate whose p99 exceeds 1 s or that misses a reply; the last rate that held is
`capacity_per_s`. Baseline in the same run: the webhook's own HTTP round trip
(durable ingest). Targets (issue #15): at 5/s p50 <= 30 ms, p99 <= 100 ms; halve
`cpu_ms_per_conversation`; double the capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, free_port, log_sink
from _procs import cpu_by_label, delta
from _questions import QuestionMix
from urbana.adapters.crypto import parse_master_key
from urbana.adapters.embedded import EmbeddedStack
from urbana.adapters.kafka.topics import init_topics
from urbana.adapters.postgres.store import open_store
from urbana.application.gateways import gateway_config
from urbana.domain.conversation import Conversation

PNID = "106540352242922"
RETRIES = 5
ROLES = ("relay", "projector", "responder", "dispatcher", "knowledge")
DECISION = {
    "reply": "Atendemos de segunda a sexta, das 8h às 18h.",
    "intent": "faq",
    "confidence": 0.95,
    "should_handoff": False,
    "handoff_reason": None,
    "score_delta": 1,
}


class Outside:
    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.arrived_wall: dict[str, float] = {}

    async def completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": json.dumps(DECISION)},
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            }
        )

    async def send(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.arrived.setdefault(body["to"], time.perf_counter())
        self.arrived_wall.setdefault(body["to"], time.time())
        return JSONResponse({"messages": [{"id": f"wamid.OUT{uuid4().hex}"}]})


def serve_outside(outside: Outside) -> tuple[str, uvicorn.Server]:
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", outside.completions, methods=["POST"]),
            Route("/{version}/{pnid}/messages", outside.send, methods=["POST"]),
        ]
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}", server


def webhook(wa_id: str, secret: str, text: str) -> tuple[bytes, str]:
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "5511933334444",
                                "phone_number_id": PNID,
                            },
                            "contacts": [{"profile": {"name": "Cliente"}, "wa_id": wa_id}],
                            "messages": [
                                {
                                    "from": wa_id,
                                    "id": f"wamid.{uuid4().hex}",
                                    "timestamp": str(int(time.time())),
                                    "type": "text",
                                    "text": {"body": text},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    body = json.dumps(payload).encode()
    return body, "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def drive(
    api: str, secret: str, outside: Outside, n: int, rate: float, questions: Iterator[str]
) -> dict[str, Any]:
    texts = [next(questions) for _ in range(n)]
    sent_at: dict[str, float] = {}
    sent_wall: dict[str, float] = {}
    ingest: list[float] = []
    refused: list[str] = []
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(i: int, start: float) -> None:
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            wa_id = f"551197{uuid4().int % 10**7:07d}"
            body, sig = webhook(wa_id, secret, texts[i])
            t0 = time.perf_counter()
            r: httpx.Response | None = None
            sent_at[wa_id] = t0
            sent_wall[wa_id] = time.time()
            for _ in range(RETRIES):
                try:
                    r = await client.post(
                        f"{api}/webhooks/whatsapp-cloud",
                        content=body,
                        headers={"X-Hub-Signature-256": sig},
                    )
                except httpx.TransportError:  # an overloaded box: redelivered like a 503
                    refused.append(wa_id)
                    continue
                if r.status_code != 503:
                    break
                # Meta redelivers what was not acknowledged; the time counts from the first try.
                refused.append(wa_id)
                await asyncio.sleep(min(1.0, float(r.headers.get("Retry-After", "1"))))
            ingest.append(time.perf_counter() - t0)
            if (
                r is not None and r.status_code != 503
            ):  # still refused after the retries: counted as missing
                r.raise_for_status()

        start = time.perf_counter() + 0.1
        await asyncio.gather(*(one(i, start) for i in range(n)))
    deadline = time.monotonic() + 60
    while len(set(sent_at) & set(outside.arrived)) < n and time.monotonic() < deadline:  # noqa: ASYNC110 - the arrivals come from another thread
        await asyncio.sleep(0.05)
    ttfr = sorted(outside.arrived[w] - t for w, t in sent_at.items() if w in outside.arrived)
    return {
        "ttfr": ttfr,
        "ingest": sorted(ingest),
        "missing": n - len(ttfr),
        "refused_503": len(refused),
        "sent_wall": sent_wall,
        "texts": texts,
    }


def stages(
    store: Any, tenant_id: UUID, sent_wall: dict[str, float], arrived: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Where the time goes, from the events' own timestamps (one clock, this machine):
    webhook -> MessageReceived (ingest), -> AIReplyGenerated (relay, Kafka, responder up
    to its decision), -> the gateway's send request (commit, relay, Kafka, dispatcher)."""
    parts: dict[str, list[float]] = {"ingest": [], "to_ai_decision": [], "to_gateway": []}
    for wa_id, sent in sent_wall.items():
        if wa_id not in arrived:
            continue
        stream = store.app.stream(Conversation.create_id(tenant_id, "cloud", wa_id))
        at = {type(e).__name__: e.timestamp.timestamp() for e in stream}
        if "MessageReceived" not in at or "AIReplyGenerated" not in at:
            continue
        parts["ingest"].append(at["MessageReceived"] - sent)
        parts["to_ai_decision"].append(at["AIReplyGenerated"] - at["MessageReceived"])
        parts["to_gateway"].append(arrived[wa_id] - at["AIReplyGenerated"])
    return {
        name: {"p50": pct(sorted(v), 0.5), "p99": pct(sorted(v), 0.99)} for name, v in parts.items()
    }


def pct(values: list[float], q: float) -> float:
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1) if values else -1.0


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """An `urbana` process; its stderr goes to BENCH_LOG_DIR when that is set."""
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("urbana")), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log_sink("-".join(args[:3])),
        text=True,
    )


def wait_healthy(api: str, procs: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 600  # a loaded 2-core box imports and connects slowly
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("an engine process exited")
        time.sleep(0.1)
    raise RuntimeError("the API did not start")


@dataclass
class Engine:
    """A running topology with one tenant on the Cloud API, ready for webhooks."""

    api: str
    postgres: str
    kafka: str
    master: str
    secret: str
    tenant_id: UUID
    outside: Outside
    marker: str  # the run's temporary directory, in every topology process's command line
    procs: dict[str, subprocess.Popen[str]]
    responder_metrics: str  # the base URL whose /metrics has the responder's figures


@contextlib.contextmanager
def engine(topology: str, roles: tuple[str, ...] = ROLES) -> Iterator[Engine]:
    """Start the embedded servers and the engine, register a tenant and its knowledge,
    warm up; stop everything on the way out."""
    outside = Outside()
    url, fake = serve_outside(outside)
    procs: dict[str, subprocess.Popen[str]] = {}
    with tempfile.TemporaryDirectory(prefix="urbana-ttfr-") as tmp:
        master = base64.urlsafe_b64encode(os.urandom(32)).decode()
        env = {
            **os.environ,
            "URBANA_OPENAI_API_KEY": "sk-bench",
            "URBANA_OPENAI_BASE_URL": f"{url}/v1",
            "URBANA_DEBOUNCE_MS": "0",
            "URBANA_MASTER_KEY": master,
            "URBANA_DATA_DIR": tmp,
        }
        stack = None
        try:
            if topology == "dev":
                port = free_port()
                procs["dev"] = spawn(["dev", "--data-dir", tmp, "--port", str(port)], env)
                stdout = procs["dev"].stdout
                assert stdout is not None
                for line in stdout:
                    if line.strip() == "ready":
                        break
                services = json.loads((Path(tmp) / "services.json").read_text())
                responder_metrics = services["api"]
            else:
                stack = EmbeddedStack(Path(tmp) / "services")
                urls = stack.start()
                port = free_port()  # after the servers took theirs
                services = {
                    "postgres": urls.postgres,
                    "kafka": urls.kafka,
                    "redis": urls.redis,
                    "api": f"http://127.0.0.1:{port}",
                }
                asyncio.run(init_topics(urls.kafka, None))
                env.update(
                    URBANA_DATABASE_URL=urls.postgres,
                    URBANA_KAFKA_BOOTSTRAP=urls.kafka,
                    URBANA_REDIS_URL=urls.redis,
                )
                procs["serve"] = spawn(["serve", "--port", str(port)], env)
                metrics_port = free_port()
                responder_metrics = f"http://127.0.0.1:{metrics_port}"
                for role in roles:
                    extra = ["--metrics-port", str(metrics_port)] if role == "responder" else []
                    procs[role] = spawn(["worker", "--role", role, *extra], env)
            wait_healthy(services["api"], list(procs.values()))
            store = open_store(services["postgres"], parse_master_key(master), pool_size=1)
            secret = uuid4().hex
            tenant_id, _ = store.app.register_tenant("Bench TTFR")
            store.app.connect_channel(
                tenant_id,
                gateway_config(
                    "cloud",
                    {
                        "phone_number_id": PNID,
                        "app_secret": secret,
                        "verify_token": uuid4().hex,
                        "access_token": "x" * 20,
                        "api_base_url": url,
                    },
                ),
            )
            store.app.change_settings(UUID(str(tenant_id)), debounce_ms=0)
            store.close()
            # The knowledge the instant LLM's answer is grounded in (else the output guard
            # rightly hands off: business hours not supported by any passage).
            kb = Path(tmp) / "horarios.md"
            kb.write_text(f"# Horário de atendimento\n\n{DECISION['reply']}\n", encoding="utf-8")
            added = spawn(["kb", "add", str(tenant_id), str(kb), "--data-dir", tmp], env)
            assert added.wait(timeout=120) == 0, "urbana kb add failed"
            if added.stdout is not None:
                added.stdout.close()
            time.sleep(8)  # consumer groups join (Tansu takes a few seconds)
            warm = QuestionMix(seed=99)
            asyncio.run(drive(services["api"], secret, outside, 20, 10, warm))
            yield Engine(
                api=services["api"],
                postgres=services["postgres"],
                kafka=services["kafka"],
                master=master,
                secret=secret,
                tenant_id=UUID(str(tenant_id)),
                outside=outside,
                marker=tmp,
                procs=procs,
                responder_metrics=responder_metrics,
            )
        finally:
            for proc in procs.values():
                proc.send_signal(signal.SIGINT)
            for proc in procs.values():
                proc.wait(timeout=60)
                if proc.stdout is not None:
                    proc.stdout.close()
            if stack is not None:
                stack.stop()
            fake.should_exit = True


def vector_lookups(eng: Engine) -> dict[str, float]:
    """The responder's query-vector cache lookups so far, by outcome (from its /metrics)."""
    answer = httpx.get(f"{eng.responder_metrics}/metrics", timeout=30)
    answer.raise_for_status()
    found = {"hit": 0.0, "miss": 0.0}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if sample.name == "urbana_query_vector_lookups_total":
                found[sample.labels["outcome"]] = sample.value
    return found


def cache_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    hits = after["hit"] - before["hit"]
    misses = after["miss"] - before["miss"]
    lookups = hits + misses
    return {
        "hits": int(hits),
        "misses": int(misses),
        "hit_rate": round(hits / lookups, 3) if lookups else None,
    }


def cpu_run(
    eng: Engine, n: int, rate: float, questions: Iterator[str]
) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
    """A paced run, the CPU seconds the topology spent on it by process, and what the
    query-vector cache saved during it."""
    before, lookups = cpu_by_label(eng.marker), vector_lookups(eng)
    result = asyncio.run(drive(eng.api, eng.secret, eng.outside, n, rate, questions))
    cpu = delta(before, cpu_by_label(eng.marker))
    return result, cpu, cache_figures(lookups, vector_lookups(eng))


def idle_cpu(eng: Engine, seconds: float) -> dict[str, float]:
    """CPU seconds per second of the topology doing nothing (polls, heartbeats)."""
    before = cpu_by_label(eng.marker)
    time.sleep(seconds)
    return {k: v / seconds for k, v in delta(before, cpu_by_label(eng.marker)).items()}


def capacity(
    eng: Engine, ladder: list[float], seconds: float, questions: Iterator[str]
) -> dict[str, Any]:
    """The highest paced rate on the ladder with p99 <= 1 s and every reply arrived."""
    steps = []
    held = 0.0
    for rate in ladder:
        result = asyncio.run(
            drive(eng.api, eng.secret, eng.outside, max(1, int(rate * seconds)), rate, questions)
        )
        p99 = pct(result["ttfr"], 0.99)
        ok = result["missing"] == 0 and 0 <= p99 <= 1000
        steps.append(
            {
                "refused_503": result["refused_503"],
                "rate_per_s": rate,
                "p50_ms": pct(result["ttfr"], 0.5),
                "p99_ms": p99,
                "missing": result["missing"],
                "held": ok,
            }
        )
        if not ok:
            break
        held = rate
    return {"capacity_per_s": held, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=30.0, help="of the paced run")
    parser.add_argument("--topology", choices=["processes", "dev"], default="processes")
    parser.add_argument("--ladder", default="1,2,3,5,8,10,15,20,30,40,50,60,80,100,120,150")
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--no-capacity", action="store_true")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    n = max(1, int(args.rate * seconds))
    questions = QuestionMix()
    with engine(args.topology) as eng:
        idle = idle_cpu(eng, seconds)
        result, cpu, cache = cpu_run(eng, n, args.rate, questions)
        store = open_store(eng.postgres, parse_master_key(eng.master), pool_size=1)
        try:
            breakdown = stages(store, eng.tenant_id, result["sent_wall"], eng.outside.arrived_wall)
        finally:
            store.close()
        ladder = [float(r) for r in args.ladder.split(",")]
        cap = None if args.no_capacity else capacity(eng, ladder, args.step_seconds, questions)
    ttfr, ingest = result["ttfr"], result["ingest"]
    total_cpu = sum(cpu.values())
    idle_total = sum(idle.values())
    emit(
        {
            "bench": "ttfr",
            "topology": args.topology,
            "rate_per_s": args.rate,
            "conversations": n,
            "missing": result["missing"],
            "refused_503": result["refused_503"],
            "ttfr_ms": {
                "p50": pct(ttfr, 0.5),
                "p99": pct(ttfr, 0.99),
                "mean": round(statistics.mean(ttfr) * 1000, 1) if ttfr else -1,
            },
            "stages_ms": breakdown,
            "cpu_ms_per_conversation": round(total_cpu * 1000 / n, 2),
            "cpu_ms_per_conversation_net_of_idle": round(
                (total_cpu - idle_total * seconds) * 1000 / n, 2
            ),
            "cpu_ms_per_conversation_by_process": {
                k: round(v * 1000 / n, 2) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])
            },
            "idle_cpu_ms_per_s": round(idle_total * 1000, 1),
            "idle_cpu_ms_per_s_by_process": {
                k: round(v * 1000, 1) for k, v in sorted(idle.items(), key=lambda kv: -kv[1])
            },
            "questions": {
                "distinct_in_run": len(set(result["texts"])),
                "sent": n,
                "distinct_pool": len(questions.distinct),
                "unique_share": questions.unique_share,
            },
            "query_vector_cache": cache,
            "capacity": cap,
            "baseline_ingest_roundtrip_ms": {"p50": pct(ingest, 0.5), "p99": pct(ingest, 0.99)},
            "ratio_p50_ttfr_vs_ingest": round(pct(ttfr, 0.5) / max(pct(ingest, 0.5), 0.001), 2),
            "targets": {"p50_ms_at_5_per_s": 30, "p99_ms_at_5_per_s": 100, "capacity_p99_ms": 1000},
        }
    )


if __name__ == "__main__":
    main()

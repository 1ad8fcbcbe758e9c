"""Engine overhead from webhook received to the gateway's send request, end to end.

    python bench/ttfr.py [--quick]

Starts embedded PostgreSQL, Kafka-protocol broker and Redis, then the engine as it is
deployed (`--topology processes`, the default, as in infra/compose.yaml: `urbana
serve` and one `urbana worker` process per role: relay, projector, responder,
dispatcher, knowledge) or all in one process (`--topology dev`, as `urbana dev`), with
an instant local OpenAI-compatible server and a stand-in for Meta's Graph API send
endpoint (both in this process), debounce 0, and posts signed Cloud API webhooks that
each open a new conversation, paced at `--rate` (default 50/s). For each one: time
from sending the webhook to the gateway receiving the reply, and where it went
(`stages_ms`, from the events' timestamps). Baseline in the same run: the webhook's
own HTTP round trip (durable ingest). Targets (issue #5): p50 <= 30 ms, p99 <= 150 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, free_port, log_sink
from urbana.adapters.crypto import parse_master_key
from urbana.adapters.embedded import EmbeddedStack
from urbana.adapters.kafka.topics import init_topics
from urbana.adapters.postgres.store import open_store
from urbana.application.gateways import gateway_config
from urbana.domain.conversation import Conversation

PNID = "106540352242922"
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


def webhook(wa_id: str, secret: str) -> tuple[bytes, str]:
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
                                    "text": {"body": "Qual o horário de atendimento?"},
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


async def drive(api: str, secret: str, outside: Outside, n: int, rate: float) -> dict[str, Any]:
    sent_at: dict[str, float] = {}
    sent_wall: dict[str, float] = {}
    ingest: list[float] = []
    async with httpx.AsyncClient(timeout=10) as client:

        async def one(i: int, start: float) -> None:
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            wa_id = f"551197{uuid4().int % 10**7:07d}"
            body, sig = webhook(wa_id, secret)
            t0 = time.perf_counter()
            sent_at[wa_id] = t0
            sent_wall[wa_id] = time.time()
            r = await client.post(
                f"{api}/webhooks/whatsapp-cloud", content=body, headers={"X-Hub-Signature-256": sig}
            )
            ingest.append(time.perf_counter() - t0)
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
        "sent_wall": sent_wall,
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
    deadline = time.monotonic() + 60
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--topology", choices=["processes", "dev"], default="processes")
    args = parser.parse_args()
    n = int(args.rate * (3 if args.quick else 30))
    outside = Outside()
    url, fake = serve_outside(outside)
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="urbana-ttfr-") as tmp:
        port = free_port()
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
            if args.topology == "dev":
                procs.append(spawn(["dev", "--data-dir", tmp, "--port", str(port)], env))
                stdout = procs[0].stdout
                assert stdout is not None
                for line in stdout:
                    if line.strip() == "ready":
                        break
                services = json.loads((Path(tmp) / "services.json").read_text())
            else:
                stack = EmbeddedStack(Path(tmp) / "services")
                urls = stack.start()
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
                procs.append(spawn(["serve", "--port", str(port)], env))
                for role in ("relay", "projector", "responder", "dispatcher", "knowledge"):
                    procs.append(spawn(["worker", "--role", role], env))
            wait_healthy(services["api"], procs)
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
            time.sleep(8)  # consumer groups join (Tansu takes a few seconds)
            asyncio.run(drive(services["api"], secret, outside, 20, 10))  # warm-up
            result = asyncio.run(drive(services["api"], secret, outside, n, args.rate))
            store = open_store(services["postgres"], parse_master_key(master), pool_size=1)
            try:
                breakdown = stages(
                    store, UUID(str(tenant_id)), result["sent_wall"], outside.arrived_wall
                )
            finally:
                store.close()
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGINT)
            for proc in procs:
                proc.wait(timeout=60)
                if proc.stdout is not None:
                    proc.stdout.close()
            if stack is not None:
                stack.stop()
            fake.should_exit = True
    ttfr, ingest = result["ttfr"], result["ingest"]
    emit(
        {
            "bench": "ttfr",
            "topology": args.topology,
            "rate_per_s": args.rate,
            "conversations": n,
            "missing": result["missing"],
            "ttfr_ms": {
                "p50": pct(ttfr, 0.5),
                "p99": pct(ttfr, 0.99),
                "mean": round(statistics.mean(ttfr) * 1000, 1) if ttfr else -1,
            },
            "stages_ms": breakdown,
            "baseline_ingest_roundtrip_ms": {"p50": pct(ingest, 0.5), "p99": pct(ingest, 0.99)},
            "ratio_p50_ttfr_vs_ingest": round(pct(ttfr, 0.5) / max(pct(ingest, 0.5), 0.001), 2),
            "targets_ms": {"p50": 30, "p99": 150},
        }
    )


if __name__ == "__main__":
    main()

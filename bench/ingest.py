"""Webhook ingest over HTTP: throughput and latency against a raw INSERT+COMMIT loop.

    python bench/ingest.py [--quick]

Starts the embedded PostgreSQL and Redis, runs `urbana serve` (uvicorn) in its own
process on loopback, and drives it with signed Cloud API webhooks (new
conversations and follow-ups, half each) from a minimal keep-alive HTTP/1.1 client
(pre-built requests, so the load generator costs little CPU on this 2-core box):

- saturation: C concurrent connections for T seconds -> webhooks/s, p50/p99;
- paced: an open-loop 1,000 webhooks/s schedule -> p50/p99 (latency counted from
  the scheduled send time, so queueing is not hidden);
- baseline, same PostgreSQL, same run: single-row INSERT+COMMIT loop rate.
Targets (issue #3): >= 2,000 webhooks/s; p99 <= 25 ms at 1,000/s; ratio >= 1.5.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from uuid import uuid4

sys.path.insert(0, str(Path(__file__).parent))
from _common import api_env, emit, free_port, log_sink, median_rate
from urbana.adapters.embedded import EmbeddedStack
from urbana.adapters.postgres.schema import ensure_schema
from urbana.adapters.postgres.store import open_store
from urbana.application.gateways import gateway_config

sys.path.insert(0, str(Path(__file__).parent))
from append import bench_raw

PNID = "106540352242922"


def build_requests(n: int, secret: str, port: int) -> list[bytes]:
    """Signed webhook requests: half open new conversations, half follow up."""
    regulars = [f"551198{i:07d}" for i in range(max(1, n // 20))]
    requests = []
    now = str(int(time.time()))
    for i in range(n):
        wa_id = regulars[i % len(regulars)] if i % 2 else f"551197{uuid4().int % 10**7:07d}"
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
                                        "timestamp": now,
                                        "type": "text",
                                        "text": {"body": f"Olá, mensagem {i}"},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
        body = json.dumps(payload).encode()
        sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        head = (
            f"POST /webhooks/whatsapp-cloud HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nX-Hub-Signature-256: {sig}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        requests.append(head + body)
    return requests


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    writer.write(req)
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def saturate(port: int, requests: list[bytes], conns: int) -> tuple[float, list[float], int]:
    queue = list(reversed(requests))
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                req = queue.pop()
                t0 = time.perf_counter()
                status = await _roundtrip(reader, writer, req)
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return time.perf_counter() - start, latencies, errors


async def paced(
    port: int, requests: list[bytes], rate: float, conns: int
) -> tuple[list[float], int]:
    """Open loop: request i is due at start + i/rate; latency counts from when it was due."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter() + 0.05

    async def one(i: int, req: bytes) -> None:
        nonlocal errors
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        conn = await pool.get()
        try:
            status = await _roundtrip(*conn, req)
        finally:
            pool.put_nowait(conn)
        latencies.append(time.perf_counter() - due)
        errors += status != 200

    await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
    while not pool.empty():
        pool.get_nowait()[1].close()
    return latencies, errors


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="`urbana serve --workers`"
    )
    args = parser.parse_args()
    sat_n = 3000 if args.quick else 20000
    paced_n = 2000 if args.quick else 10000
    with (
        tempfile.TemporaryDirectory(prefix="urbana-bench-") as tmp,
        EmbeddedStack(Path(tmp), kafka_bootstrap="127.0.0.1:1") as stack,
    ):
        urls = stack.urls
        schema = f"bench_{uuid4().hex[:8]}"
        master = os.urandom(32)
        secret = uuid4().hex
        ensure_schema(urls.postgres, schema)
        store = open_store(urls.postgres, master, schema=schema, pool_size=2)
        tenant_id, _ = store.app.register_tenant("Bench Loja")
        store.app.connect_channel(
            tenant_id,
            gateway_config(
                "cloud",
                {
                    "phone_number_id": PNID,
                    "app_secret": secret,
                    "verify_token": uuid4().hex,
                    "access_token": "x" * 20,
                },
            ),
        )
        store.close()
        raw = median_rate(3, lambda: bench_raw(urls.postgres, schema, 2000))
        port = free_port()
        env = api_env(urls, schema, master, tmp)
        server = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("urbana")),
                "serve",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_sink("serve"),
        )
        profiler = None
        if os.environ.get("BENCH_PROFILE") and args.workers == 1:
            profiler = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--format",
                    "speedscope",
                    "-o",
                    os.environ["BENCH_PROFILE"],
                    "--pid",
                    str(server.pid),
                    "--threads",
                    "--rate",
                    "250",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            asyncio.run(saturate(port, build_requests(300, secret, port), 16))  # warm-up
            runs = []
            for _ in range(1 if args.quick else 3):
                elapsed, lat, errors = asyncio.run(
                    saturate(port, build_requests(sat_n, secret, port), args.conns)
                )
                runs.append(
                    {
                        "per_s": sat_n / elapsed,
                        "p50_ms": pct(lat, 0.5),
                        "p99_ms": pct(lat, 0.99),
                        "errors": errors,
                    }
                )
            best = sorted(runs, key=lambda r: r["per_s"])[len(runs) // 2]
            lat, perrors = asyncio.run(
                paced(port, build_requests(paced_n, secret, port), 1000.0, args.conns)
            )
        finally:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(timeout=60)
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
    emit(
        {
            "bench": "ingest",
            "webhooks_per_run": sat_n,
            "concurrency": args.conns,
            "server_workers": args.workers,
            "saturation": {
                "median_webhooks_per_s": round(best["per_s"], 1),
                "p50_ms": best["p50_ms"],
                "p99_ms": best["p99_ms"],
                "errors": best["errors"],
                "runs": [round(r["per_s"], 1) for r in runs],
            },
            "paced_1000_per_s": {
                "n": paced_n,
                "p50_ms": pct(lat, 0.5),
                "p99_ms": pct(lat, 0.99),
                "mean_ms": round(statistics.mean(lat) * 1000, 2),
                "errors": perrors,
            },
            "baseline_raw_insert_commit_per_s": raw["median_per_s"],
            "ratio_vs_raw": round(best["per_s"] / raw["median_per_s"], 3),
            "targets": {"webhooks_per_s": 2000, "p99_ms_at_1000": 25, "ratio": 1.5},
        }
    )


if __name__ == "__main__":
    main()

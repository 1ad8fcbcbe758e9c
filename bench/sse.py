"""Live updates over HTTP: one stored event to 200 connected SSE clients of `urbana serve`.

    python bench/sse.py [--quick] [--clients 200]

On the embedded PostgreSQL and Redis (or URBANA_DATABASE_URL / URBANA_REDIS_URL), the
API runs as deployed: an `urbana serve` process (uvicorn, one worker). This process signs
a supervisor in over `POST /v1/auth/login` and opens `--clients` (200) streams of
`GET /v1/stream` with that bearer, each its own HTTP connection, as attendants' panels
do. A stream is counted as connected at its first heartbeat (the subscription is in
place by then). Each round stores one inbound message on a conversation of the tenant
(one `save()` in a worker thread, as the ingest path commits) and waits until every
client has read the event it causes (`message.created`, its SSE `id:` at least the
stored position); delivery is counted from the moment the save was called (so it
includes the commit, the API's read of the log, the fan-out, the socket and the
client's parse) to each client's receipt. 30 rounds (8 with --quick).

The clients run in this process, on the same two cores as the server: their own
scheduling is in the figures, which are therefore an upper bound.

Baseline, same run, same database: a bare connection LISTENing on the store's channel,
from the same save call to the NOTIFY's arrival (what any follower of the log waits for
before it can read). Target (issue 11): p99 <= 100 ms for 200 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import orjson
import psycopg
from argon2 import PasswordHasher

sys.path.insert(0, str(Path(__file__).parent))
from _common import api_env, emit, free_port, log_sink
from live import figures, one_message, start_conversation
from urbana.adapters.embedded import EmbeddedStack
from urbana.adapters.passwords import Argon2Hasher
from urbana.adapters.postgres.log import AsyncLogReader, listen_channel
from urbana.adapters.postgres.schema import ensure_schema
from urbana.adapters.postgres.store import Store, open_store
from urbana.application.access import Access
from urbana.config import conninfo
from urbana.domain.conversation import Conversation
from urbana.domain.user import Role

CLIENTS = 200
TARGET_P99_MS = 100.0
HEARTBEAT_S = 2.0
PASSWORD = "bench password 11"
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # logins are not measured


class Client:
    """One attendant's stream: when it got each event type past a position."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.arrivals: list[tuple[int, str, float]] = []  # (id, type, perf_counter)
        self.changed = asyncio.Event()

    async def follow(self, http: httpx.AsyncClient, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        fields: dict[str, str] = {}
        async with http.stream("GET", "/v1/stream", headers=headers) as answer:
            assert answer.status_code == 200, await answer.aread()
            async for line in answer.aiter_lines():
                if line.startswith(":"):
                    self.connected.set()
                    continue
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                    continue
                if "id" in fields:
                    orjson.loads(fields.get("data", "null"))  # parsed, as a panel does
                    self.arrivals.append((int(fields["id"]), fields.get("event", ""), now()))
                    self.changed.set()
                fields = {}

    async def receipt(self, position: int, event_type: str) -> float:
        while True:
            for event_id, kind, at in self.arrivals:
                if event_id >= position and kind == event_type:
                    return at
            self.changed.clear()
            await self.changed.wait()


def now() -> float:
    return time.perf_counter()


async def run(
    store: Store, conv: Conversation, base_url: str, token: str, clients: int, rounds: int
) -> dict[str, Any]:
    listener = await psycopg.AsyncConnection.connect(
        conninfo(store.url, store.schema), autocommit=True
    )
    await listener.execute(listen_channel())
    log = AsyncLogReader(store.schema)
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    timeout = httpx.Timeout(30.0, read=None)
    delivery: list[float] = []
    notify: list[float] = []
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as http:
        streams = [Client() for _ in range(clients)]
        tasks = [asyncio.create_task(c.follow(http, token)) for c in streams]
        connected = asyncio.gather(*(c.connected.wait() for c in streams))
        await asyncio.wait_for(connected, timeout=60 + 2 * HEARTBEAT_S)
        for _ in range(rounds):
            position = await log.head(listener) + 1
            began = now()
            saved = asyncio.create_task(asyncio.to_thread(one_message, store, conv))
            async for _ in listener.notifies(stop_after=1):
                notify.append(now() - began)
            await saved
            receipts = [c.receipt(position, "message.created") for c in streams]
            arrived = await asyncio.wait_for(asyncio.gather(*receipts), timeout=30)
            delivery.extend(at - began for at in arrived)
            for c in streams:
                c.arrivals.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await listener.close()
    over_http = figures(delivery)
    baseline = figures(notify)
    return {
        "bench": "sse",
        "clients": clients,
        "rounds": rounds,
        "delivery_store_to_sse_client": over_http,
        "baseline_store_to_notify": baseline,
        "ratio_p99": round(over_http["p99_ms"] / max(baseline["p99_ms"], 0.001), 2),
        "mean_ms": round(statistics.fmean(delivery) * 1000, 2),
        "target_p99_ms": TARGET_P99_MS,
        "target_met": over_http["p99_ms"] <= TARGET_P99_MS and clients >= CLIENTS,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def wait_for_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"urbana serve did not listen on {port}") from None
            time.sleep(0.1)


def login(base_url: str, email: str) -> str:
    answer = httpx.post(
        f"{base_url}/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=30
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=CLIENTS)
    args = parser.parse_args()
    rounds = 8 if args.quick else 30
    with (
        tempfile.TemporaryDirectory(prefix="urbana-bench-") as tmp,
        EmbeddedStack(
            Path(tmp),
            postgres_url=os.environ.get("URBANA_DATABASE_URL"),
            redis_url=os.environ.get("URBANA_REDIS_URL"),
            kafka_bootstrap="127.0.0.1:1",  # the live feed follows the store, not Kafka
        ) as stack,
    ):
        urls = stack.urls
        schema = f"bench_{uuid4().hex[:8]}"
        master = os.urandom(32)
        ensure_schema(urls.postgres, schema)
        store = open_store(urls.postgres, master, schema=schema, pool_size=2)
        try:
            tenant_id, _ = store.app.register_tenant(f"Bench SSE {uuid4().hex[:6]}")
            email = f"sup.{uuid4().hex[:10]}@example.com"
            Access(store.app, Argon2Hasher(CHEAP)).add_user(
                UUID(str(tenant_id)), email=email, role=Role.SUPERVISOR, password=PASSWORD
            )
            conv = start_conversation(store, UUID(str(tenant_id)))
            port = free_port()
            env = {
                **api_env(urls, schema, master, tmp),
                "URBANA_LIVE_HEARTBEAT_S": str(HEARTBEAT_S),
            }
            urbana = str(Path(sys.executable).with_name("urbana"))
            server = subprocess.Popen(
                [urbana, "serve", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log_sink("serve"),
            )
            try:
                wait_for_port(port, server)
                base_url = f"http://127.0.0.1:{port}"
                token = login(base_url, email)
                result = asyncio.run(run(store, conv, base_url, token, args.clients, rounds))
            finally:
                server.terminate()
                server.wait(timeout=30)
        finally:
            store.close()
    emit(result)


if __name__ == "__main__":
    main()

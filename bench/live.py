"""Live feed fan-out: one stored event to 200 subscribed clients, store to every client.

    python bench/live.py [--quick]

On the embedded PostgreSQL (or URBANA_DATABASE_URL), in one process as in an API
process: a `LiveFeed` with 200 subscriptions of one tenant (attendants). Each round
stores one inbound message (one `save()` in a worker thread) and waits until all 200
subscriptions have it; delivery is counted from the moment the save was called (so it
includes the commit) to each subscription's receipt. 30 rounds (8 with --quick).

Baseline, same run, same database: a bare connection LISTENing on the store's channel,
from the same save call to the NOTIFY's arrival (what any follower of the log waits
for before it can read). Target (issue 11): p99 <= 100 ms for 200 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from _common import embedded_store, emit
from urbana.adapters.live import LiveFeed
from urbana.adapters.postgres.log import listen_channel
from urbana.adapters.postgres.store import Store
from urbana.application.live import LiveEvent
from urbana.config import conninfo
from urbana.domain.conversation import Conversation
from urbana.domain.lead import Lead

CLIENTS = 200
TARGET_P99_MS = 100.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def figures(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
        "n": len(ms),
    }


def start_conversation(store: Store, tenant_id: UUID) -> Conversation:
    phone = "5511900000000"
    lead = Lead.create(tenant_id, f"phone:{phone}", phone=phone, name="Bench")
    conv = Conversation.start(tenant_id, "cloud", phone, lead.id)
    store.app.save(lead, conv)
    return conv


def one_message(store: Store, conv: Conversation) -> None:
    conv.receive(
        provider_message_id=f"wamid.{uuid4().hex}",
        kind="text",
        sent_at=datetime.now(UTC),
        text="oi",
    )
    store.app.save(conv)


async def run(store: Store, rounds: int) -> dict[str, object]:
    url, schema = store.url, store.schema
    tenant_id = uuid4()
    conv = await asyncio.to_thread(start_conversation, store, tenant_id)
    listener = await psycopg.AsyncConnection.connect(conninfo(url, schema), autocommit=True)
    await listener.execute(listen_channel())
    delivery: list[float] = []
    notify: list[float] = []
    async with LiveFeed(database_url=url, schema=schema, heartbeat_s=3600.0) as feed:
        arrivals: list[list[float]] = [[] for _ in range(CLIENTS)]
        got_all = asyncio.Event()
        pending = [0]

        async def client(i: int) -> None:
            async for item in feed.subscribe(tenant_id, "attendant"):
                if isinstance(item, LiveEvent):
                    arrivals[i].append(time.perf_counter())
                    pending[0] -= 1
                    if pending[0] == 0:
                        got_all.set()

        clients = [asyncio.create_task(client(i)) for i in range(CLIENTS)]
        # The feed has no event for this; its metric is what the bench can watch.
        while feed.metrics()["subscribers"] < CLIENTS:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        for _ in range(rounds):
            got_all.clear()
            pending[0] = CLIENTS
            began = time.perf_counter()
            saved = asyncio.create_task(asyncio.to_thread(one_message, store, conv))
            async for _ in listener.notifies(stop_after=1):
                notify.append(time.perf_counter() - began)
            await saved
            await got_all.wait()
            delivery.extend(arrivals[i].pop() - began for i in range(CLIENTS))
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    await listener.close()
    feed_figures = figures(delivery)
    baseline = figures(notify)
    return {
        "bench": "live",
        "clients": CLIENTS,
        "rounds": rounds,
        "delivery_store_to_client": feed_figures,
        "baseline_store_to_notify": baseline,
        "ratio_p99": round(feed_figures["p99_ms"] / max(baseline["p99_ms"], 0.001), 2),
        "target_p99_ms": TARGET_P99_MS,
        "target_met": feed_figures["p99_ms"] <= TARGET_P99_MS,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 8 if args.quick else 30
    with embedded_store() as store:
        result = asyncio.run(run(store, rounds))
    emit(result)


if __name__ == "__main__":
    main()

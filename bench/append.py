"""Append throughput of "receive message" against a raw INSERT+COMMIT loop, same PostgreSQL.

    python bench/append.py [--quick]

Measures, on the embedded PostgreSQL (or URBANA_DATABASE_URL):
- new conversations: each message starts a conversation and a lead (5 events);
- follow-ups: messages on existing conversations (2 events);
each one command per `save()` (one transaction each) and group-committed in batches
(one `save()` for the batch, as the ingest writer does), and, as the baseline, a raw
psycopg loop of single-row INSERT + COMMIT into a plain table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from _common import embedded_store, emit, median_rate
from urbana.adapters.postgres.store import Store
from urbana.application.app import ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.config import conninfo


def message(contact: str) -> InboundMessage:
    return InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=contact,
        phone=contact,
        sent_at=datetime.now(UTC),
        kind="text",
        text="Olá, gostaria de saber o preço do plano anual",
        contact_name="Cliente Bench",
    )


def new_contacts(n: int) -> list[str]:
    base = uuid4().int % 10**7
    return [f"55119{(base + i) % 10**8:08d}" for i in range(n)]


def bench_app(store: Store, n: int, batch: int, follow_up: bool) -> tuple[int, float]:
    tenant_id, _ = store.app.register_tenant(f"bench {uuid4().hex}")
    contacts = new_contacts(n if not follow_up else max(1, n // 10))
    if follow_up:
        store.app.receive_messages(
            [ReceiveMessage(tenant_id, "cloud", message(c)) for c in contacts]
        )
    commands = [
        ReceiveMessage(tenant_id, "cloud", message(contacts[i % len(contacts)])) for i in range(n)
    ]
    start = time.perf_counter()
    for i in range(0, n, batch):
        outcomes = store.app.receive_messages(commands[i : i + batch])
        assert not any(isinstance(o, Exception) for o in outcomes)
    return n, time.perf_counter() - start


def bench_raw(url: str, schema: str | None, n: int) -> tuple[int, float]:
    with psycopg.connect(conninfo(url, schema)) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS raw_bench (id bigserial primary key, body bytea)")
        conn.commit()
        body = os.urandom(300)
        start = time.perf_counter()
        for _ in range(n):
            conn.execute("INSERT INTO raw_bench (body) VALUES (%s)", (body,))
            conn.commit()
        return n, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 300 if args.quick else 3000
    runs = 3 if args.quick else 5
    batch = 64
    with embedded_store() as store:
        raw = median_rate(runs, lambda: bench_raw(store.url, store.schema, n))
        results = {
            "new_conversation_single": median_rate(runs, lambda: bench_app(store, n, 1, False)),
            "follow_up_single": median_rate(runs, lambda: bench_app(store, n, 1, True)),
            "new_conversation_batch64": median_rate(
                runs, lambda: bench_app(store, n, batch, False)
            ),
            "follow_up_batch64": median_rate(runs, lambda: bench_app(store, n, batch, True)),
        }
    emit(
        {
            "bench": "append",
            "unit": "messages/s",
            "n_per_run": n,
            "baseline_raw_insert_commit": raw,
            **results,
            "ratio_vs_raw": {
                k: round(v["median_per_s"] / raw["median_per_s"], 3) for k, v in results.items()
            },
        }
    )


if __name__ == "__main__":
    main()

"""Rebuild of every SQL read model from the event store, against reading the log alone.

    python bench/replay.py [--quick] [--profile]

Stores 1,000,000 events (--quick: 100,000) made by the real domain and the real mapper
(conversations with inbound bursts, AI replies with usage, delivery statuses, lead
scoring, handoffs, human replies, closes; personal fields sealed per lead), written in
bulk with COPY. Then, on the embedded PostgreSQL (or URBANA_DATABASE_URL):
- baseline: read the notification log in pages and decode every envelope, no writes;
- replay: `urbana.adapters.postgres.replay.replay` of all projections (fresh tables, swap).
Target: replay >= 30,000 events/s on the 2-core machine.

--profile samples the main thread only (the projections); the log is read and decoded
ahead in another thread, which `py-spy record --idle -- python bench/replay.py` shows.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
from eventsourcing.domain import DomainEventProtocol

sys.path.insert(0, str(Path(__file__).parent))
from _common import embedded_store, emit
from urbana.adapters.postgres.log import LogReader
from urbana.adapters.postgres.replay import replay
from urbana.adapters.postgres.schema import EVENTS_TABLE
from urbana.adapters.postgres.store import Store
from urbana.config import conninfo
from urbana.domain.conversation import Conversation
from urbana.domain.lead import Lead
from urbana.domain.message_ref import MessageRef
from urbana.domain.tenant import Tenant

TARGET = 30_000
TEXTS = (
    "Olá, bom dia! Gostaria de saber o preço do plano anual.",
    "Vocês entregam em Campinas?",
    "Qual o horário de atendimento no sábado?",
    "Quero cancelar meu pedido 4821",
)


def conversation_events(
    tenant_id: UUID, n: int, rng: random.Random
) -> list[DomainEventProtocol[UUID]]:
    """The events of one lead, its conversation and the message index, as the app records them."""
    phone = f"55119{n:08d}"
    lead = Lead.create(tenant_id, f"phone:{phone}", phone=phone, name=f"Cliente {n}")
    conv = Conversation.start(tenant_id, "cloud", phone, lead.id)
    base = datetime(2025, 3, 1, tzinfo=UTC) + timedelta(minutes=n % 10_000)
    refs: list[MessageRef] = []
    for burst in range(rng.randint(1, 3)):
        for _ in range(rng.randint(1, 3)):
            pid = f"wamid.{uuid4().hex}"
            refs.append(MessageRef(tenant_id, "cloud", pid, conv.id, None))
            conv.receive(
                provider_message_id=pid,
                kind="text",
                sent_at=base + timedelta(minutes=burst * 30),
                text=rng.choice(TEXTS),
                contact_name=f"Cliente {n}",
            )
        if conv.status.value != "ai":
            break
        oid = uuid4().hex
        conv.record_ai_reply(
            outbound_id=oid,
            reply_to_seq=conv.inbound_seq,
            text="Claro! O plano anual custa R$ 1.200, em até 12x.",
            intent="pricing",
            confidence=0.87,
            usage={"tokens_in": 812, "tokens_out": 64, "cost_usd": 0.00041, "model": "gpt-4o-mini"},
        )
        conv.mark_sent(outbound_id=oid, provider_message_id=f"wamid.out.{oid}")
        refs.append(MessageRef(tenant_id, "cloud", f"wamid.out.{oid}", conv.id, oid))
        conv.mark_delivered(outbound_id=oid, at=base)
        if rng.random() < 0.7:
            conv.mark_read(outbound_id=oid, at=base)
        lead.score_by(rng.randint(5, 25), reason="pricing")
        if rng.random() < 0.25:
            conv.request_handoff(reason="hot_lead", summary="Quer fechar o plano anual")
            conv.accept_handoff(attendant="ana")
            conv.attendant_reply(
                outbound_id=uuid4().hex, attendant="ana", text="Oi! Sou a Ana.", now=base
            )
            conv.close(by="ana")
    return [
        *conv.collect_events(),
        *(e for ref in refs for e in ref.collect_events()),
        *lead.collect_events(),
    ]


def generate(store: Store, target: int) -> int:
    """Store about `target` events with COPY, sealed by the real mapper; returns the count."""
    rng = random.Random(7)
    tenant = Tenant.register(f"Bench {uuid4().hex[:6]}")
    events: list[DomainEventProtocol[UUID]] = list(tenant.collect_events())
    mapper = store.app.mapper
    written = 0
    n = 0
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        while written < target:
            chunk: list[DomainEventProtocol[UUID]] = []
            while len(chunk) < 20_000 and written + len(chunk) < target:
                chunk.extend(conversation_events(tenant.id, n, rng))
                n += 1
            if events:
                chunk = events + chunk
                events = []
            stored = [mapper.to_stored_event(e) for e in chunk]
            with conn.cursor().copy(
                f"COPY {EVENTS_TABLE} (originator_id, originator_version, topic, state) FROM STDIN"
            ) as copy:
                for s in stored:
                    copy.write_row((s.originator_id, s.originator_version, s.topic, s.state))
            conn.commit()
            written += len(stored)
            print(f"generated {written:,} events", file=sys.stderr, flush=True)
        conn.execute(f"ANALYZE {EVENTS_TABLE}")
        conn.commit()
    return written


def read_baseline(store: Store) -> tuple[int, float]:
    """Read every page of the log and decode every envelope; no writes."""
    reader = LogReader(store.schema)
    start = time.perf_counter()
    count = 0
    with psycopg.connect(conninfo(store.url, store.schema)) as conn:
        for _, _, envelopes in reader.pages(conn.cursor(), 0):
            count += len(envelopes)
    return count, time.perf_counter() - start


def count_rows(conn: psycopg.Connection[tuple[Any, ...]], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
    assert row is not None
    return int(row[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true", help="pyinstrument the replay")
    parser.add_argument("--events", type=int, help="store this many events instead")
    args = parser.parse_args()
    target = args.events or (100_000 if args.quick else 1_000_000)
    with embedded_store() as store:
        t0 = time.perf_counter()
        events = generate(store, target)
        generate_s = time.perf_counter() - t0
        read_n, read_s = read_baseline(store)
        last = [0.0]

        def progress(done: int, total: int, rate: float) -> None:
            if time.perf_counter() - last[0] > 5:
                last[0] = time.perf_counter()
                print(f"replay {done:,}/{total:,} {rate:,.0f} ev/s", file=sys.stderr)

        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler()
            profiler.start()
        result = replay(store.url, store.schema, progress=progress)
        if args.profile:
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False), file=sys.stderr)
        with psycopg.connect(conninfo(store.url, store.schema)) as conn:
            rows = {
                t: count_rows(conn, f"rm_{t}")
                for t in ("conversations", "messages", "leads", "kpi_daily")
            }
    baseline = read_n / read_s
    rate = result.events / result.seconds
    emit(
        {
            "bench": "replay",
            "unit": "events/s",
            "events": events,
            "generate_s": round(generate_s, 1),
            "baseline_read_decode": {
                "events": read_n,
                "seconds": round(read_s, 2),
                "per_s": round(baseline),
            },
            "replay_all": {
                "events": result.events,
                "seconds": round(result.seconds, 2),
                "per_s": round(rate),
                "rows": rows,
            },
            "ratio_vs_baseline": round(rate / baseline, 3),
            "target_per_s": TARGET,
            "meets_target": rate >= TARGET,
        }
    )


if __name__ == "__main__":
    main()

"""A capacity model: each role's CPU per unit of work, and what a target load needs.

    python bench/capacity.py [--quick] [--messages-per-s 1000] [--tenants 5000]
                             [--rate 10] [--seconds 20]

Runs the deployed topology of bench/ttfr.py (embedded PostgreSQL, Kafka-protocol
broker and Redis; `urbana serve` and one `urbana worker` per role; an instant fake LLM
and a fake Cloud API gateway in this process) and measures, with psutil, the CPU
seconds of every process:
- idle, for `--seconds` (what each process costs doing nothing: polls, heartbeats);
- under a paced load of `--rate` new conversations/s for `--seconds`; the marginal CPU
  (load minus idle) divided by the units of work each role did: the API per webhook,
  the relay per event appended, the projector per event (all its projections), the
  responder per burst (the LLM excluded: it answers instantly), the dispatcher per send,
  and PostgreSQL, the broker and Redis per webhook;
- each projection alone per event: a fresh consumer group of one projection in this
  process, replaying the run's topic into a fresh schema (this process's CPU plus
  PostgreSQL's, net of PostgreSQL's idle);
- the single-writer event store's group-committed append rate (100 messages per
  `save()`, as the ingest writer batches them; bench/append.py) on the same PostgreSQL,
  with its single-row INSERT+COMMIT loop as the baseline in the same run.
Then, for the target load (`--messages-per-s` inbound messages across `--tenants`
tenants; each message taken as one burst and one reply, debounce off, the worst case),
the cores each role needs, its processes at `--utilisation` of a core each (a Python
process uses one core), the Kafka partitions the consumer groups need, and how many
PostgreSQL servers the event store needs when each takes its streams' tenants.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, median_rate
from _procs import cpu_by_label
from _questions import QuestionMix
from append import bench_app, bench_raw
from ttfr import Engine, cpu_run, engine, idle_cpu
from urbana.adapters.crypto import parse_master_key
from urbana.adapters.kafka.projector import ProjectionRunner
from urbana.adapters.postgres.schema import ensure_schema
from urbana.adapters.postgres.store import open_store
from urbana.projections.schema import all_projections

# Which unit of work each process of the topology is charged with.
UNITS = {
    "serve": "webhook",
    "worker relay": "event",
    "worker projector": "event",
    "worker responder": "burst",
    "worker dispatcher": "send",
    "postgres": "webhook",
    "tansu": "webhook",
    "redis": "webhook",
}
CONSUMER_ROLES = ("worker projector", "worker responder", "worker dispatcher")


def events_so_far(eng: Engine) -> int:
    store = open_store(eng.postgres, parse_master_key(eng.master), pool_size=1)
    try:
        return int(store.app.recorder.max_notification_id() or 0)
    finally:
        store.close()


def per_projection(eng: Engine, kafka: str, idle_pg_per_s: float) -> dict[str, Any]:
    """Each projection alone replays the topic into a fresh schema: CPU ms per event."""
    schema = f"capacity_{uuid4().hex[:8]}"
    ensure_schema(eng.postgres, schema)
    out: dict[str, Any] = {}
    for projection in all_projections():
        runner = ProjectionRunner(
            database_url=eng.postgres,
            schema=schema,
            bootstrap=kafka,
            projections=[projection.name],
            group_prefix=f"bench.capacity.{uuid4().hex[:8]}",
            assign=True,
        )
        before_pg = cpu_by_label(eng.marker).get("postgres", 0.0)
        t0, w0 = time.process_time(), time.monotonic()
        metrics = asyncio.run(runner.run_until_caught_up(timeout=300))[projection.name]
        own, wall = time.process_time() - t0, time.monotonic() - w0
        pg = cpu_by_label(eng.marker).get("postgres", 0.0) - before_pg - idle_pg_per_s * wall
        handled = metrics.applied + metrics.skipped
        out[projection.name] = {
            "events": handled,
            "dead_lettered": metrics.dead_lettered,
            "cpu_ms_per_event": round((own + max(0.0, pg)) * 1000 / max(1, handled), 3),
            "of_which_postgres_ms": round(max(0.0, pg) * 1000 / max(1, handled), 3),
        }
    return out


def append_rate(eng: Engine, n: int) -> dict[str, Any]:
    """Group-committed appends of the store (messages/s) and the raw loop, same server."""
    schema = f"capacity_{uuid4().hex[:8]}"
    ensure_schema(eng.postgres, schema)
    store = open_store(eng.postgres, parse_master_key(eng.master), schema=schema, pool_size=2)
    try:
        new = median_rate(3, lambda: bench_app(store, n, 100, False))
        follow = median_rate(3, lambda: bench_app(store, n, 100, True))
    finally:
        store.close()
    raw = median_rate(3, lambda: bench_raw(eng.postgres, schema, n))
    return {
        "new_conversations_msgs_per_s": new,
        "follow_ups_msgs_per_s": follow,
        "baseline_raw_insert_commit_per_s": raw,
    }


def model(
    cost: dict[str, dict[str, Any]],
    idle: dict[str, float],
    events_per_msg: float,
    store: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    load = args.messages_per_s
    per_msg = {"webhook": 1.0, "event": events_per_msg, "burst": 1.0, "send": 1.0}
    roles: dict[str, Any] = {}
    for name, c in cost.items():
        cores = load * per_msg[c["unit"]] * c["cpu_ms_per_unit"] / 1000 + idle.get(name, 0.0)
        processes = max(1, math.ceil(cores / args.utilisation))
        roles[name] = {"cores": round(cores, 2), "processes": processes}
    consumers = max(roles[r]["processes"] for r in CONSUMER_ROLES if r in roles)
    # Follow-ups dominate a day's traffic; new conversations are the dearer appends.
    rate = min(
        store["new_conversations_msgs_per_s"]["median_per_s"],
        store["follow_ups_msgs_per_s"]["median_per_s"],
    )
    servers = max(1, math.ceil(load / (rate * args.utilisation)))
    return {
        "target": {"messages_per_s": load, "tenants": args.tenants},
        "utilisation_per_core": args.utilisation,
        "roles": roles,
        "engine_cores": round(
            sum(v["cores"] for k, v in roles.items() if k not in ("postgres", "tansu", "redis")), 2
        ),
        "total_cores": round(sum(v["cores"] for v in roles.values()), 2),
        "kafka_partitions": {
            "events_topic_min": consumers,
            "suggested": max(12, 2 ** math.ceil(math.log2(2 * consumers))),
            "why": "a consumer group uses at most one consumer per partition; 2x leaves room "
            "to add consumers without repartitioning (keys are stream ids, so one "
            "conversation stays ordered on one partition)",
        },
        "event_store": {
            "append_msgs_per_s_one_server": rate,
            "load_vs_one_server": round(load / rate, 2),
            "postgres_servers": servers,
            "tenants_per_server": math.ceil(args.tenants / servers),
            "relay_processes": servers,
            "why": "one writer and one relay follow each store; past one server's rate the "
            "streams are partitioned by tenant across PostgreSQL servers, each with its "
            "own writer and relay publishing to the same topic",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=10.0, help="conversations/s measured")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--messages-per-s", type=float, default=1000.0)
    parser.add_argument("--tenants", type=int, default=5000)
    parser.add_argument("--utilisation", type=float, default=0.7, help="of a core, at most")
    parser.add_argument("--append-n", type=int, default=2000)
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    append_n = 200 if args.quick else args.append_n
    n = max(1, int(args.rate * seconds))
    with engine("processes") as eng:
        kafka = eng.kafka
        idle = idle_cpu(eng, seconds)
        first = events_so_far(eng)
        result, cpu, _ = cpu_run(eng, n, args.rate, QuestionMix())
        events = events_so_far(eng) - first
        replies = n - result["missing"]
        units = {"webhook": n, "event": events, "burst": n, "send": replies}
        cost = {}
        for name, unit in UNITS.items():
            marginal = max(0.0, cpu.get(name, 0.0) - idle.get(name, 0.0) * seconds)
            cost[name] = {
                "unit": unit,
                "cpu_ms_per_unit": round(marginal * 1000 / max(1, units[unit]), 3),
                "idle_cpu_ms_per_s": round(idle.get(name, 0.0) * 1000, 1),
            }
        projections = per_projection(eng, kafka, idle.get("postgres", 0.0))
        store = append_rate(eng, append_n)
    events_per_msg = events / n
    emit(
        {
            "bench": "capacity",
            "measured": {
                "conversations": n,
                "rate_per_s": args.rate,
                "missing": result["missing"],
                "events_appended": events,
                "events_per_message": round(events_per_msg, 2),
                "units": units,
            },
            "cpu_per_unit": cost,
            "projections_cpu_per_event": projections,
            "event_store": store,
            "model": model(cost, idle, events_per_msg, store, args),
        }
    )


if __name__ == "__main__":
    main()

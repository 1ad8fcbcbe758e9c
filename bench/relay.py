"""Relay lag: store append -> Kafka consumer (-> projections), at a steady 1,000 events/s.

    python bench/relay.py [--quick] [--seconds S]

On the embedded PostgreSQL and Tansu (or URBANA_DATABASE_URL / URBANA_KAFKA_BOOTSTRAP):
- a writer process (the API side) appends follow-up messages with
  `store.app.receive_messages`, paced by the wall clock at 1,000 events/s (2 events per
  message, 25 messages every 50 ms), for 10 s (3 s with --quick, S with --seconds), and
  notes when each batch's commit returned;
- the relay follows the store (LISTEN/NOTIFY) and publishes to a fresh topic;
- a consumer (no group, all partitions) notes when each position arrives;
- when `urbana.adapters.kafka.projector` is present, the projection runner (its own
  process, like `urbana worker --role projector`) consumes the same topic, and the time
  each position is applied by every projection is noted too, with the CPU time that
  process spent from the first paced event to the last one applied (per event);
- baseline, same broker, same run: raw aiokafka produce -> consume latency at the same
  rate, without the store.
Lag is counted from the commit's return to the consumer's receipt (or the projections'
commit: when the runner reports a batch committed, which it does once every projection
has committed it); `kafka_to_all_projections` counts from the consumer's receipt instead,
the projector's share alone. Target (issue #4): p99 <= 100 ms store -> Kafka ->
projection.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit
from urbana.adapters.embedded import EmbeddedStack
from urbana.adapters.kafka.relay import Relay
from urbana.adapters.kafka.topics import create_topics, load_topics, spec_for
from urbana.adapters.postgres.schema import ensure_schema
from urbana.adapters.postgres.store import Store, open_store
from urbana.application.app import ReceiveMessage
from urbana.application.channels import InboundMessage

RATE = 1000  # events/s
TICK = 0.05  # s: one group-committed save per tick
EVENTS_PER_MESSAGE = 2  # a follow-up: MessageReceived + MessageRefRecorded
MESSAGES_PER_TICK = int(RATE * TICK / EVENTS_PER_MESSAGE)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "n": len(ordered),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


def message(contact: str) -> InboundMessage:
    return InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=contact,
        phone=contact,
        sent_at=datetime.now(UTC),
        kind="text",
        text="Olá, qual o preço do plano anual?",
        contact_name="Cliente Bench",
    )


class Commits:
    """(highest position of a batch, wall-clock time its commit returned), in order."""

    def __init__(self, commits: list[tuple[int, float]]) -> None:
        self.commits = commits

    def commit_time(self, position: int, first_position: int) -> float | None:
        """When the batch holding `position` had committed (its writer call returned)."""
        if position <= first_position:
            return None
        index = bisect.bisect_left(self.commits, (position, 0.0))
        return self.commits[index][1] if index < len(self.commits) else None


def write_paced(
    url: str,
    master_key: bytes,
    schema: str,
    tenant_id: UUID,
    contacts: list[str],
    seconds: float,
    conn: Connection,
) -> None:
    """The API side, in its own process: append at a steady rate, report commit times."""
    store = open_store(url, master_key, schema=schema, pool_size=2)
    recorder = store.app.recorder
    commits: list[tuple[int, float]] = []
    late = 0
    start = time.perf_counter()
    i = 0
    for tick in range(int(seconds / TICK)):
        due = start + tick * TICK
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        elif now - due > TICK:
            late += 1
        batch = []
        for _ in range(MESSAGES_PER_TICK):
            batch.append(ReceiveMessage(tenant_id, "cloud", message(contacts[i % len(contacts)])))
            i += 1
        store.app.receive_messages(batch)
        committed = time.time()
        commits.append((recorder.max_notification_id() or 0, committed))
    elapsed = time.perf_counter() - start
    store.close()
    conn.send((commits, late, elapsed))
    conn.close()


async def receive_positions(
    bootstrap: str, topic: str, partitions: int, stop: asyncio.Event
) -> dict[int, tuple[int, float]]:
    """position -> (partition, first receipt time), for every record read until `stop`."""
    seen: dict[int, tuple[int, float]] = {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        while not stop.is_set():
            got = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for tp, records in got.items():
                for record in records:
                    position = int(dict(record.headers)["position"])
                    seen.setdefault(position, (tp.partition, now))
    finally:
        await consumer.stop()
    return seen


async def baseline(bootstrap: str, seconds: float) -> dict[str, float]:
    """Raw aiokafka produce -> consume latency at the same rate, without the store."""
    topic = f"bench.baseline.{uuid4().hex[:8]}"
    spec = spec_for(topic, load_topics())
    await create_topics(bootstrap, [spec])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5
    )
    await producer.start()
    await consumer.start()
    sent: dict[int, float] = {}
    latencies: list[float] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(spec.partitions)])
        await consumer.seek_to_beginning()
        stop = asyncio.Event()

        async def read() -> None:
            while not stop.is_set() or len(latencies) < len(sent):
                got = await consumer.getmany(timeout_ms=50)
                now = time.perf_counter()
                for records in got.values():
                    for record in records:
                        latencies.append(now - sent[int(record.value or b"0")])
                if stop.is_set() and not got:
                    break

        reader = asyncio.create_task(read())
        start = time.perf_counter()
        n = 0
        per_tick = int(RATE * TICK)
        for tick in range(int(seconds / TICK)):
            delay = start + tick * TICK - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            futures = []
            for _ in range(per_tick):
                sent[n] = time.perf_counter()
                futures.append(await producer.send(topic, str(n).encode(), key=uuid4().bytes))
                n += 1
            await asyncio.gather(*futures)
        await asyncio.sleep(1.0)
        stop.set()
        await reader
    finally:
        await producer.stop()
        await consumer.stop()
    return percentiles(latencies)


async def measure(
    store: Store, master_key: bytes, bootstrap: str, seconds: float, *, projections: bool
) -> dict[str, Any]:
    topic = f"bench.relay.{uuid4().hex[:8]}"
    spec = spec_for(topic, load_topics())
    await create_topics(bootstrap, [spec])
    tenant_id, _ = await asyncio.to_thread(store.app.register_tenant, f"bench {uuid4().hex[:8]}")
    contacts = [f"55119{(uuid4().int + i) % 10**8:08d}" for i in range(200)]
    # Existing conversations: the paced messages are follow-ups (2 events each).
    await asyncio.to_thread(
        store.app.receive_messages,
        [ReceiveMessage(tenant_id, "cloud", message(c)) for c in contacts],
    )
    first_position = store.app.recorder.max_notification_id() or 0
    assert store.schema is not None

    projector = Projector.start(store, bootstrap, topic) if projections else None
    relay = Relay(
        database_url=store.url, schema=store.schema, bootstrap=bootstrap, topic=topic, name=topic
    )
    stop = asyncio.Event()
    await relay.start()
    relay_task = asyncio.create_task(relay.run(stop))
    consumer_stop = asyncio.Event()
    receiver = asyncio.create_task(
        receive_positions(bootstrap, topic, spec.partitions, consumer_stop)
    )
    await wait_caught_up(relay, first_position)  # the setup events are published first
    if projector is not None:
        await asyncio.to_thread(projector.wait_ready)

    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe(duplex=False)
    writer = ctx.Process(
        target=write_paced,
        args=(store.url, master_key, store.schema, tenant_id, contacts, seconds, theirs),
    )
    writer.start()
    commits, late, elapsed = await asyncio.to_thread(ours.recv)
    await asyncio.to_thread(writer.join)
    last = commits[-1][0]
    await wait_caught_up(relay, last)
    await asyncio.sleep(1.0)  # let the consumer drain
    consumer_stop.set()
    seen = await receiver
    stop.set()
    await relay_task
    relay_metrics = relay.metrics()
    await relay.aclose()
    applied, projector_cpu_s = (
        await asyncio.to_thread(projector.finish, last) if projector else (None, 0.0)
    )

    timeline = Commits(commits)
    kafka_lags = []
    missing = 0
    for position in range(first_position + 1, last + 1):
        committed = timeline.commit_time(position, first_position)
        got = seen.get(position)
        if committed is None:
            continue
        if got is None:
            missing += 1
            continue
        kafka_lags.append(got[1] - committed)
    result: dict[str, Any] = {
        "store_to_kafka": percentiles(kafka_lags),
        "events": last - first_position,
        "writer_events_per_s": round((last - first_position) / elapsed, 1),
        "writer_ticks_late": late,
        "not_received": missing,
        "relay": relay_metrics,
    }
    if applied is not None:
        result["store_to_projection"] = projection_lags(
            applied, timeline, seen, first_position, last
        )
        # From "ready" to the last event applied: the paced run, idle polling included.
        result["projector_cpu_s"] = round(projector_cpu_s, 3)
        result["projector_cpu_ms_per_event"] = round(
            projector_cpu_s * 1000 / max(1, last - first_position), 4
        )
    return result


async def wait_caught_up(relay: Relay, position: int, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while relay.last_position < position:
        if time.monotonic() > deadline:
            raise TimeoutError(f"relay stuck at {relay.last_position} < {position}")
        await asyncio.sleep(0.01)


Applied = dict[str, dict[int, list[tuple[int, float]]]]  # projection -> partition -> [(pos, t)]


class Projector:
    """The projection runner in its own process, noting when each batch is applied."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn

    @classmethod
    def start(cls, store: Store, bootstrap: str, topic: str) -> Projector | None:
        try:
            import urbana.adapters.kafka.projector  # noqa: F401
        except ImportError:
            return None
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()
        process = ctx.Process(
            target=run_projector, args=(store.url, store.schema, bootstrap, topic, theirs)
        )
        process.start()
        return cls(process, ours)

    def wait_ready(self, seconds: float = 120.0) -> None:
        deadline = time.monotonic() + seconds
        while not self.conn.poll(0.5):
            if not self.process.is_alive():
                raise RuntimeError(f"projector process exited ({self.process.exitcode})")
            if time.monotonic() > deadline:
                raise TimeoutError("projector not ready")
        assert self.conn.recv() == "ready"

    def finish(self, last: int) -> tuple[Applied, float]:
        """What each projection applied when, and the process's CPU seconds meanwhile."""
        self.conn.send(last)
        applied: Applied
        applied, cpu_s = self.conn.recv()
        self.process.join()
        return applied, cpu_s


def run_projector(
    url: str, schema: str | None, bootstrap: str, topic: str, conn: Connection
) -> None:
    asyncio.run(_project(url, schema, bootstrap, topic, conn))


async def _project(
    url: str, schema: str | None, bootstrap: str, topic: str, conn: Connection
) -> None:
    from urbana.adapters.kafka.projector import ProjectionRunner

    applied: Applied = defaultdict(lambda: defaultdict(list))

    async def after_commit(name: str, result: Any) -> None:
        now = time.time()
        for partition, position in result.positions.items():
            applied[name][partition].append((position, now))

    runner = ProjectionRunner(
        database_url=url,
        schema=schema,
        bootstrap=bootstrap,
        topic=topic,
        group_prefix=f"bench.{uuid4().hex[:8]}",
        after_db_commit=after_commit,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    # Ready once every consumer group has joined: the lag measured is steady state,
    # not the broker's group rebalance.
    for _ in range(1200):
        if runner.assigned() or task.done():
            break
        await asyncio.sleep(0.05)
    # For a profiler: py-spy record --pid <this> while the paced writer runs.
    print(f"projector pid {os.getpid()}", file=sys.stderr, flush=True)
    conn.send("ready")
    cpu_start = time.process_time()
    last = await asyncio.to_thread(conn.recv)
    names = [p.name for p in runner.projections]
    for _ in range(1200):  # at most 60 s
        if all(any(e and e[-1][0] >= last for e in applied[n].values()) for n in names):
            break
        await asyncio.sleep(0.05)
    cpu_s = time.process_time() - cpu_start
    stop.set()
    await task
    conn.send(({name: dict(parts) for name, parts in applied.items()}, cpu_s))
    conn.close()


def projection_lags(
    applied: Applied,
    timeline: Commits,
    seen: dict[int, tuple[int, float]],
    first_position: int,
    last: int,
) -> dict[str, Any]:
    """Per projection and for all of them: commit -> applied by the projection."""
    per: dict[str, list[float]] = defaultdict(list)
    every: list[float] = []
    from_kafka: list[float] = []  # the consumer's receipt -> the last projection's commit
    for position in range(first_position + 1, last + 1):
        committed = timeline.commit_time(position, first_position)
        got = seen.get(position)
        if committed is None or got is None:
            continue
        partition = got[0]
        latest: float | None = 0.0
        for name, partitions in applied.items():
            entries = partitions.get(partition, [])
            index = bisect.bisect_left([p for p, _ in entries], position)
            if index == len(entries):
                latest = None
                continue
            lag = entries[index][1] - committed
            per[name].append(lag)
            if latest is not None:
                latest = max(latest, lag)
        if latest is not None:
            every.append(latest)
            from_kafka.append(latest - (got[1] - committed))
    return {
        "all_projections": percentiles(every),
        "kafka_to_all_projections": percentiles(from_kafka),
        **{name: percentiles(values) for name, values in sorted(per.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--seconds", type=float, help="how long the paced writer runs (default 10, 3 with --quick)"
    )
    parser.add_argument(
        "--no-projection", action="store_true", help="store -> Kafka only, even with a projector"
    )
    args = parser.parse_args()
    seconds = args.seconds if args.seconds else 3.0 if args.quick else 10.0
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="urbana-bench-") as tmp:
        stack = EmbeddedStack(
            Path(tmp),
            postgres_url=os.environ.get("URBANA_DATABASE_URL"),
            kafka_bootstrap=os.environ.get("URBANA_KAFKA_BOOTSTRAP"),
            redis_url="redis://unused:0/0",
        )
        with stack:
            urls = stack.start()
            master_key = os.urandom(32)
            schema = f"bench_{uuid4().hex[:8]}"
            ensure_schema(urls.postgres, schema)
            store = open_store(urls.postgres, master_key, schema=schema, pool_size=2)
            try:
                base = asyncio.run(baseline(urls.kafka, seconds))
                result = asyncio.run(
                    measure(
                        store, master_key, urls.kafka, seconds, projections=not args.no_projection
                    )
                )
            finally:
                store.close()
    measured = result.get("store_to_projection", {}).get("all_projections")
    headline = measured if measured and measured.get("n") else result["store_to_kafka"]
    emit(
        {
            "bench": "relay",
            "measures": (
                "store->kafka->projection" if headline is measured else "store->kafka consumer"
            ),
            "rate_events_per_s": RATE,
            "seconds": seconds,
            **result,
            "baseline_raw_produce_consume": base,
            "p99_ms": headline.get("p99_ms"),
            "target_p99_ms": 100,
            "ratio_p99_vs_baseline": (
                round(headline["p99_ms"] / base["p99_ms"], 2)
                if headline.get("p99_ms") and base.get("p99_ms")
                else None
            ),
        }
    )


if __name__ == "__main__":
    main()

"""The embedded services of `urbana dev`: they start, work, stop cleanly and persist."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest

from urbana.adapters.embedded import (
    LOCK_FILE,
    DataDirInUseError,
    EmbeddedStack,
    ServiceUrls,
    wipe,
)

pytestmark = pytest.mark.integration

SRC = Path(__file__).resolve().parents[2] / "src"


def alive(pid: int) -> bool:
    """Exists and is not a zombie (here PID 1 may not reap orphaned postmasters)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def wait_all_dead(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def port_open(hostport: str) -> bool:
    host, port = hostport.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def redis_hostport(url: str) -> str:
    return url.removeprefix("redis://").split("/", 1)[0]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    with EmbeddedStack(tmp_path_factory.mktemp("embedded")) as started:
        yield started


def test_postgres_answers_and_has_pgvector(stack: EmbeddedStack) -> None:
    url = stack.urls.postgres
    assert url.startswith("postgresql://postgres:@/postgres?host=/")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        assert row is not None
        assert conn.execute("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector").fetchone() == (1.0,)


def test_postgres_parts_connect_separately(stack: EmbeddedStack) -> None:
    params = stack.urls.postgres_params()
    assert Path(params.host).is_dir()
    assert (params.port, params.user, params.dbname) == (5432, "postgres", "postgres")
    with psycopg.connect(
        host=params.host, port=params.port, user=params.user, dbname=params.dbname
    ) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)


async def test_kafka_round_trips_a_keyed_message(stack: EmbeddedStack) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    bootstrap = stack.urls.kafka
    topic = f"t-{uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"hello", key=b"lead-1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"g-{uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000)
        records = [r for part in batch.values() for r in part]
        while not records:
            batch = await consumer.getmany(timeout_ms=10_000)
            records = [r for part in batch.values() for r in part]
        assert [(r.key, r.value, r.partition) for r in records] == [
            (b"lead-1", b"hello", meta.partition)
        ]
        await consumer.commit()
    finally:
        await consumer.stop()


async def test_redis_pings(stack: EmbeddedStack) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(stack.urls.redis)
    try:
        assert await client.ping() is True
        await client.set("k", "v")
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()


def test_second_stack_on_the_same_dir_is_refused(stack: EmbeddedStack) -> None:
    with pytest.raises(DataDirInUseError):
        EmbeddedStack(stack.data_dir).start()
    with pytest.raises(DataDirInUseError):
        wipe(stack.data_dir)


def test_stop_leaves_nothing_and_data_persists_until_wipe(tmp_path: Path) -> None:
    first = EmbeddedStack(tmp_path)
    urls = first.start()
    pids = first.pids()
    assert len(pids) == 4  # tansu, redis, postmaster, watchdog
    with psycopg.connect(urls.postgres) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
    first.stop()
    first.stop()  # idempotent

    assert wait_all_dead(pids, 5) == []
    assert not port_open(urls.kafka)
    assert not port_open(redis_hostport(urls.redis))
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()

    with EmbeddedStack(tmp_path) as second, psycopg.connect(second.urls.postgres) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("still here",)]

    wipe(tmp_path)
    assert not (tmp_path / "postgres").exists()
    assert not (tmp_path / "logs").exists()
    with EmbeddedStack(tmp_path) as fresh, psycopg.connect(fresh.urls.postgres) as conn:
        assert conn.execute("SELECT to_regclass('kept')").fetchone() == (None,)


def test_stale_postmaster_pid_does_not_block_start(tmp_path: Path) -> None:
    with EmbeddedStack(tmp_path):
        pass
    pidfile = tmp_path / "postgres" / "postmaster.pid"
    # A live PID that is not a postmaster: what a reused PID looks like after a crash.
    pidfile.write_text(
        f"{os.getpid()}\n{tmp_path / 'postgres'}\n0\n5432\n{tmp_path}\n\n0 0\nready\n"
    )
    with EmbeddedStack(tmp_path) as again, psycopg.connect(again.urls.postgres) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_sigkill_of_the_parent_leaves_no_process(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, sys, time
        from pathlib import Path
        from urbana.adapters.embedded import EmbeddedStack
        stack = EmbeddedStack(Path(sys.argv[1]))
        urls = stack.start()
        print(json.dumps({"pids": stack.pids(), **urls.as_dict()}), flush=True)
        time.sleep(600)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert parent.stdout is not None
        info = json.loads(parent.stdout.readline())
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()

    assert wait_all_dead(info["pids"], 15) == []
    assert not port_open(info["kafka"])
    assert not port_open(redis_hostport(info["redis"]))
    # The flock died with the parent; the next run starts on the same data.
    with EmbeddedStack(tmp_path) as again, psycopg.connect(again.urls.postgres) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_given_urls_start_nothing(tmp_path: Path) -> None:
    given = ServiceUrls(
        postgres="postgresql://u:p@db.example:6543/app",
        kafka="broker.example:9092",
        redis="redis://cache.example:6379/0",
    )
    stack = EmbeddedStack(
        tmp_path, postgres_url=given.postgres, kafka_bootstrap=given.kafka, redis_url=given.redis
    )
    try:
        assert stack.start() == given
        assert stack.pids() == []
        params = given.postgres_params()
        assert (params.host, params.port, params.user, params.password, params.dbname) == (
            "db.example",
            6543,
            "u",
            "p",
            "app",
        )
    finally:
        stack.stop()
    assert (tmp_path / LOCK_FILE).exists()

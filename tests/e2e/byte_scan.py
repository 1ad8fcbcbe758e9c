"""A byte scan of everything a running Urbana keeps: every table of its database, every
record of every Kafka topic, the Redis keyspace, and its processes' logs.

Each needle (a phone, a name, a message text) is looked for plain, hex-encoded (bytea
columns print as hex), base64-encoded at each of the three byte alignments (a Cloud API
wamid is base64 of a struct that holds the phone), and base64 then hex (such an id
inside a bytea column).
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from psycopg import sql


@dataclass(frozen=True)
class Found:
    where: str  # "postgres:<schema>.<table>", "kafka:<topic>", "redis:<key>", "log:<file>"
    needle: str
    form: str  # plain | hex | base64 | hex-base64


def forms(needle: str) -> dict[str, list[bytes]]:
    raw = needle.encode()
    encoded = []
    for pad in range(3):
        text = base64.b64encode(b"\0" * pad + raw)
        start = 4 if pad else 0  # the first group mixes in the padding bytes
        end = len(text) - (4 if (pad + len(raw)) % 3 else 0)  # so does an incomplete last
        if end - start >= 8:
            encoded.append(text[start:end])
    return {
        "plain": [raw],
        "hex": [raw.hex().encode(), raw.hex().upper().encode()],
        "base64": encoded,
        # A bytea column prints as hex: base64 inside one (a wamid in a stored event).
        "hex-base64": [v.hex().encode() for v in encoded],
    }


def search(where: str, blob: bytes, needles: list[str]) -> list[Found]:
    found = []
    for needle in needles:
        for form, variants in forms(needle).items():
            if any(v in blob for v in variants):
                found.append(Found(where, needle, form))
    return found


def scan_postgres(url: str, needles: list[str]) -> tuple[list[Found], int]:
    """Every row of every table outside the catalogs, as text; (found, tables scanned)."""
    found: list[Found] = []
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT t::text FROM {}.{} t").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            blob = "\n".join(row[0] for row in conn.execute(query)).encode()
            found += search(f"postgres:{schema}.{table}", blob, needles)
    return found, len(tables)


async def _kafka_records(bootstrap: str) -> dict[str, bytes]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if not t.startswith("__")]
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    blobs: dict[str, bytes] = {}
    try:
        # Every topic's partitions before any assignment: once the consumer is assigned
        # one topic, its metadata updates ask for that topic only.
        by_topic = {
            topic: [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
            for topic in topics
        }
        for topic, partitions in by_topic.items():
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            chunks: list[bytes] = []
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for r in records:
                        chunks += [r.key or b"", r.value or b""]
                        chunks += [k.encode() + b"=" + (v or b"") for k, v in r.headers]
            blobs[topic] = b"\n".join(chunks)
    finally:
        await consumer.stop()
    return blobs


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise AssertionError(f"no partitions for topic {topic}")


def scan_kafka(bootstrap: str, needles: list[str]) -> tuple[list[Found], int]:
    """Keys, values and headers of every record of every topic; (found, records' topics)."""
    blobs = asyncio.run(_kafka_records(bootstrap))
    found = [f for topic, blob in blobs.items() for f in search(f"kafka:{topic}", blob, needles)]
    return found, len(blobs)


def scan_redis(url: str, needles: list[str]) -> tuple[list[Found], int]:
    """Every key and its value, whatever its type; (found, keys scanned)."""
    client = redis.Redis.from_url(url)
    found: list[Found] = []
    count = 0
    try:
        for key in client.scan_iter(count=500):
            count += 1
            kind = _b(client.type(key)).decode()
            values: list[Any] = []
            if kind == "string":
                values = [client.get(key)]
            elif kind == "hash":
                values = [b for kv in client.hgetall(key).items() for b in kv]
            elif kind == "list":
                values = list(client.lrange(key, 0, -1))
            elif kind == "set":
                values = list(client.smembers(key))
            elif kind == "zset":
                scored: list[Any] = list(client.zrange(key, 0, -1, withscores=True))
                values = [pair[0] for pair in scored]
            elif kind == "stream":
                for _, fields in client.xrange(key) or []:
                    values += [b for kv in (fields or {}).items() for b in kv]
            parts = [_b(key), *(_b(v) for v in values)]
            found += search(f"redis:{key.decode(errors='replace')}", b"\n".join(parts), needles)
    finally:
        client.close()
    return found, count


def _b(value: Any) -> bytes:
    if value is None:
        return b""
    return value if isinstance(value, bytes) else str(value).encode()


def scan_logs(paths: list[Path], needles: list[str]) -> list[Found]:
    return [f for p in paths for f in search(f"log:{p.name}", p.read_bytes(), needles)]

"""Whether the services a process depends on answer: what `/readyz` reports.

Each check raises `Unavailable` (from the client library's error) when its service does
not answer, and `ConfigurationError` when the process has none configured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from urbana.config import Settings, conninfo
from urbana.errors import ConfigurationError, Unavailable


@contextmanager
def _answers(service: str, *faults: type[Exception]) -> Iterator[None]:
    """Raise `faults` (and timeouts, refused connections) inside the block as `Unavailable`."""
    caught: tuple[type[Exception], ...] = (*faults, OSError, TimeoutError)
    try:
        yield
    except caught as exc:
        raise Unavailable(f"{service}: {type(exc).__name__}") from exc


async def check_postgres(settings: Settings) -> None:
    """Raise if PostgreSQL does not answer."""
    if not settings.database_url:
        raise ConfigurationError("no database configured")

    def ping() -> None:
        with psycopg.connect(conninfo(settings.database_url or ""), connect_timeout=2) as conn:
            conn.execute("SELECT 1")

    with _answers("postgres", psycopg.OperationalError, psycopg.InterfaceError):
        await asyncio.to_thread(ping)


async def check_kafka(settings: Settings) -> None:
    """Raise if the Kafka bootstrap server does not answer a metadata request."""
    if not settings.kafka_bootstrap:
        raise ConfigurationError("no Kafka bootstrap configured")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=2000)
    with _answers("kafka", KafkaError):
        try:
            await asyncio.wait_for(admin.start(), timeout=3)
            await asyncio.wait_for(admin.list_topics(), timeout=3)
        finally:
            await admin.close()


async def check_redis(client: aioredis.Redis | None) -> None:
    """Raise if Redis does not answer PING."""
    if client is None:
        raise ConfigurationError("no Redis configured")
    with _answers("redis", RedisError):
        await asyncio.wait_for(client.ping(), timeout=2)

"""Whether the services a process depends on answer: what `/readyz` reports."""

from __future__ import annotations

import asyncio

import psycopg
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from urbana.config import ConfigurationError, Settings, conninfo


async def check_postgres(settings: Settings) -> None:
    """Raise if PostgreSQL does not answer."""
    if not settings.database_url:
        raise ConfigurationError("no database configured")

    def ping() -> None:
        with psycopg.connect(conninfo(settings.database_url or ""), connect_timeout=2) as conn:
            conn.execute("SELECT 1")

    await asyncio.to_thread(ping)


async def check_kafka(settings: Settings) -> None:
    """Raise if the Kafka bootstrap server does not answer a metadata request."""
    if not settings.kafka_bootstrap:
        raise ConfigurationError("no Kafka bootstrap configured")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=2000)
    try:
        await asyncio.wait_for(admin.start(), timeout=3)
        await asyncio.wait_for(admin.list_topics(), timeout=3)
    finally:
        await admin.close()


async def check_redis(client: aioredis.Redis | None) -> None:
    """Raise if Redis does not answer PING."""
    if client is None:
        raise ConfigurationError("no Redis configured")
    await asyncio.wait_for(client.ping(), timeout=2)

"""Each adapter reports a service that does not answer as `Unavailable`, from the library's error.

The service is down in the plainest way, a port nobody listens on, so each client library
meets a refused connection and raises its own error; the adapter must hand it on as ours.
(The outage tests stop real PostgreSQL and Redis servers under a running API.)
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from aiokafka.errors import KafkaError
from psycopg_pool import ConnectionPool
from redis.exceptions import RedisError

from urbana.adapters.crypto import PostgresSubjectCipher, parse_master_key
from urbana.adapters.health import check_kafka, check_postgres, check_redis
from urbana.adapters.kafka.producer import Producer, Record
from urbana.adapters.kafka.topics import BUILTIN_TOPICS, create_topics, load_topics
from urbana.adapters.rate_limit import RedisRateLimiter
from urbana.adapters.redis_coord import RedisCoordinator, redis_client
from urbana.application.ingest import StoreUnavailable
from urbana.application.ports import CoordinationUnavailable
from urbana.config import Settings, conninfo
from urbana.errors import ConfigurationError, Unavailable

pytestmark = pytest.mark.integration


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: connecting is refused


@pytest.fixture
def nowhere(closed_port: int) -> str:
    return f"127.0.0.1:{closed_port}"


def assert_unavailable(
    caught: pytest.ExceptionInfo[Unavailable], cause: type[BaseException]
) -> None:
    assert isinstance(caught.value.__cause__, cause), repr(caught.value.__cause__)
    assert caught.value.retry_after > 0


async def test_health_checks_raise_unavailable_for_a_service_that_does_not_answer(
    nowhere: str,
) -> None:
    settings = Settings(
        env="test", database_url=f"postgresql://urbana@{nowhere}/urbana", kafka_bootstrap=nowhere
    )
    with pytest.raises(Unavailable) as postgres:
        await check_postgres(settings)
    assert_unavailable(postgres, psycopg.OperationalError)
    with pytest.raises(Unavailable) as kafka:
        await check_kafka(settings)
    assert_unavailable(kafka, KafkaError)
    client = redis_client(f"redis://{nowhere}")
    try:
        with pytest.raises(Unavailable) as redis:
            await check_redis(client)
    finally:
        await client.aclose()
    assert_unavailable(redis, RedisError)


async def test_a_health_check_without_its_service_configured_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        await check_postgres(Settings(env="test", database_url=None))
    with pytest.raises(ConfigurationError):
        await check_redis(None)


async def test_the_producer_and_the_topic_admin_raise_unavailable_when_the_broker_is_down(
    nowhere: str,
) -> None:
    with pytest.raises(Unavailable) as admin:
        await create_topics(nowhere, BUILTIN_TOPICS[:1])
    assert_unavailable(admin, KafkaError)
    producer = Producer(nowhere, client_id=f"test-{uuid4().hex[:8]}", request_timeout_ms=2000)
    try:
        with pytest.raises(Unavailable) as sending:
            await producer.send_all("urbana.events.v1", [Record(b"k", b"{}", [])])
    finally:
        await producer.close()
    assert_unavailable(sending, KafkaError)


async def test_redis_ports_raise_coordination_unavailable_when_redis_is_down(
    nowhere: str,
) -> None:
    client = redis_client(f"redis://{nowhere}")
    try:
        with pytest.raises(CoordinationUnavailable) as limiter:
            await RedisRateLimiter(client).acquire(uuid4(), 5)
        with pytest.raises(CoordinationUnavailable) as coordinator:
            await RedisCoordinator(client).note_messages({uuid4(): 1})
    finally:
        await client.aclose()
    assert_unavailable(limiter, RedisError)
    assert_unavailable(coordinator, RedisError)


@pytest.fixture
def dead_pool(nowhere: str) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(
        conninfo(f"postgresql://urbana@{nowhere}/urbana"), min_size=1, open=True, timeout=0.5
    )
    try:
        yield pool
    finally:
        pool.close()


def test_the_key_vault_raises_store_unavailable_when_postgres_is_down(
    dead_pool: ConnectionPool,
) -> None:
    cipher = PostgresSubjectCipher(dead_pool, os.urandom(32))
    with pytest.raises(StoreUnavailable) as sealing:
        cipher.seal(uuid4(), b"texto")
    assert isinstance(sealing.value.__cause__, psycopg.OperationalError)
    with pytest.raises(StoreUnavailable):
        cipher.open(uuid4(), b"\x00" * 40)


def test_bad_settings_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="32 bytes"):
        parse_master_key("c2hvcnQ")
    topics = tmp_path / "topics.yaml"
    topics.write_text("topics: [{partitions: 3}]\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="bad topic entry"):
        load_topics(topics)

"""Every wait for PostgreSQL is bounded by the store wait: a call fails in seconds, not minutes."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import OperationalError

from urbana.adapters.embedded import EmbeddedStack, ServiceUrls
from urbana.adapters.postgres.schema import ensure_schema
from urbana.adapters.postgres.store import Store, open_store
from urbana.application.ingest import StoreUnavailable
from urbana.config import conninfo
from urbana.domain.tenant import Tenant

pytestmark = pytest.mark.integration

WAIT_S = 1.0
# Generous: the old code took ten retries of a five-second pool wait (over 50 s).
BOUND_S = 5 * WAIT_S


@pytest.fixture
def own_postgres(services: ServiceUrls) -> Iterator[EmbeddedStack]:
    # Not under pytest's tmp_path, whose root another pytest run resets to mode 0700.
    with tempfile.TemporaryDirectory(prefix="urbana-timeouts-") as tmp:
        stack = EmbeddedStack(
            Path(tmp) / "pg", kafka_bootstrap=services.kafka, redis_url=services.redis
        )
        stack.start()
        try:
            yield stack
        finally:
            stack.stop()


def elapsed(fn: Callable[[], object]) -> tuple[float, BaseException | None]:
    began = time.monotonic()
    try:
        fn()
    except Exception as exc:
        return time.monotonic() - began, exc
    return time.monotonic() - began, None


def assert_store_fault(failure: BaseException | None) -> None:
    """The library's fault reaches the caller as ours, with the library's as its cause."""
    assert isinstance(failure, StoreUnavailable), repr(failure)
    assert isinstance(failure.__cause__, OperationalError | psycopg.OperationalError), repr(
        failure.__cause__
    )


def test_with_the_server_stopped_reads_and_writes_fail_within_the_wait(
    own_postgres: EmbeddedStack,
) -> None:
    schema = f"t_{uuid4().hex[:8]}"
    ensure_schema(own_postgres.urls.postgres, schema)
    store = open_store(own_postgres.urls.postgres, os.urandom(32), schema=schema, wait_s=WAIT_S)
    try:
        tenant_id, _ = store.app.register_tenant("Loja antes da queda")
        own_postgres.stop()
        took, failure = elapsed(lambda: store.app.get(Tenant, tenant_id))
        assert_store_fault(failure)
        assert took < BOUND_S, f"read failed after {took:.1f}s"
        took, failure = elapsed(lambda: store.app.register_tenant("Loja durante a queda"))
        assert_store_fault(failure)
        assert took < BOUND_S, f"write failed after {took:.1f}s"
        own_postgres.start()
        deadline = time.monotonic() + 30
        while True:  # the pools reconnect by themselves
            try:
                assert store.app.get(Tenant, tenant_id).name == "Loja antes da queda"
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        store.close()


def test_a_write_behind_a_held_table_lock_gives_up_within_the_wait(
    services: ServiceUrls, master_key: bytes, schema: str
) -> None:
    ensure_schema(services.postgres, schema)
    store: Store = open_store(services.postgres, master_key, schema=schema, wait_s=WAIT_S)
    try:
        store.app.register_tenant("Loja")
        with psycopg.connect(conninfo(services.postgres, schema)) as blocker:
            # The mode every write takes: another writer stuck while holding it.
            blocker.execute("LOCK TABLE urbana_events IN EXCLUSIVE MODE")
            took, failure = elapsed(lambda: store.app.register_tenant("Loja bloqueada"))
            blocker.rollback()
        assert_store_fault(failure)
        assert took < BOUND_S, f"write gave up after {took:.1f}s"
        store.app.register_tenant("Loja bloqueada")  # the lock is gone: it goes through
    finally:
        store.close()

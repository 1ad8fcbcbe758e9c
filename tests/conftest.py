"""Test harness: real services, started once per session, isolated data per test.

By default the embedded services (PostgreSQL+pgvector, Tansu, Redis) are started
in a temporary directory. Set URBANA_TEST_DATABASE_URL / URBANA_TEST_KAFKA_BOOTSTRAP /
URBANA_TEST_REDIS_URL to run against external ones instead. Each test that needs
the store gets its own PostgreSQL schema.
"""

from __future__ import annotations

import base64
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import uuid4

import pytest

if TYPE_CHECKING:
    from urbana.adapters.embedded import ServiceUrls
    from urbana.adapters.postgres.store import Store

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())


@pytest.fixture(scope="session")
def services() -> Iterator[ServiceUrls]:
    from urbana.adapters.embedded import EmbeddedStack

    with tempfile.TemporaryDirectory(prefix="urbana-test-") as tmp:
        stack = EmbeddedStack(
            Path(tmp),
            postgres_url=os.environ.get("URBANA_TEST_DATABASE_URL"),
            kafka_bootstrap=os.environ.get("URBANA_TEST_KAFKA_BOOTSTRAP"),
            redis_url=os.environ.get("URBANA_TEST_REDIS_URL"),
        )
        try:
            yield stack.start()
        finally:
            stack.stop()


@pytest.fixture
def master_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def schema() -> str:
    return f"t_{uuid4().hex[:12]}"


@pytest.fixture
def store(services: ServiceUrls, master_key: bytes, schema: str) -> Iterator[Store]:
    """The event store on a schema of the test's own, as the composition root opens it."""
    from pydantic import SecretStr

    from urbana.adapters.bootstrap import build_store
    from urbana.config import Settings

    settings = Settings(
        env="test",
        database_url=services.postgres,
        database_schema=schema,
        master_key=SecretStr(base64.urlsafe_b64encode(master_key).decode()),
        pool_size=2,
    )
    opened = build_store(settings)
    try:
        yield opened
    finally:
        opened.close()


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port

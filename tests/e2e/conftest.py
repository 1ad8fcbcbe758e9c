"""An API server on the real (embedded) services, in a thread, one schema per test module."""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import pytest
import uvicorn
from pydantic import SecretStr

from tests.e2e.fakes import Outside, serving_outside
from urbana.adapters.bootstrap import Overrides, build_store
from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.http.app import create_app
from urbana.adapters.postgres.store import Store
from urbana.config import Settings

ADMIN_KEY = "test-admin-key-" + "x" * 16
JWT_SECRET = "test-jwt-secret-" + "y" * 32


@dataclass
class Api:
    url: str
    store: Store  # a second handle on the same schema, for assertions
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread

    def event_count(self) -> int:
        return self.store.app.recorder.max_notification_id() or 0


class ServerThread(threading.Thread):
    def __init__(self, server: uvicorn.Server) -> None:
        super().__init__(daemon=True)
        self.server = server

    def run(self) -> None:
        asyncio.run(self.server.serve())


def start_api(
    services: ServiceUrls,
    schema: str,
    master_key: bytes,
    roles: tuple[str, ...] = (),
    *,
    wiring: Overrides | None = None,
    **overrides: Any,
) -> Api:
    """The API (and `roles`) through the composition root; `overrides` are settings,
    `wiring` what the composition root takes instead of what they would make."""
    settings = Settings(
        env="test",
        database_url=overrides.pop("database_url", services.postgres),
        database_schema=schema,
        kafka_bootstrap=services.kafka,
        redis_url=overrides.pop("redis_url", services.redis),
        master_key=SecretStr(base64.urlsafe_b64encode(master_key).decode()),
        admin_api_key=SecretStr(ADMIN_KEY),
        jwt_secret=SecretStr(JWT_SECRET),
        pool_size=3,
        **overrides,
    )
    config = uvicorn.Config(
        create_app(settings, roles, **(wiring or {})),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = ServerThread(server)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("API server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    store = build_store(settings.model_copy(update={"pool_size": 2}))
    return Api(
        url=f"http://127.0.0.1:{port}", store=store, settings=settings, server=server, thread=thread
    )


def stop_api(api: Api) -> None:
    api.server.should_exit = True
    api.thread.join(timeout=30)
    api.store.close()


@contextmanager
def running_api(
    services: ServiceUrls,
    name: str,
    roles: tuple[str, ...] = (),
    *,
    llm: Outside | None = None,
    **overrides: Any,
) -> Iterator[Api]:
    """A module's API (and `roles`) on a schema, topic and consumer groups of its own;
    with `llm`, the OpenAI client talks to that fake."""
    run = uuid4().hex[:8]
    if llm is not None:
        overrides = {
            "openai_api_key": "sk-test-e2e",
            "openai_base_url": f"{llm.url}/v1",
            "llm_model": "gpt-test",
            "llm_fallback_model": "gpt-test-fallback",
            **overrides,
        }
    api = start_api(
        services,
        f"{name}_{run}",
        os.urandom(32),
        roles,
        events_topic=f"e2e.events.{run}",
        consumer_group_prefix=f"e2e.{run}",
        **overrides,
    )
    try:
        yield api
    finally:
        stop_api(api)


@pytest.fixture(scope="module")
def outside() -> Iterator[Outside]:
    """The fake OpenAI and Cloud API of a module's tests (tests.e2e.fakes)."""
    with serving_outside() as fake:
        yield fake


@pytest.fixture(scope="module")
def api(services: ServiceUrls) -> Iterator[Api]:
    running = start_api(services, f"e2e_{uuid4().hex[:10]}", os.urandom(32))
    try:
        yield running
    finally:
        stop_api(running)

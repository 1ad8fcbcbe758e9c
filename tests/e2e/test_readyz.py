"""`/readyz`: 200 when PostgreSQL, Kafka and Redis answer; 503 naming the one that does not.

Each "down" test runs that one service on its own (the session's are shared by other
tests), stops it under a running API, and asks again.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.e2e.conftest import Api, start_api, stop_api
from urbana.adapters.embedded import EmbeddedStack, ServiceUrls

pytestmark = pytest.mark.e2e

CHECKS = ("postgres", "kafka", "redis")


def own_service(services: ServiceUrls, which: str, data_dir: Path) -> EmbeddedStack:
    """A stack that starts only `which`; the others are the session's, given by URL."""
    given: dict[str, Any] = {
        "postgres_url": services.postgres,
        "kafka_bootstrap": services.kafka,
        "redis_url": services.redis,
    }
    given.pop({"postgres": "postgres_url", "kafka": "kafka_bootstrap", "redis": "redis_url"}[which])
    return EmbeddedStack(data_dir, **given)


@pytest.fixture(params=CHECKS)
def one_down(request: pytest.FixtureRequest, services: ServiceUrls) -> Iterator[tuple[str, Api]]:
    """An API whose `request.param` service is its own, already stopped."""
    which: str = request.param
    # Not under pytest's tmp_path, whose root another pytest run resets to mode 0700.
    with tempfile.TemporaryDirectory(prefix=f"urbana-readyz-{which}-") as tmp:
        stack = own_service(services, which, Path(tmp))
        urls = stack.start()
        try:
            api = start_api(
                replace(services, **{which: getattr(urls, which)}),
                f"readyz_{uuid4().hex[:8]}",
                os.urandom(32),
            )
            try:
                assert_ready(api)
                stack.stop()
                yield which, api
            finally:
                stop_api(api)
        finally:
            stack.stop()


def assert_ready(api: Api) -> None:
    r = httpx.get(f"{api.url}/readyz", timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "checks": dict.fromkeys(CHECKS, "ok")}


def test_ready_when_every_dependency_answers(api: Api) -> None:
    assert_ready(api)


def test_not_ready_is_503_with_retry_after_naming_the_dependency_down(
    one_down: tuple[str, Api],
) -> None:
    which, api = one_down
    r = httpx.get(f"{api.url}/readyz", timeout=30)
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) > 0
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 503
    assert body["title"] == "not ready"
    assert body["detail"] == f"not reachable: {which}"
    assert body["failing"] == [which]
    assert body["checks"][which].startswith("error: ")
    assert {k: v for k, v in body["checks"].items() if k != which} == {
        k: "ok" for k in CHECKS if k != which
    }

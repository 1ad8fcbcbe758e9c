"""A read the database holds up is answered 503 with Retry-After once
URBANA_READ_TIMEOUT_S has passed, instead of holding the request (and a pooled
connection) for as long as the lock lasts; the credential check that travels with the
read is bounded the same way. Once the lock is gone the same read answers 200."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from uuid import uuid4

import httpx
import psycopg
import pytest

from tests.e2e.access_helpers import Team, bearer, team
from tests.e2e.conftest import Api, start_api, stop_api
from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.postgres.schema import EVENTS_TABLE
from urbana.config import conninfo
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

READ_TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def api(services: ServiceUrls) -> Iterator[Api]:
    schema = f"e2e_read_timeout_{uuid4().hex[:8]}"
    made = start_api(services, schema, os.urandom(32), read_timeout_s=READ_TIMEOUT_S)
    try:
        yield made
    finally:
        stop_api(made)


@pytest.fixture(scope="module")
def crew(api: Api) -> Team:
    return team(api)


def conversations(api: Api, crew: Team) -> httpx.Response:
    headers = bearer(crew.tokens[Role.SUPERVISOR])
    return httpx.get(f"{api.url}/v1/conversations", headers=headers, timeout=30)


# The read model a list reads, and the event table the credential check reads.
@pytest.mark.parametrize("locked", ["rm_conversations", EVENTS_TABLE])
def test_a_read_held_up_by_a_lock_is_a_503_after_the_read_timeout(
    api: Api, crew: Team, locked: str
) -> None:
    assert conversations(api, crew).status_code == 200
    url = conninfo(api.settings.database_url or "", api.settings.database_schema)
    with psycopg.connect(url) as holder:
        holder.execute(f"LOCK TABLE {locked} IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        answer = conversations(api, crew)
        took = time.monotonic() - started
        holder.rollback()
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert int(answer.headers["retry-after"]) >= 1
    # Cancelled at the timeout, not at the lock's end (the lock was held as long as the
    # request took: a bound well under the test's own 30 s says the server gave up).
    assert READ_TIMEOUT_S <= took < 10
    assert conversations(api, crew).status_code == 200

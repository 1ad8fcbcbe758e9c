"""Brute force on POST /v1/auth/login: failed sign-ins are limited per email and per
client address (counted in Redis, shared by every API process); past a limit the answer
is 429 problem+json with Retry-After, the right password included, and nothing is
appended. Redis down: 503 with Retry-After, never an unlimited login.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.e2e.access_helpers import PASSWORD, access, login, new_email
from tests.e2e.conftest import Api, start_api, stop_api
from tests.redis_server import RedisServer
from urbana.adapters.embedded import ServiceUrls
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
PER_EMAIL = 3
PER_ADDRESS = 8
WINDOW_S = 600


def limited_api(services: ServiceUrls, **overrides: Any) -> Api:
    return start_api(
        services,
        f"login_{uuid4().hex[:10]}",
        os.urandom(32),
        login_attempts_per_email=PER_EMAIL,
        login_attempts_per_address=PER_ADDRESS,
        login_window_s=WINDOW_S,
        **overrides,
    )


@pytest.fixture
def api(services: ServiceUrls) -> Iterator[Api]:
    # One API a test: the address (127.0.0.1) is the same for every test of the module.
    running = limited_api(services)
    try:
        yield running
    finally:
        stop_api(running)


def user(api: Api) -> str:
    tenant, _ = api.store.app.register_tenant(f"Login {uuid4().hex[:8]}")
    email = new_email()
    access(api).add_user(tenant, email=email, role=Role.ATTENDANT, password=PASSWORD)
    return email


def assert_too_many(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert 1 <= int(answer.headers["retry-after"]) <= WINDOW_S


def test_past_the_email_limit_the_right_password_is_429_too(api: Api) -> None:
    email, other = user(api), user(api)
    for _ in range(PER_EMAIL):
        assert login(api, email, "wrong password!").status_code == 401
    before = api.event_count()
    assert_too_many(login(api, email, "wrong password!"))
    assert_too_many(login(api, email))  # locked: the right password does not get through
    assert api.event_count() == before
    assert login(api, other).status_code == 200  # other emails from the address still may


def test_past_the_address_limit_every_email_from_it_is_429(api: Api) -> None:
    for _ in range(PER_ADDRESS):
        assert login(api, new_email(), "wrong password!").status_code == 401
    assert_too_many(login(api, user(api)))


def test_successful_sign_ins_do_not_count(api: Api) -> None:
    email = user(api)
    for _ in range(2 * PER_ADDRESS):
        assert login(api, email).status_code == 200
    for _ in range(PER_EMAIL - 1):
        assert login(api, email, "wrong password!").status_code == 401
    assert login(api, email).status_code == 200


def test_with_redis_down_a_login_is_503_with_retry_after(
    services: ServiceUrls, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    running = limited_api(services, redis_url=redis.url)
    try:
        email = user(running)
        assert login(running, email).status_code == 200
        redis.stop()
        answer = login(running, email)
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == PROBLEM
        assert int(answer.headers["retry-after"]) >= 1
    finally:
        stop_api(running)
        redis.stop()

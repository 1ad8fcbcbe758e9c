"""The HTTP layer answers our exception tree, one status per class, and nothing else.

A small app with the real handlers raises each error from a route; the app factory is
checked to map no foreign exception type.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from urbana.adapters.crypto import TamperedRecord
from urbana.adapters.http.app import create_app
from urbana.adapters.http.errors import add_error_handlers
from urbana.application.ingest import StoreUnavailable
from urbana.application.ports import CoordinationUnavailable
from urbana.config import Settings
from urbana.domain.errors import (
    AIReplyNotAllowed,
    AlreadyConnected,
    InvalidInput,
    InvalidTransition,
    NotFound,
    StaleStatus,
)
from urbana.errors import ConfigurationError, Rejected, Unavailable, UrbanaError

PROBLEM = "application/problem+json"


def app_raising(exc: BaseException) -> FastAPI:
    app = FastAPI()
    add_error_handlers(app)

    @app.get("/fails")
    async def fails() -> None:
        raise exc

    return app


async def get(app: FastAPI, *, raise_app_exceptions: bool = True) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/fails")


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (Rejected(413, "body larger than 1 MiB"), 413),
        (Rejected(401, "X-Hub-Signature-256 does not match the body"), 401),
        (NotFound("no tenant 1"), 404),
        (AlreadyConnected("route taken"), 409),
        (InvalidTransition("closed"), 409),
        (AIReplyNotAllowed("a human owns it"), 409),
        (InvalidInput("empty text"), 422),
        (StaleStatus("already read"), 422),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
async def test_client_faults_answer_their_status(exc: UrbanaError, status: int) -> None:
    r = await get(app_raising(exc))
    assert r.status_code == status
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["status"] == status
    assert r.json()["detail"] == str(exc)
    assert "retry-after" not in r.headers


@pytest.mark.parametrize(
    ("exc", "retry_after"),
    [
        (Unavailable("the ingest writer stopped"), "5"),
        (Unavailable("cache", retry_after=2.2), "3"),
        (Unavailable("blip", retry_after=0.1), "1"),
        (StoreUnavailable("no commit within 2s"), "5"),
        (CoordinationUnavailable("redis down"), "5"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
async def test_unavailable_is_503_with_its_retry_after(exc: Unavailable, retry_after: str) -> None:
    r = await get(app_raising(exc))
    assert r.status_code == 503
    assert r.headers["content-type"] == PROBLEM
    assert r.headers["retry-after"] == retry_after
    assert r.json()["detail"] == type(exc).__name__  # not the cause's text


@pytest.mark.parametrize(
    "exc",
    [ConfigurationError("URBANA_DATABASE_URL is not set"), TamperedRecord("sealed data of x")],
    ids=lambda v: type(v).__name__,
)
async def test_our_own_faults_are_500_and_logged_with_their_traceback(
    exc: UrbanaError, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="urbana.http"):
        r = await get(app_raising(exc))
    assert r.status_code == 500
    assert r.headers["content-type"] == PROBLEM
    assert "detail" not in r.json()  # settings and records stay in the log
    (record,) = [r for r in caplog.records if r.name == "urbana.http"]
    assert record.exc_info is not None
    assert record.exc_info[1] is exc


FOREIGN: list[Callable[[], BaseException]] = [
    lambda: psycopg.OperationalError("connection refused"),
    lambda: RedisError("Connection refused"),
    lambda: TimeoutError(),
    lambda: RuntimeError("503 service temporarily unavailable"),
]


@pytest.mark.parametrize("make", FOREIGN, ids=lambda m: type(m()).__name__)
async def test_a_foreign_exception_is_a_500_problem_whatever_its_type_or_text(
    make: Callable[[], BaseException],
) -> None:
    r = await get(app_raising(make()), raise_app_exceptions=False)
    assert r.status_code == 500
    assert r.headers["content-type"] == PROBLEM
    assert r.json() == {"type": "about:blank", "title": "internal error", "status": 500}


async def test_a_foreign_exception_goes_on_to_the_server_which_logs_its_traceback() -> None:
    exc = psycopg.OperationalError("connection refused")
    with pytest.raises(psycopg.OperationalError) as caught:
        await get(app_raising(exc))
    assert caught.value is exc


def test_the_app_maps_only_the_framework_and_our_tree() -> None:
    app = create_app(Settings(env="test"))
    mapped = {key for key in app.exception_handlers if isinstance(key, type)}
    foreign = {
        key
        for key in mapped
        if key is not Exception
        and not key.__module__.startswith(("urbana.", "fastapi.", "starlette."))
    }
    assert foreign == set()
    assert UrbanaError in mapped
    assert not any(isinstance(key, int) for key in app.exception_handlers)


def test_a_rejection_is_a_client_fault() -> None:
    with pytest.raises(ValueError, match="4xx"):
        Rejected(503, "not ours to refuse")


class _Credentials(BaseModel):
    email: str = Field(max_length=10)
    password: str = Field(min_length=12)
    bot_token: str = Field(pattern=r"^[0-9]+:[A-Za-z0-9_-]{20,}$")


async def test_a_refused_credential_is_named_but_not_echoed_back() -> None:
    app = FastAPI()
    add_error_handlers(app)

    @app.post("/login")
    async def login(body: _Credentials) -> None:
        raise AssertionError("not reached")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        sent = {"email": "far-too-long@x.test", "password": "hunter2", "bot_token": "1:short"}
        answer = await client.post("/login", json=sent)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == PROBLEM
    errors = {tuple(e["loc"]): e for e in answer.json()["errors"]}
    assert set(errors) == {("body", "email"), ("body", "password"), ("body", "bot_token")}
    assert errors[("body", "email")]["input"] == "far-too-long@x.test"  # not a secret
    assert errors[("body", "password")]["input"] == "[redacted]"
    assert errors[("body", "bot_token")]["input"] == "[redacted]"
    assert "hunter2" not in answer.text
    assert "1:short" not in answer.text

    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.post("/login", json={"password": "hunter2-hunter2"})
    assert answer.status_code == 422
    missing = {tuple(e["loc"]): e["input"] for e in answer.json()["errors"]}
    assert missing == {
        ("body", "email"): {"password": "[redacted]"},
        ("body", "bot_token"): "[redacted]",
    }
    assert "hunter2" not in answer.text

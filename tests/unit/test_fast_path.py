"""The webhook fast path: which requests it takes, and how it answers what they raise."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message

from urbana.adapters.http import fast_path, webhooks
from urbana.errors import Unavailable


def _scope(method: str, path: str, root_path: str = "") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": root_path,
        "headers": [],
        "query_string": b"",
    }


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/webhooks/whatsapp-cloud", "/webhooks/whatsapp-cloud"),
        ("/webhooks/evolution/s3cr3t", "/webhooks/evolution/{webhook_secret}"),
        ("/webhooks/zapi/s3cr3t", "/webhooks/zapi/{webhook_secret}"),
    ],
)
def test_takes_the_three_webhook_posts_named_by_their_template(path: str, template: str) -> None:
    scope = _scope("POST", path)
    assert fast_path.handles(scope)
    assert scope["route"].path == template  # what the log line and the span name


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/webhooks/whatsapp-cloud"),  # Meta's handshake goes through the router
        ("PUT", "/webhooks/zapi/s3cr3t"),  # the router answers 405
        ("POST", "/webhooks/evolution/"),
        ("POST", "/webhooks/evolution/a/b"),
        ("POST", "/webhooks/telegram/s3cr3t"),
        ("POST", "/v1/conversations"),
        ("POST", "/webhooks/whatsapp-cloud/"),
    ],
)
def test_leaves_everything_else_to_the_router(method: str, path: str) -> None:
    assert not fast_path.handles(_scope(method, path))


def test_a_root_path_is_not_part_of_the_match() -> None:
    scope = _scope("POST", "/api/webhooks/zapi/s3cr3t", root_path="/api")
    assert fast_path.handles(scope)


def test_its_templates_are_the_routers_webhook_posts() -> None:
    """The router's declarations (OpenAPI, the routed path) and the fast path agree."""
    declared = {
        route.path
        for route in webhooks.router.routes
        if isinstance(route, APIRoute) and "POST" in (route.methods or ())
    }
    assert declared == {fast_path.CLOUD.path, fast_path.EVOLUTION.path, fast_path.ZAPI.path}


async def _call(raising: BaseException | None) -> tuple[int, dict[str, str], dict[str, Any]]:
    async def endpoint(request: Request) -> Response:
        if raising is not None:
            raise raising
        return JSONResponse({"status": "ok"})

    scope = _scope("POST", "/webhooks/zapi/s3cr3t")
    assert fast_path.handles(scope)
    scope["urbana.endpoint"] = endpoint
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await fast_path.WEBHOOKS(scope, receive, send)
    start, body = sent[0], sent[1]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, orjson.loads(body["body"])


def test_an_unavailable_store_is_503_with_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "urbana.http")
    status, headers, body = asyncio.run(_call(Unavailable("store down", retry_after=2.0)))
    assert (status, headers["retry-after"], body["status"]) == (503, "2", 503)
    assert headers["content-type"] == "application/problem+json"
    request_lines = [r for r in caplog.records if r.getMessage() == "request"]
    assert [(r.__dict__["route"], r.__dict__["status"]) for r in request_lines] == [
        ("/webhooks/zapi/{webhook_secret}", 503)
    ]
    assert "s3cr3t" not in caplog.text


def test_a_bug_is_a_logged_500_problem(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "urbana.http")
    status, headers, body = asyncio.run(_call(RuntimeError("boom")))
    assert (status, body["title"]) == (500, "internal error")
    assert headers["content-type"] == "application/problem+json"
    assert any(r.exc_info and r.levelno == logging.ERROR for r in caplog.records)


def test_an_answer_goes_out_as_the_endpoint_made_it() -> None:
    assert asyncio.run(_call(None))[::2] == (200, {"status": "ok"})

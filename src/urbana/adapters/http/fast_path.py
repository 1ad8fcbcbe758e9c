"""The gateways' webhook POSTs, answered without FastAPI's router and dependency machinery.

A webhook is the one request a busy tenant sends hundreds of times a second, and on
its way through FastAPI most of its CPU went to the framework (its middlewares, the
match against every route, solving the endpoint's dependencies) rather than to us.
`FastPath` recognises the three webhook POSTs by their path and calls the same
endpoint functions the router declares (so the OpenAPI document, the tests of the
routed path and this one describe one behaviour), wrapped in the same request log,
metrics and tracing middlewares as every other request. Any other request, a webhook's
GET handshake included, goes through FastAPI. See docs/architecture.md, Ingest.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from urbana.adapters import tracing
from urbana.adapters.http import observe, webhooks
from urbana.adapters.http.errors import answer
from urbana.adapters.http.problems import problem
from urbana.errors import UrbanaError

log = logging.getLogger("urbana.http")

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class RouteName:
    """What the request log and the server span read from `scope["route"]`: the template."""

    path: str

    @property
    def path_format(self) -> str:
        return self.path


CLOUD = RouteName("/webhooks/whatsapp-cloud")
EVOLUTION = RouteName("/webhooks/evolution/{webhook_secret}")
ZAPI = RouteName("/webhooks/zapi/{webhook_secret}")


def _match(path: str) -> tuple[RouteName, Endpoint] | None:
    """The webhook POST `path` names, with its endpoint bound to the path's secret."""
    if path == CLOUD.path:
        return CLOUD, webhooks.cloud_webhook
    kind, _, secret = path.removeprefix("/webhooks/").partition("/")
    # One non-empty segment, as the router's `{webhook_secret}` matches.
    if not secret or "/" in secret or not path.startswith("/webhooks/"):
        return None
    if kind == "evolution":
        return EVOLUTION, lambda request: webhooks.evolution_webhook(secret, request)
    if kind == "zapi":
        return ZAPI, lambda request: webhooks.zapi_webhook(secret, request)
    return None


async def _answer(scope: Scope, receive: Receive, send: Send) -> None:
    endpoint: Endpoint = scope["urbana.endpoint"]
    request = Request(scope, receive)
    try:
        response = await endpoint(request)
    except UrbanaError as exc:  # Unavailable: 503 + Retry-After, as the routed path answers
        response = answer(request, exc)
    except ClientDisconnect:
        return  # nobody to answer, and nothing was recorded
    except Exception:
        log.exception("POST %s: internal error", scope["route"].path)
        response = problem(500, "internal error")
    await response(scope, receive, send)


def handles(scope: Scope) -> bool:
    """Whether `scope` is a webhook POST; if so it is readied for `WEBHOOKS`."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    matched = _match(path)
    if matched is None:
        return False
    scope["route"], scope["urbana.endpoint"] = matched
    return True


# The layers every request has (one log line and one latency observation, a server
# span), around the endpoint.
WEBHOOKS: ASGIApp = observe.RequestLog(tracing.TracedRequests(_answer))

"""The gateways' webhook POSTs, answered without FastAPI's router and dependency machinery.

A webhook is the one request a busy tenant sends hundreds of times a second, and on
its way through FastAPI most of its CPU went to the framework (its middlewares, the
match against every route, solving the endpoint's dependencies) rather than to us.
`handles` recognises the three webhook POSTs by their path; `WEBHOOKS` calls the
endpoint functions the router declares, with the router's own route in the scope (so
the OpenAPI document, the routed path and this one describe one behaviour), wrapped in
the same request log, metrics and tracing middlewares as every other request. Any other
request, a webhook's GET handshake included, goes through FastAPI. See
docs/architecture.md, The flow of one message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi.routing import APIRoute
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


def _declared(endpoint: Callable[..., Awaitable[Response]]) -> APIRoute:
    """The router's POST route of `endpoint`: its template names the request's log line
    and span, as for a routed request."""
    for route in webhooks.router.routes:
        if (
            isinstance(route, APIRoute)
            and route.endpoint is endpoint
            and "POST" in (route.methods or ())
        ):
            return route
    raise LookupError(f"no POST route for {endpoint.__name__}")


CLOUD = _declared(webhooks.cloud_webhook)
EVOLUTION = _declared(webhooks.evolution_webhook)
ZAPI = _declared(webhooks.zapi_webhook)


def _match(path: str) -> tuple[APIRoute, Endpoint] | None:
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

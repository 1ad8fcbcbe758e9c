"""Seeing inside a process over HTTP: `GET /metrics` (Prometheus), `GET /v1/status`
(the same figures as JSON, for a tenant's admin), and one log line per request."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from urbana.adapters import logs, metrics
from urbana.adapters.http.access import ADMIN_ERRORS
from urbana.adapters.http.auth import Admin, v1_router
from urbana.adapters.http.problems import problem

log = logging.getLogger("urbana.http")

Figures = Callable[[Request], Mapping[str, Any]]

router = v1_router(tags=["operations"])


class RequestLog:
    """One log line and one `urbana_http_request_seconds` observation per HTTP request.

    The line names the route's template (`/webhooks/evolution/{webhook_secret}`), never
    the path or the query string, which may carry secrets or a phone number.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        logs.begin()
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before it answers

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - started
            route = logs.route_of(scope)
            metrics.HTTP_SECONDS.labels(scope["method"], route, str(status)).observe(seconds)
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                },
            )


def metrics_response(request: Request, token: SecretStr | None, figures: Figures) -> Response:
    """The Prometheus text, once the caller shows the token (when one is set)."""
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return problem(
                401,
                "unauthorized",
                "GET /metrics needs the metrics token as a bearer token",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            return problem(403, "forbidden", "wrong metrics token")
    return Response(metrics.exposition(lambda: figures(request)), media_type=metrics.CONTENT_TYPE)


def install_metrics(app: FastAPI, token: SecretStr | None, figures: Figures) -> None:
    """`GET /metrics` on `app` (the API, or a worker's metrics server)."""

    @app.get("/metrics", include_in_schema=False)
    async def metrics_text(request: Request) -> Response:
        return metrics_response(request, token, figures)


def api_figures(request: Request) -> dict[str, Any]:
    """The API process's figures: ingest group commits, the live feed, and its roles."""
    state = request.app.state
    committer = state.container.ingestor.committer
    return {
        "ingest": {
            "batches": committer.batches,
            "items": committer.items,
            "mean_batch": round(committer.items / committer.batches, 2)
            if committer.batches
            else 0.0,
            "store_down": committer.gate.down,
            "refused_while_down": committer.gate.refused,
        },
        "store": {"down": committer.gate.down, "refused": committer.gate.refused},
        "live": state.live.metrics(),
        **state.runtime.metrics(),
    }


@router.get(
    "/status",
    responses={
        **ADMIN_ERRORS,
        200: {
            "description": "This process's figures",
            "content": {
                "application/json": {
                    "example": {
                        "ingest": {"batches": 3, "items": 4, "mean_batch": 1.33},
                        "live": {"subscribers": 1, "position": 42, "following": True},
                        "relay": {"lag_events": 0, "last_position": 42},
                    }
                }
            },
        },
    },
    summary="This process's figures as JSON (what /metrics exposes, and more)",
)
async def status(principal: Admin, request: Request) -> JSONResponse:
    """The API process that answers: ingest group commits (batches, items, whether the
    store is taken as down and how many webhooks were refused meanwhile), the live feed,
    and the figures of the roles it runs (relay position and lag, projections, workers,
    the scheduler)."""
    figures = api_figures(request)
    figures.pop("store")  # it is under "ingest" here
    return JSONResponse(figures)


def metrics_app(token: SecretStr | None, figures: Callable[[], Mapping[str, Any]]) -> FastAPI:
    """A worker process's own HTTP server: `GET /metrics` and `GET /healthz`, nothing else."""
    app = FastAPI(title="Urbana worker", openapi_url=None, docs_url=None, redoc_url=None)
    install_metrics(app, token, lambda _: figures())

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(RequestLog)
    return app


async def serve_until(
    app: FastAPI, host: str, port: int, stop: asyncio.Event, started: Callable[[str], None]
) -> None:
    """Serve `app` until `stop` is set; `started` is told the bound URL. It fails (rather
    than leave a worker running unseen) when the port cannot be bound."""
    import uvicorn

    class WithoutSignals(uvicorn.Server):
        # The worker's own signal handlers set `stop`, which stops this server too.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
        log_config=None,
    )
    server = WithoutSignals(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise RuntimeError(f"the metrics server did not start on {host}:{port}")
        await asyncio.sleep(0.02)
    bound_host, bound_port = server.servers[0].sockets[0].getsockname()[:2]
    started(f"http://{bound_host}:{bound_port}")
    try:
        await stop.wait()
    finally:
        server.should_exit = True
        await task

"""The FastAPI application; its lifespan is where the container is built and closed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from urbana.adapters.bootstrap import (
    Container,
    build,
    check_kafka,
    check_postgres,
    check_redis,
)
from urbana.adapters.http.problems import problem
from urbana.config import Settings

log = logging.getLogger(__name__)


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


def create_app(settings: Settings) -> FastAPI:
    """Build the ASGI app; pools and clients are made in the lifespan, not here."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        container = await build(settings)
        app.state.container = container
        try:
            yield
        finally:
            await container.aclose()

    app = FastAPI(title="Urbana", version="0.1.0", lifespan=lifespan)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(422, "invalid request", errors=exc.errors())

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(container: ContainerDep) -> JSONResponse:
        checks: dict[str, Awaitable[None]] = {
            "postgres": check_postgres(settings),
            "kafka": check_kafka(settings),
            "redis": check_redis(container.redis),
        }
        results = await asyncio.gather(*checks.values(), return_exceptions=True)
        status = {
            name: ("ok" if not isinstance(r, BaseException) else f"error: {type(r).__name__}")
            for name, r in zip(checks, results, strict=True)
        }
        if all(v == "ok" for v in status.values()):
            return JSONResponse({"status": "ready", "checks": status})
        return problem(503, "not ready", checks=status, headers={"Retry-After": "5"})

    return app

"""How our exception tree answers over HTTP: one status per class, all problem+json.

Only `urbana.errors` classes are mapped here: the adapters have already turned the
libraries' exceptions into them where they called the library, so no foreign type (and
no message text) decides a status. See docs/architecture.md, Failure handling.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from urbana.adapters import logs
from urbana.adapters.http.problems import problem
from urbana.domain.errors import (
    AlreadyTaken,
    DomainError,
    InvalidTransition,
    NotAuthenticated,
    NotFound,
)
from urbana.errors import ConfigurationError, Rejected, Unavailable, UrbanaError

log = logging.getLogger("urbana.http")

# A field whose value is a credential: a refusal names it but does not echo it back.
_SECRET_FIELD = re.compile(r"password|token|secret|api_?key|jwt_?key", re.IGNORECASE)
REDACTED = "[redacted]"


def _without_secrets(errors: Sequence[Any]) -> list[Any]:
    """The framework's validation errors, with the value of any credential field masked."""
    masked = []
    for error in errors:
        if isinstance(error, dict) and "input" in error:
            loc = error.get("loc", ())
            if any(isinstance(part, str) and _SECRET_FIELD.search(part) for part in loc):
                error = {**error, "input": REDACTED}
            else:  # a missing field's error quotes the whole object, credentials too
                error = {**error, "input": _masked(error["input"])}
        masked.append(error)
    return masked


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and _SECRET_FIELD.search(k) else _masked(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def status_of(exc: UrbanaError) -> int:
    """The HTTP status of one of our errors."""
    if isinstance(exc, Unavailable):
        return 503
    if isinstance(exc, Rejected):
        return exc.status
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, NotAuthenticated):
        return 401
    if isinstance(exc, AlreadyTaken | InvalidTransition):
        return 409
    if isinstance(exc, DomainError):
        return 422
    return 500  # ConfigurationError, or a fault of ours with no better answer


def answer(request: Request, exc: UrbanaError) -> JSONResponse:
    """Our error as problem+json, logged as its class deserves."""
    status = status_of(exc)
    where = f"{request.method} {logs.route_of(request.scope)}"  # never the path: ids, secrets
    if isinstance(exc, Unavailable):
        log.warning("%s: unavailable: %s: %s", where, type(exc).__name__, exc)
        # The detail names the class only: the cause may carry hosts and SQL.
        retry_after = str(max(1, math.ceil(exc.retry_after)))
        return problem(
            status,
            "temporarily unavailable",
            type(exc).__name__,
            headers={"Retry-After": retry_after},
        )
    if isinstance(exc, Rejected):
        log.info("%s: rejected: %d", where, status)  # the reason may quote the input
        later = None
        if exc.retry_after is not None:
            later = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        return problem(status, "rejected", exc.reason, headers=later)
    if isinstance(exc, NotAuthenticated):
        # Which credential failed, and why, is not the caller's business.
        return problem(status, "not authenticated", headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, DomainError):
        return problem(status, exc.code.replace("_", " "), str(exc))
    what = "misconfigured" if isinstance(exc, ConfigurationError) else "internal error"
    log.error("%s: %s: %s: %s", where, what, type(exc).__name__, exc, exc_info=exc)
    return problem(status, what)


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error as problem+json: the framework's, ours, and any other."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(422, "invalid request", errors=_without_secrets(exc.errors()))

    @app.exception_handler(UrbanaError)
    async def urbana_error(request: Request, exc: UrbanaError) -> JSONResponse:
        return answer(request, exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, or a library error no adapter maps. Starlette re-raises it after this
        # answer, so the server logs it with its traceback.
        return problem(500, "internal error")

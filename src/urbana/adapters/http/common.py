"""What the /v1 routes share: running a store call off the event loop, finding a
tenant's aggregate, the errors every route documents, request examples."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

from fastapi import Request
from pydantic import ConfigDict

from urbana.adapters.bootstrap import Container
from urbana.application.app import UrbanaApp
from urbana.domain.errors import InvalidInput, NotFound
from urbana.domain.events import TenantScoped

S = TypeVar("S", bound=TenantScoped)
R = TypeVar("R")

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, wrong, expired, disabled or revoked credentials"},
    403: {"description": "The caller's role may not do this"},
    404: {"description": "No such conversation in this tenant"},
    409: {"description": "The conversation's state does not allow it (problem+json)"},
    422: {"description": "The request is malformed (problem+json)"},
    503: {"description": "The store did not answer in time; retry after Retry-After"},
}


def examples(*given: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(given)})


def container_of(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def on_store(request: Request, fn: Callable[..., R], *args: Any) -> R:
    """Run a synchronous store call in a thread, within the store gate's wait."""
    return await container_of(request).ingestor.committer.gate.call(fn, *args)


def scoped(app: UrbanaApp, cls: type[S], aggregate_id: UUID, tenant_id: UUID) -> S:
    """The aggregate if it is the tenant's; another tenant's is NotFound, worded the same."""
    try:
        found = app.get(cls, aggregate_id)
    except (NotFound, InvalidInput):
        found = None
    if found is None or found.tenant_id != tenant_id:
        raise NotFound(f"no {cls.__name__.lower()} {aggregate_id}")
    return found

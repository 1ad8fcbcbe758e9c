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
from urbana.domain.tenant import Tenant

S = TypeVar("S", bound=TenantScoped)
R = TypeVar("R")

Responses = dict[int | str, dict[str, Any]]

UNAUTHORIZED: Responses = {
    401: {"description": "Missing, wrong, expired, disabled or revoked credentials"}
}
STORE_WAIT = "The store did not answer in time; retry after Retry-After"


def route_errors(
    forbidden: str, more: Responses | None = None, *, unavailable: str = STORE_WAIT
) -> Responses:
    """The errors of a route for some roles: 401, 403 (who may), `more`, then 503."""
    return {
        **UNAUTHORIZED,
        403: {"description": forbidden},
        **(more or {}),
        503: {"description": unavailable},
    }


ERRORS = route_errors(
    "The caller's role may not do this",
    {
        404: {"description": "No such conversation in this tenant"},
        409: {"description": "The conversation's state does not allow it (problem+json)"},
        422: {"description": "The request is malformed (problem+json)"},
    },
)
# ERRORS but the 409 of a conversation's state: for routes on the tenant's other resources.
TENANT_ERRORS = {k: v for k, v in ERRORS.items() if k != 409}


def examples(*given: dict[str, Any], from_attributes: bool = False) -> ConfigDict:
    """A model's OpenAPI examples (and, for a model built from a query's rows, that it
    reads their attributes)."""
    config = ConfigDict(json_schema_extra={"examples": list(given)})
    if from_attributes:
        config["from_attributes"] = True
    return config


def container_of(request: Request) -> Container:
    """The app's container. Read directly, not as a FastAPI dependency, on the hot paths:
    resolving one was a fifteenth of a webhook's CPU (its cache key inspects the callable
    each time)."""
    container: Container = request.app.state.container
    return container


async def on_store(request: Request, fn: Callable[..., R], *args: Any) -> R:
    """Run a synchronous store call in a thread, within the store gate's wait."""
    return await container_of(request).ingestor.committer.gate.call(fn, *args)


async def tenant_of(request: Request, tenant_id: UUID) -> Tenant:
    """The tenant aggregate as the store holds it now (through the store gate)."""
    return await on_store(request, container_of(request).store.app.get, Tenant, tenant_id)


def scoped(app: UrbanaApp, cls: type[S], aggregate_id: UUID, tenant_id: UUID) -> S:
    """The aggregate if it is the tenant's; another tenant's is NotFound, worded the same."""
    try:
        found = app.get(cls, aggregate_id)
    except (NotFound, InvalidInput):
        found = None
    if found is None or found.tenant_id != tenant_id:
        raise NotFound(f"no {cls.__name__.lower()} {aggregate_id}")
    return found

"""Who is calling a /v1 route, and whether their role may: `allow(...)` and `x-roles`.

Every /v1 route names the roles it admits with `allow(*roles)`, a dependency that
returns the caller's `Principal`. The same declaration is written into the route's
OpenAPI operation as `x-roles` (by `RolesRoute`, the route class of `v1_router()`), so
the docs and the access-matrix test read one source. Wrong, missing, expired, disabled
or revoked credentials are 401 (`WWW-Authenticate: Bearer`); a right tenant with a wrong
role is 403; another tenant's resource is 404, decided where the resource is looked up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from urbana.adapters.bootstrap import Container
from urbana.application.access import API_KEY_PREFIX, Principal
from urbana.domain.errors import NotAuthenticated
from urbana.domain.user import Role

__all__ = ["PUBLIC", "Principal", "RolesRoute", "allow", "roles_of", "unauthorized", "v1_router"]

# The OpenAPI extension of a /v1 route that takes no credentials (the login).
PUBLIC: dict[str, Any] = {"x-public": True}

_bearer = HTTPBearer(auto_error=False, description="A JWT from /v1/auth/login, or an API key")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    """The caller's principal, from a bearer JWT or API key checked against current state."""
    if credentials is None:
        raise unauthorized("missing bearer credentials")
    container: Container = request.app.state.container
    token = credentials.credentials
    try:
        if token.startswith(API_KEY_PREFIX):
            return await asyncio.to_thread(container.access.api_key_principal, token)
        claims = container.tokens.read(token)
        return await asyncio.to_thread(
            container.access.user_principal, claims.user_id, claims.tenant_id, claims.sessions
        )
    except NotAuthenticated as exc:
        raise unauthorized(str(exc)) from exc


class _Allow:
    """The dependency `allow(...)` makes; its `roles` are what `x-roles` documents."""

    def __init__(self, roles: Iterable[Role]) -> None:
        self.roles = frozenset(roles)

    async def __call__(self, request: Request, credentials: BearerDep) -> Principal:
        principal = await authenticate(request, credentials)
        if principal.role not in self.roles:
            raise HTTPException(403, f"the role {principal.role} may not do this")
        return principal


def allow(*roles: Role) -> Any:
    """`Annotated[Principal, allow(Role.ADMIN, ...)]`: the caller, if their role is one of these."""
    if not roles:
        raise ValueError("name the roles a route admits (a public route uses PUBLIC)")
    return Depends(_Allow(roles))


def roles_of(dependant: Dependant) -> frozenset[Role] | None:
    """The roles an endpoint admits through `allow(...)`, None when it uses none."""
    for sub in dependant.dependencies:
        if isinstance(sub.call, _Allow):
            return sub.call.roles
        found = roles_of(sub)
        if found is not None:
            return found
    return None


class RolesRoute(APIRoute):
    """An APIRoute that writes the roles of its `allow(...)` into its OpenAPI operation.

    Set on construction, so it holds however the router is included later. A route that
    reads a body also documents the 400 FastAPI answers when the body is not JSON.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.body_field is not None and 400 not in self.responses:
            self.responses = {**self.responses, 400: {"description": "The body is not JSON"}}
        roles = roles_of(self.dependant)
        if roles is not None:
            listed = [r.value for r in Role if r in roles]
            self.openapi_extra = {**(self.openapi_extra or {}), "x-roles": listed}


def v1_router(**kwargs: Any) -> APIRouter:
    """A router for /v1 routes, whose operations document their roles (`x-roles`)."""
    return APIRouter(prefix="/v1", route_class=RolesRoute, **kwargs)

"""Who is calling a /v1 route, and whether their role may: `allow(...)` and `x-roles`.

Every /v1 route names the roles it admits with `allow(*roles)`, a dependency that
returns the caller's `Principal`. The same declaration is written into the route's
OpenAPI operation as `x-roles` (by `RolesRoute`, the route class of `v1_router()`), so
the docs and the access-matrix test read one source. Wrong, missing, expired, disabled
or revoked credentials are 401 (`WWW-Authenticate: Bearer`); a right tenant with a wrong
role is 403; another tenant's resource is 404, decided where the resource is looked up.

Without an `Authorization` header the panel's session cookie is read instead (the panel
keeps the login's JWT there, HttpOnly and SameSite=Strict). A browser sends a cookie by
itself, so a state-changing request authenticated by it must also come from our own
origin (`same_origin`); see docs/architecture.md, "The panel".
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from urbana.adapters import logs
from urbana.adapters.bootstrap import Container
from urbana.application.access import API_KEY_PREFIX, Principal
from urbana.domain.errors import NotAuthenticated
from urbana.domain.user import Role

__all__ = [
    "PUBLIC",
    "SESSION_COOKIE",
    "Principal",
    "RolesRoute",
    "allow",
    "roles_of",
    "same_origin",
    "unauthorized",
    "v1_router",
]

# The cookie the panel keeps the login's access token in.
SESSION_COOKIE = "urbana_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# The OpenAPI extension of a /v1 route that takes no credentials (the login).
PUBLIC: dict[str, Any] = {"x-public": True}

_bearer = HTTPBearer(auto_error=False, description="A JWT from /v1/auth/login, or an API key")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def same_origin(request: Request) -> bool:
    """Whether the browser says this request comes from a page of our own origin.

    Browsers send `Sec-Fetch-Site` (Chromium, Firefox, Safari since 2023) and `Origin` on
    every POST; a request with neither is not a browser's form or fetch, so a cookie it
    carries is not trusted for a change.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("origin")
    if origin is None:
        return False
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def _token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is not None:
        return credentials.credentials
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise unauthorized("missing bearer credentials")
    if request.method not in SAFE_METHODS and not same_origin(request):
        raise HTTPException(403, "a change made with the panel's cookie must come from the panel")
    return cookie


async def authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    """The caller's principal, from a bearer JWT or API key (or the panel's session
    cookie) checked against current state."""
    token = _token(request, credentials)
    container: Container = request.app.state.container
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
        logs.bind(tenant=str(principal.tenant_id))
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

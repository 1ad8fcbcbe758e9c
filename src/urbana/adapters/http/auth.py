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
from typing import Annotated, Any, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection

from urbana.adapters import logs
from urbana.adapters.bootstrap import Container
from urbana.adapters.postgres.store import PostgresStreamIndex
from urbana.adapters.tokens import TokenClaims
from urbana.application.access import (
    API_KEY_PREFIX,
    Access,
    Principal,
    api_key_principal_of,
    parse_api_key,
    user_principal_of,
)
from urbana.domain.errors import NotAuthenticated
from urbana.domain.user import ApiKey, Role, User

A = TypeVar("A", bound=Aggregate)

__all__ = [
    "PUBLIC",
    "SESSION_COOKIE",
    "Allow",
    "BearerDep",
    "Principal",
    "RolesRoute",
    "allow",
    "authenticate_on",
    "credential_of",
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
ApiKeyCredential = tuple[UUID, str]  # the key's id and secret


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
    credential = credential_of(request, credentials)
    container: Container = request.app.state.container
    try:
        return await asyncio.to_thread(_principal, container.access, credential)
    except NotAuthenticated as exc:
        raise unauthorized(str(exc)) from exc


def _principal(access: Access, credential: TokenClaims | ApiKeyCredential) -> Principal:
    """The principal of a checked credential, as its user or key is now (on the store)."""
    if isinstance(credential, TokenClaims):
        return access.user_principal(credential.user_id, credential.tenant_id, credential.sessions)
    key_id, secret = credential
    return api_key_principal_of(access.current(ApiKey, key_id), secret)


def credential_of(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> TokenClaims | ApiKeyCredential:
    """What the request's token says, checked as far as it can be without the store: a
    JWT's signature and expiry, an API key's form (401 when missing, forged, expired)."""
    token = _token(request, credentials)
    container: Container = request.app.state.container
    try:
        if token.startswith(API_KEY_PREFIX):
            return parse_api_key(token)
        return container.tokens.read(token)
    except NotAuthenticated as exc:
        raise unauthorized(str(exc)) from exc


async def authenticate_on(
    conn: AsyncConnection[Any], request: Request, credential: TokenClaims | ApiKeyCredential
) -> Principal:
    """The caller's principal, the credential checked against current state with one
    query on `conn`: a transaction the caller opened on the read pool, still as the
    pool's own role (the event table is not the API role's).

    The same check as `authenticate` (the events after the process's copy of the user
    or key; usually none), without a thread and a second pool's transaction: a read
    route then costs one connection and one transaction. A store without the
    event-table index is asked as `authenticate` does.
    """
    container: Container = request.app.state.container
    access, index = container.access, container.store.app.index
    try:
        if not isinstance(index, PostgresStreamIndex):
            return await asyncio.to_thread(_principal, access, credential)
        if isinstance(credential, TokenClaims):
            user = await _current_on(conn, access, index, User, credential.user_id)
            return user_principal_of(user, credential.tenant_id, credential.sessions)
        key_id, secret = credential
        key = await _current_on(conn, access, index, ApiKey, key_id)
        return api_key_principal_of(key, secret)
    except NotAuthenticated as exc:
        raise unauthorized(str(exc)) from exc


async def _current_on(
    conn: AsyncConnection[Any],
    access: Access,
    index: PostgresStreamIndex,
    cls: type[A],
    aggregate_id: UUID,
) -> A | None:
    """`Access.current`, its query on `conn`."""
    held = access.held(aggregate_id)
    versions = {aggregate_id: held.version if held is not None else 0}
    cursor = await conn.execute(index.statement, index.params(versions))
    stored = index.events(await cursor.fetchall())
    if not stored:  # the usual case: the held copy is current
        return access.caught_up(cls, aggregate_id, held, stored)
    # Decoding may open sealed fields (a key lookup on the store): not on the loop.
    return await asyncio.to_thread(access.caught_up, cls, aggregate_id, held, stored)


class Allow:
    """The dependency `allow(...)` makes; its `roles` are what `x-roles` documents (and
    those of a subclass's, as `reads.allow_reading`'s)."""

    def __init__(self, roles: Iterable[Role]) -> None:
        self.roles = frozenset(roles)

    async def __call__(self, request: Request, credentials: BearerDep) -> Principal:
        return self.admit(await authenticate(request, credentials))

    def admit(self, principal: Principal) -> Principal:
        """The principal, if its role is one of these (else 403)."""
        logs.bind(tenant=str(principal.tenant_id))
        if principal.role not in self.roles:
            raise HTTPException(403, f"the role {principal.role} may not do this")
        return principal


def allow(*roles: Role) -> Any:
    """`Annotated[Principal, allow(Role.ADMIN, ...)]`: the caller, if their role is one of these."""
    if not roles:
        raise ValueError("name the roles a route admits (a public route uses PUBLIC)")
    return Depends(Allow(roles))


def roles_of(dependant: Dependant) -> frozenset[Role] | None:
    """The roles an endpoint admits through `allow(...)`, None when it uses none."""
    for sub in dependant.dependencies:
        if isinstance(sub.call, Allow):
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

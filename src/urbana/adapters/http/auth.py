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
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection, AsyncCursor

from urbana.adapters import logs
from urbana.adapters.http.common import container_of
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
    "CredentialCheck",
    "Principal",
    "RolesRoute",
    "allow",
    "check_on",
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
    container = container_of(request)
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
    container = container_of(request)
    try:
        if token.startswith(API_KEY_PREFIX):
            return parse_api_key(token)
        return container.tokens.read(token)
    except NotAuthenticated as exc:
        raise unauthorized(str(exc)) from exc


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class CredentialCheck:
    """A credential's check against current state whose one query was sent on a
    connection of the caller's (`check_on`); `principal()` reads its answer.

    The connection is in a transaction the caller opened on the read pool, still as the
    pool's own role (the event table is not the API role's). The query is the one
    `Access.current` runs (the events after this process's copy of the user or key;
    usually none): the same check, on every request, as `authenticate`, without a
    thread and a second pool's transaction. Sent in a pipeline, it goes to the server
    with the transaction's BEGIN and whatever the caller queues after it.

    No repr: the credential may hold an API key's secret.
    """

    _access: Access
    _credential: TokenClaims | ApiKeyCredential
    _index: PostgresStreamIndex | None
    _held: Aggregate | None = None
    _cursor: AsyncCursor[Any] | None = None

    @property
    def tenant_id(self) -> UUID | None:
        """The tenant the credential names, when it names one (a user's token does; an
        API key's tenant is the key's, known once it is read)."""
        credential = self._credential
        return credential.tenant_id if isinstance(credential, TokenClaims) else None

    async def principal(self) -> Principal:
        """The caller's principal; 401 when the user or key may not act (any more)."""
        credential, access = self._credential, self._access
        try:
            if self._index is None or self._cursor is None:  # a store without the index
                return await asyncio.to_thread(_principal, access, credential)
            stored = self._index.events(await self._cursor.fetchall())
            if isinstance(credential, TokenClaims):
                user = await self._caught_up(User, credential.user_id, stored)
                return user_principal_of(user, credential.tenant_id, credential.sessions)
            key_id, secret = credential
            return api_key_principal_of(await self._caught_up(ApiKey, key_id, stored), secret)
        except NotAuthenticated as exc:
            raise unauthorized(str(exc)) from exc

    async def _caught_up(
        self, cls: type[A], aggregate_id: UUID, stored: list[StoredEvent]
    ) -> A | None:
        if not stored:  # the usual case: the held copy is current
            return self._access.caught_up(cls, aggregate_id, self._held, stored)
        # Decoding may open sealed fields (a key lookup on the store): not on the loop.
        return await asyncio.to_thread(
            self._access.caught_up, cls, aggregate_id, self._held, stored
        )


async def check_on(
    conn: AsyncConnection[Any], request: Request, credential: TokenClaims | ApiKeyCredential
) -> CredentialCheck:
    """Send the check of `credential` on `conn` (see `CredentialCheck`)."""
    container = container_of(request)
    access, index = container.access, container.store.app.index
    if not isinstance(index, PostgresStreamIndex):
        return CredentialCheck(access, credential, None)
    subject = credential.user_id if isinstance(credential, TokenClaims) else credential[0]
    held = access.held(subject)
    versions = {subject: held.version if held is not None else 0}
    cursor = await conn.execute(index.statement, index.params(versions))
    return CredentialCheck(access, credential, index, held, cursor)


class Allow:
    """The dependency `allow(...)` makes; its `roles` are what `x-roles` documents (and
    those of a subclass's, as `tenant_reads.allow_reading`'s)."""

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


# The callers most routes admit.
Admin = Annotated[Principal, allow(Role.ADMIN)]
Auditor = Annotated[Principal, allow(Role.AUDITOR, Role.ADMIN)]
# Who works conversations; supervisors and admins may also act on others' conversations.
Worker = Annotated[Principal, allow(Role.ATTENDANT, Role.SUPERVISOR, Role.ADMIN)]
Anyone = Annotated[Principal, allow(*Role)]


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

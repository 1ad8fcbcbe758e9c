"""The read routes' transaction: the caller's credentials checked, then row-level
security on their tenant, on the API's read pool (docs/architecture.md, Access).

`allow_reading(...)` is the dependency of a read route: one connection and one
transaction in which the caller's token or key is checked against current state
(`auth.check_on`) and which then drops to the API role in their tenant; `TenantRead.run`
runs the route's one query in it. `reading` is the same transaction for a caller
already authenticated some other way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Any, Concatenate, ParamSpec, TypeVar
from uuid import UUID

import psycopg
from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from urbana.adapters.http.auth import Allow, BearerDep, check_on, credential_of, unauthorized
from urbana.application.access import Principal
from urbana.domain.user import Role
from urbana.errors import Unavailable
from urbana.projections.access import enter_tenant, tenant_read


class ReadModelsUnavailable(Unavailable):
    """The read models' database did not answer (or no connection was free in time)."""


@asynccontextmanager
async def reading(request: Request, tenant_id: UUID) -> AsyncIterator[AsyncConnection[Any]]:
    """A read-only, tenant-scoped transaction on the API's read pool."""
    pool: AsyncConnectionPool[Any] = request.app.state.reads
    try:
        async with tenant_read(pool, tenant_id) as conn:
            yield conn
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise ReadModelsUnavailable(f"the read models cannot be read: {exc}") from exc


P = ParamSpec("P")
R = TypeVar("R")


class TenantRead:
    """The caller and their read: one transaction on the read pool, in which their
    credentials were checked against current state (`check_on`) and which then
    dropped to the API role in their tenant (`enter_tenant`), as `tenant_read` does.

    `run` runs the route's one query in it, then ends it and gives the connection back,
    before the route does anything else (records an access, builds the answer).
    """

    def __init__(self, principal: Principal, conn: AsyncConnection[Any], held: AsyncExitStack):
        self.principal = principal
        self._conn = conn
        self._held: AsyncExitStack | None = held

    async def run(
        self,
        query: Callable[Concatenate[AsyncConnection[Any], UUID, P], Awaitable[R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """`query(conn, tenant_id, ...)` in the caller's tenant; once per request."""
        held, self._held = self._held, None
        if held is None:
            raise RuntimeError("a TenantRead runs one query")
        try:
            async with held:  # commits (rolls back on an error), gives the connection back
                return await query(self._conn, self.principal.tenant_id, *args, **kwargs)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise ReadModelsUnavailable(f"the read models cannot be read: {exc}") from exc

    async def close(self) -> None:
        """End the transaction if `run` did not (the route answered without reading)."""
        held, self._held = self._held, None
        if held is not None:
            await held.aclose()


@asynccontextmanager
async def _transaction(conn: AsyncConnection[Any]) -> AsyncIterator[None]:
    """The transaction the connection's next statement begins (it is not autocommit):
    committed at the end, rolled back on an error, so the pool gets it back idle."""
    try:
        yield
    except BaseException:
        if not conn.closed:
            await conn.rollback()
        raise
    await conn.commit()


class _AllowReading(Allow):
    """`allow_reading(...)`: a `TenantRead` for a caller whose role is one of these."""

    async def __call__(  # type: ignore[override]
        self, request: Request, credentials: BearerDep
    ) -> AsyncIterator[TenantRead]:
        credential = credential_of(request, credentials)  # a forged token: 401, no connection
        pool: AsyncConnectionPool[Any] = request.app.state.reads
        async with AsyncExitStack() as stack:
            try:
                conn = await stack.enter_async_context(pool.connection())
                await stack.enter_async_context(_transaction(conn))
                # BEGIN (the first statement's, implicit), the check and, for a user's
                # token (which names its tenant), the tenant scope go in one round trip;
                # the answer is read before the query. Not `conn.transaction()`: begun
                # in a pipeline, it keeps the connection in pipeline mode to its end,
                # and a query in pipeline mode polls its socket while it waits.
                async with conn.pipeline():
                    check = await check_on(conn, request, credential)
                    scoped = check.tenant_id
                    if scoped is not None:
                        await enter_tenant(conn, scoped)
                principal = self.admit(await check.principal())
                if scoped is None:
                    await enter_tenant(conn, principal.tenant_id)
                elif principal.tenant_id != scoped:  # the check refuses this; never scope wrong
                    raise unauthorized("unknown user")
            except (psycopg.OperationalError, PoolTimeout) as exc:
                raise ReadModelsUnavailable(f"the read models cannot be read: {exc}") from exc
            read = TenantRead(principal, conn, stack.pop_all())
        try:
            yield read
        finally:
            await read.close()


def allow_reading(*roles: Role) -> Any:
    """`Annotated[TenantRead, allow_reading(...)]`: as `allow(...)` (the same roles, the
    same `x-roles`), the caller's credentials checked in the read's own transaction."""
    return Depends(_AllowReading(roles))


# Conversation text: those who work conversations, and the auditor who reads them.
Reader = Annotated[
    TenantRead, allow_reading(Role.ATTENDANT, Role.SUPERVISOR, Role.ADMIN, Role.AUDITOR)
]
Everyone = Annotated[TenantRead, allow_reading(*Role)]
# KPIs are for those who steer the team, not for the attendants in it.
Steering = Annotated[
    TenantRead, allow_reading(Role.SUPERVISOR, Role.ADMIN, Role.ANALYST, Role.AUDITOR)
]

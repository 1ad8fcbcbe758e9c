"""Recording reads of a subject's decrypted data in the access log (LGPD Art. 37).

Every route that answers a subject's personal data in clear calls `record_access`
after its read and before it answers. It fails closed: when the entry cannot be
written the caller gets a 503 with Retry-After and no data, since an audit log that
can silently miss reads proves nothing. The purpose comes from the `purpose` query
parameter or, on any logged route, the `X-Purpose` header (the query wins).
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import psycopg
from fastapi import Header, Query, Request
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from urbana.adapters.http.common import container_of
from urbana.adapters.postgres import access_log
from urbana.application.access import Principal
from urbana.errors import Unavailable

NO_NUL = r"^[^\x00]*$"
PURPOSE_DOC = (
    "Why the data is read (a legal ground or a ticket; no personal data), kept in the "
    "access log; the `X-Purpose` header says the same"
)
PurposeQuery = Annotated[
    str | None,
    Query(max_length=access_log.MAX_PURPOSE, pattern=NO_NUL, description=PURPOSE_DOC),
]
PurposeHeader = Annotated[
    str | None,
    Header(
        alias="X-Purpose",
        max_length=access_log.MAX_PURPOSE,
        pattern=NO_NUL,
        description="The purpose, when not given as the `purpose` query parameter",
    ),
]


class AccessLogUnavailable(Unavailable):
    """The access log could not be written: the read is not answered (fail closed)."""


def purpose_of(query: str | None, header: str | None) -> str | None:
    """The caller's purpose: the query parameter, else the header; blank is none."""
    chosen = query if query is not None else header
    return chosen.strip() or None if chosen is not None else None


async def record_access(
    request: Request,
    principal: Principal,
    *,
    lead_id: UUID | None,
    resource: UUID | str,
    purpose: str | None,
) -> None:
    """Log that `principal` read `resource` (of the subject `lead_id`) through this route."""
    pool: AsyncConnectionPool[Any] = request.app.state.reads
    route = request.scope.get("route")
    template = getattr(route, "path", request.url.path)
    try:
        await access_log.record(
            pool,
            principal.tenant_id,
            actor=str(principal.subject_id),
            actor_kind=principal.kind,
            role=principal.role.value,
            lead_id=lead_id,
            resource=str(resource),
            route=f"{request.method} {template}",
            purpose=purpose,
            wait_s=container_of(request).settings.store_wait_s,
        )
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise AccessLogUnavailable(f"the access log cannot be written: {exc}") from exc

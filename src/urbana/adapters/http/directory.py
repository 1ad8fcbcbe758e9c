"""Tenant routing with a short-lived cache: webhooks must not load a Tenant per request.

Lookups go through the store gate, so a webhook waits for them no longer than for its
commit, and not at all while the store is known to be down.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from urbana.application.app import UrbanaApp
from urbana.application.ingest import StoreGate
from urbana.domain.tenant import Tenant


class TenantDirectory:
    """Route keys -> tenant ids, tenant ids -> channel configs; cached for `ttl` seconds."""

    def __init__(
        self,
        app: UrbanaApp,
        *,
        ttl: float = 5.0,
        negative_ttl: float = 1.0,
        gate: StoreGate | None = None,
    ) -> None:
        self._app = app
        self._gate = gate or StoreGate()
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._routes: dict[tuple[str, str], tuple[UUID | None, float]] = {}
        self._tenants: dict[UUID, tuple[Tenant, float]] = {}

    async def route(self, kind: str, key: str) -> UUID | None:
        """The tenant owning a routing key, or None."""
        now = time.monotonic()
        hit = self._routes.get((kind, key))
        if hit is not None and hit[1] > now:
            return hit[0]
        tenant_id = await self._gate.call(self._app.route, kind, key)
        ttl = self._ttl if tenant_id is not None else self._negative_ttl
        if len(self._routes) > 100_000:
            self._routes.clear()
        self._routes[(kind, key)] = (tenant_id, now + ttl)
        return tenant_id

    async def tenant(self, tenant_id: UUID) -> Tenant:
        now = time.monotonic()
        hit = self._tenants.get(tenant_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        tenant: Tenant = await self._gate.call(self._app.get, Tenant, tenant_id)
        if len(self._tenants) > 10_000:
            self._tenants.clear()
        self._tenants[tenant_id] = (tenant, now + self._ttl)
        return tenant

    async def channel(self, tenant_id: UUID, kind: str) -> dict[str, Any] | None:
        """The channel's {route_key, public, secrets}, or None if not connected."""
        tenant = await self.tenant(tenant_id)
        found: dict[str, Any] | None = tenant.channels.get(kind)
        return found

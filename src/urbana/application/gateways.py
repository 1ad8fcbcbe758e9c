"""Connecting a WhatsApp gateway: which fields each kind needs, and where they go.

Shared by the CLI and the admin API so both accept exactly the same input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from uuid import UUID

from urbana.domain.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class GatewaySpec:
    route_field: str  # the field whose value routes webhooks to the tenant
    public: tuple[str, ...]  # stored in clear (ids, URLs)
    secret: tuple[str, ...]  # stored sealed with the tenant's key
    required: tuple[str, ...]


GATEWAYS: dict[str, GatewaySpec] = {
    "cloud": GatewaySpec(
        route_field="phone_number_id",
        public=("phone_number_id", "api_base_url", "api_version"),
        secret=("app_secret", "verify_token", "access_token"),
        required=("phone_number_id", "app_secret", "verify_token", "access_token"),
    ),
    "evolution": GatewaySpec(
        route_field="instance",
        public=("instance", "api_url"),
        secret=("webhook_secret", "api_key", "jwt_key"),
        required=("instance", "webhook_secret", "api_url", "api_key"),
    ),
    "zapi": GatewaySpec(
        route_field="instance_id",
        public=("instance_id", "api_base_url"),
        secret=("webhook_secret", "token", "client_token"),
        required=("instance_id", "webhook_secret", "token", "client_token"),
    ),
    "console": GatewaySpec(route_field="name", public=("name",), secret=(), required=("name",)),
}


def secret_route_key(secret: str) -> str:
    """Routes by secret use its hash, so the store never holds the secret in an id."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    kind: str
    route_key: str
    public: dict[str, str]
    secrets: dict[str, str]
    extra_routes: dict[str, str]  # route kind -> key (hashed secrets)


def gateway_config(kind: str, fields: Mapping[str, str | None]) -> GatewayConfig:
    """Validate a gateway's fields; InvalidInput names what is missing or unknown."""
    spec = GATEWAYS.get(kind)
    if spec is None:
        raise InvalidInput(f"unknown channel kind {kind!r} (cloud | evolution | zapi)")
    given = {k: v.strip() for k, v in fields.items() if v is not None and v.strip()}
    unknown = set(given) - set(spec.public) - set(spec.secret)
    if unknown:
        raise InvalidInput(f"{kind} does not take: {', '.join(sorted(unknown))}")
    missing = [f for f in spec.required if f not in given]
    if missing:
        raise InvalidInput(f"{kind} needs: {', '.join(missing)}")
    for url_field in ("api_base_url", "api_url"):
        url = given.get(url_field)
        if url and not url.startswith(("http://", "https://")):
            raise InvalidInput(f"{url_field} must be an http(s) URL")
    extra: dict[str, str] = {}
    if "webhook_secret" in given:
        if len(given["webhook_secret"]) < 16:
            raise InvalidInput("webhook_secret must have at least 16 characters")
        extra[f"{kind}-secret"] = secret_route_key(given["webhook_secret"])
    if "verify_token" in given:
        extra[f"{kind}-verify"] = secret_route_key(given["verify_token"])
    return GatewayConfig(
        kind=kind,
        route_key=given[spec.route_field],
        public={k: v for k, v in given.items() if k in spec.public},
        secrets={k: v for k, v in given.items() if k in spec.secret},
        extra_routes=extra,
    )


def tenant_uuid(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise InvalidInput(f"not a tenant id: {value!r}") from None

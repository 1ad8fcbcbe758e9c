"""Tenants with users of every role, made through the application and signed in over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import httpx
from argon2 import PasswordHasher

from tests.e2e.conftest import Api
from urbana.adapters.passwords import Argon2Hasher
from urbana.application.access import Access
from urbana.domain.user import Role

PASSWORD = "correct horse battery"
# The server verifies any argon2 hash by the parameters it carries; cheap ones keep the
# tests fast (the server's own hashes use the library's parameters).
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_email() -> str:
    return f"u.{uuid4().hex[:10]}@example.com"


def login(api: Api, email: str, password: str = PASSWORD) -> httpx.Response:
    return httpx.post(f"{api.url}/v1/auth/login", json={"email": email, "password": password})


@dataclass
class Team:
    """A tenant with one signed-in user per role."""

    tenant_id: UUID
    tokens: dict[Role, str] = field(default_factory=dict)
    user_ids: dict[Role, UUID] = field(default_factory=dict)

    def headers(self, role: Role) -> dict[str, str]:
        return bearer(self.tokens[role])


def access(api: Api) -> Access:
    return Access(api.store.app, Argon2Hasher(FAST))


def team(api: Api, tenant_id: UUID | None = None) -> Team:
    """One signed-in user per role, in a new tenant (or in `tenant_id`)."""
    if tenant_id is None:
        tenant_id, _ = api.store.app.register_tenant(f"Equipe {uuid4().hex[:8]}")
    made = Team(tenant_id)
    for role in Role:
        email = new_email()
        made.user_ids[role], _ = access(api).add_user(
            tenant_id, email=email, role=role, password=PASSWORD
        )
        answer = login(api, email)
        assert answer.status_code == 200, answer.text
        made.tokens[role] = answer.json()["access_token"]
    return made


@dataclass(frozen=True)
class Call:
    path: str
    body: dict[str, Any] | None = None
    text: str | None = None  # a raw text/markdown body instead of JSON


@dataclass(frozen=True)
class Scenario:
    """How to call a route on a fresh resource of `owner`, and what success answers.

    `make` is given the caller's subject id (a user's or a key's), for resources the
    caller must hold (a conversation it answers).
    """

    success: int
    make: Callable[[Api, Team, str], Call]
    on_a_resource: bool = False  # the path names one of the tenant's resources
    keys: bool = True  # API keys may call it (False: it is about the signed-in user)


_STATUS_READERS: dict[str, str] = {}  # API url -> an admin's token, made once per server


def status(api: Api) -> dict[str, Any]:
    """GET /v1/status (this API process's figures) as a tenant's admin."""
    if api.url not in _STATUS_READERS:
        _STATUS_READERS[api.url] = team(api).tokens[Role.ADMIN]
    answer = httpx.get(f"{api.url}/v1/status", headers=bearer(_STATUS_READERS[api.url]))
    assert answer.status_code == 200, answer.text
    figures: dict[str, Any] = answer.json()
    return figures

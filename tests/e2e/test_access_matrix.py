"""The access matrix: every /v1 route × {no token, bad token, each role as a user and as an
API key, another tenant's resource} → the status it must answer.

Generated from the app's route table and the `x-roles` (or `x-public`) each operation
declares, so a route cannot be added without saying who may call it, nor without a
scenario here that exercises it (the first test fails until it has one).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.access_helpers import (
    PASSWORD,
    Call,
    Scenario,
    Team,
    access,
    bearer,
    new_email,
    team,
)
from tests.e2e.conftest import Api
from tests.e2e.fake_evolution import FakeEvolution, fake_evolution
from tests.e2e.workspace_scenarios import WORKSPACE
from urbana.adapters.http.app import create_app
from urbana.adapters.postgres.replay import replay
from urbana.application.app import ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.application.gateways import gateway_config
from urbana.domain.contacts import channel_route_id_for
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e


def _login(api: Api, owner: Team, caller: str) -> Call:
    email = new_email()
    access(api).add_user(owner.tenant_id, email=email, role=Role.ANALYST, password=PASSWORD)
    return Call("/v1/auth/login", {"email": email, "password": PASSWORD})


def _user(api: Api, owner: Team, caller: str) -> Call:
    user_id, _ = access(api).add_user(
        owner.tenant_id, email=new_email(), role=Role.ATTENDANT, password=PASSWORD
    )
    return Call(f"/v1/users/{user_id}", {"role": "analyst"})


def _key(api: Api, owner: Team, caller: str) -> Call:
    key = access(api).create_api_key(owner.tenant_id, role=Role.ANALYST, by=None)
    return Call(f"/v1/api-keys/{key.key_id}")


# A conversation (and its lead) per tenant, made once and projected by a replay.
_TALKS: dict[UUID, tuple[UUID, UUID]] = {}


def _talk(api: Api, owner: Team) -> tuple[UUID, UUID]:
    if owner.tenant_id not in _TALKS:
        message = InboundMessage(
            provider_message_id=f"wamid.{uuid4().hex}",
            contact="5511955550000",
            phone="5511955550000",
            sent_at=datetime.now(UTC),
            kind="text",
            text="Oi",
            contact_name="Matriz",
        )
        started = api.store.app.receive_message(ReceiveMessage(owner.tenant_id, "cloud", message))
        replay(api.settings.database_url or "", api.settings.database_schema)
        _TALKS[owner.tenant_id] = (started.conversation_id, started.lead_id)
    return _TALKS[owner.tenant_id]


# A console conversation per tenant (the Testar bench), projected by a replay.
_CONSOLE: dict[UUID, UUID] = {}


def _console_talk(api: Api, owner: Team) -> UUID:
    if owner.tenant_id not in _CONSOLE:
        message = InboundMessage(
            provider_message_id=f"console.{uuid4().hex}",
            contact=f"console:{uuid4().hex[:12]}",
            phone=None,
            sent_at=datetime.now(UTC),
            kind="text",
            text="Oi",
        )
        started = api.store.app.receive_message(ReceiveMessage(owner.tenant_id, "console", message))
        replay(api.settings.database_url or "", api.settings.database_schema)
        _CONSOLE[owner.tenant_id] = started.conversation_id
    return _CONSOLE[owner.tenant_id]


# An Evolution channel per tenant, on a fake Evolution the module starts.
EVOLUTION_KEY = "evo-" + "m" * 28
_EVOLUTION: list[FakeEvolution] = []
_CHANNELS: dict[UUID, UUID] = {}


@pytest.fixture(scope="module", autouse=True)
def evolution() -> Iterator[FakeEvolution]:
    with fake_evolution(EVOLUTION_KEY) as fake:
        _EVOLUTION.append(fake)
        yield fake
        _EVOLUTION.remove(fake)


def _evolution_channel(api: Api, owner: Team) -> UUID:
    if owner.tenant_id not in _CHANNELS:
        instance = f"matriz-{uuid4().hex[:8]}"
        fake = _EVOLUTION[0]
        fake.known.add(instance)
        fields = {
            "instance": instance,
            "webhook_secret": uuid4().hex,
            "api_url": fake.url,
            "api_key": EVOLUTION_KEY,
        }
        api.store.app.connect_channel(owner.tenant_id, gateway_config("evolution", fields))
        _CHANNELS[owner.tenant_id] = channel_route_id_for("evolution", instance)
    return _CHANNELS[owner.tenant_id]


def _erase(api: Api, owner: Team, _caller: str) -> Call:
    """A new subject of the owner's tenant for each call: each erasure is a first one."""
    phone = f"55119{uuid4().int % 10**8:08d}"
    message = InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=phone,
        phone=phone,
        sent_at=datetime.now(UTC),
        kind="text",
        text="Oi",
    )
    started = api.store.app.receive_message(ReceiveMessage(owner.tenant_id, "cloud", message))
    return Call(f"/v1/privacy/subjects/{started.lead_id}/erase", {"reason": "subject_request"})


def _get(path: str) -> Scenario:
    return Scenario(200, lambda api, owner, _caller: Call(path))


SCENARIOS: dict[tuple[str, str], Scenario] = {
    ("POST", "/v1/auth/login"): Scenario(200, _login),
    ("GET", "/v1/me"): Scenario(200, lambda api, owner, caller: Call("/v1/me")),
    ("POST", "/v1/users"): Scenario(
        201,
        lambda api, owner, caller: Call(
            "/v1/users", {"email": new_email(), "role": "attendant", "password": PASSWORD}
        ),
    ),
    ("PATCH", "/v1/users/{user_id}"): Scenario(200, _user, on_a_resource=True),
    ("POST", "/v1/api-keys"): Scenario(
        201, lambda api, owner, caller: Call("/v1/api-keys", {"role": "analyst"})
    ),
    ("DELETE", "/v1/api-keys/{key_id}"): Scenario(204, _key, on_a_resource=True),
    **WORKSPACE,
    ("GET", "/v1/conversations"): _get("/v1/conversations?status=ai&limit=5"),
    ("GET", "/v1/conversations/{conversation_id}"): Scenario(
        200,
        lambda api, owner, _caller: Call(f"/v1/conversations/{_talk(api, owner)[0]}"),
        on_a_resource=True,
    ),
    ("GET", "/v1/queue"): _get("/v1/queue"),
    ("GET", "/v1/leads"): _get("/v1/leads?min_score=0"),
    ("GET", "/v1/leads/{lead_id}"): Scenario(
        200,
        lambda api, owner, _caller: Call(f"/v1/leads/{_talk(api, owner)[1]}"),
        on_a_resource=True,
    ),
    ("GET", "/v1/kpis"): _get("/v1/kpis"),
    ("GET", "/v1/users"): _get("/v1/users"),
    ("GET", "/v1/queues"): _get("/v1/queues"),
    ("GET", "/v1/canned-responses"): _get("/v1/canned-responses"),
    ("GET", "/v1/stream"): _get("/v1/stream"),
    ("GET", "/v1/privacy/subjects"): Scenario(
        200,
        lambda api, owner, _caller: Call(f"/v1/privacy/subjects?lead_id={_talk(api, owner)[1]}"),
        on_a_resource=True,
    ),
    ("GET", "/v1/privacy/subjects/{lead_id}/export"): Scenario(
        200,
        lambda api, owner, _caller: Call(f"/v1/privacy/subjects/{_talk(api, owner)[1]}/export"),
        on_a_resource=True,
    ),
    ("GET", "/v1/privacy/access-log"): _get("/v1/privacy/access-log?limit=5"),
    ("POST", "/v1/console/messages"): Scenario(
        202, lambda api, owner, _caller: Call("/v1/console/messages", {"text": "Oi"})
    ),
    ("GET", "/v1/console/conversations/{conversation_id}"): Scenario(
        200,
        lambda api, owner, _caller: Call(f"/v1/console/conversations/{_console_talk(api, owner)}"),
        on_a_resource=True,
    ),
    ("GET", "/v1/channels"): _get("/v1/channels"),
    ("POST", "/v1/channels/{channel_id}/connect"): Scenario(
        200,
        lambda api, owner, _caller: Call(f"/v1/channels/{_evolution_channel(api, owner)}/connect"),
        on_a_resource=True,
    ),
    ("POST", "/v1/privacy/subjects/{lead_id}/erase"): Scenario(200, _erase, on_a_resource=True),
    ("GET", "/v1/knowledge"): _get("/v1/knowledge"),
    ("PUT", "/v1/knowledge/{name}"): Scenario(
        202, lambda api, owner, _caller: Call("/v1/knowledge/horario.md", text="Abrimos às 8h.")
    ),
    ("GET", "/v1/settings/telegram"): _get("/v1/settings/telegram"),
    ("PUT", "/v1/settings/telegram"): Scenario(
        200,
        lambda api, owner, _caller: Call(
            "/v1/settings/telegram",
            {"chat_id": "-1001234567890", "bot_token": "7123456789:AAH3xJ9kq0bS2mZ4vW8yR1tL6nP5c"},
        ),
    ),
    ("DELETE", "/v1/settings/telegram"): Scenario(
        204, lambda api, owner, _caller: Call("/v1/settings/telegram")
    ),
    ("GET", "/v1/status"): _get("/v1/status"),
}


def v1_operations(api: Api) -> dict[tuple[str, str], dict[str, Any]]:
    """Every /v1 operation of the app's route table, with its OpenAPI declaration."""
    spec = create_app(api.settings).openapi()
    return {
        (method.upper(), path): operation
        for path, item in spec["paths"].items()
        if path.startswith("/v1/")
        for method, operation in item.items()
    }


@dataclass(frozen=True)
class Cell:
    route: tuple[str, str]
    case: str
    expected: int
    got: int


def test_every_v1_route_declares_its_roles_and_has_a_scenario(api: Api) -> None:
    operations = v1_operations(api)
    for route, operation in operations.items():
        public, roles = operation.get("x-public", False), operation.get("x-roles")
        assert public or roles, f"{route} declares no roles (allow(...)) and is not public"
        assert all(r in set(Role) for r in roles or []), route
    assert set(operations) == set(SCENARIOS)


def test_every_route_answers_every_caller_as_its_roles_say(api: Api) -> None:
    mine, theirs = team(api), team(api)
    keys = {role: access(api).create_api_key(mine.tenant_id, role=role, by=None) for role in Role}
    cells: list[Cell] = []

    def call(
        route: tuple[str, str],
        case: str,
        expected: int,
        owner: Team,
        headers: Any,
        caller: str = "",
    ) -> None:
        target = SCENARIOS[route].make(api, owner, caller)
        url = f"{api.url}{target.path}"
        # Streamed, so the endless /v1/stream is only looked at, not read to its end.
        sent: dict[str, Any] = {"json": target.body, "headers": headers}
        if target.text is not None:
            sent = {
                "content": target.text.encode(),
                "headers": {**headers, "Content-Type": "text/markdown"},
            }
        with httpx.stream(route[0], url, **sent) as answer:
            cells.append(Cell(route, case, expected, answer.status_code))
            if answer.status_code >= 400:
                answer.read()
                assert answer.headers["content-type"] == "application/problem+json", answer.text

    for route, operation in v1_operations(api).items():
        scenario = SCENARIOS[route]
        public = operation.get("x-public", False)
        allowed = {Role(r) for r in operation.get("x-roles", [])}
        refused = scenario.success if public else 401
        call(route, "no token", refused, mine, {})
        call(route, "bad token", refused, mine, bearer("not-a-token"))
        for role in Role:
            expected = scenario.success if public or role in allowed else 403
            user, key = str(mine.user_ids[role]), keys[role]
            call(route, f"{role} user", expected, mine, mine.headers(role), user)
            by_key = expected if scenario.keys else 403
            call(route, f"{role} api key", by_key, mine, bearer(key.token), str(key.key_id))
        if scenario.on_a_resource:
            some_allowed = next(r for r in Role if r in allowed)
            caller = str(mine.user_ids[some_allowed])
            call(route, "other tenant", 404, theirs, mine.headers(some_allowed), caller)

    wrong = [c for c in cells if c.got != c.expected]
    assert not wrong, f"{len(wrong)} of {len(cells)} cells differ: {wrong}"

"""schemathesis against the app's own OpenAPI: every answer to a generated request is below
500, a success matches its documented response model, and every error is
application/problem+json.

The /v1 reads run on a tenant with data in its read models, as an admin. The /v1 writes
(POST, PATCH, PUT, DELETE) run as the least of the roles their `x-roles` allow (login
without a token), on generated ids and, half the time, on the tenant's own resources so
that bodies reach the commands; an error must also have appended no event. Left out:
/v1/stream (an endless response a request-per-case fuzzer cannot read to its end; its
errors are in tests/e2e/test_stream_api.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok
from schemathesis.core.transport import Response

from tests.e2e.access_helpers import access
from tests.e2e.conftest import Api
from tests.e2e.test_reads_api import World, build
from urbana.adapters.postgres.replay import replay
from urbana.application.app import ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
WRITES = "POST|PATCH|PUT|DELETE"


@pytest.fixture(scope="module")
def world(api: Api) -> World:
    return build(api)


@pytest.fixture(scope="module")
def console_conversation(api: Api, world: World) -> str:
    """A console conversation of the world's tenant (the Testar bench), projected."""
    message = InboundMessage(
        provider_message_id=f"console.{uuid4().hex}",
        contact=f"console:{uuid4().hex[:12]}",
        phone=None,
        sent_at=datetime.now(UTC),
        kind="text",
        text="Oi",
    )
    received = api.store.app.receive_message(
        ReceiveMessage(world.crew.tenant_id, "console", message)
    )
    replay(api.settings.database_url or "", api.settings.database_schema)
    return str(received.conversation_id)


Operation = schemathesis.APIOperation[Any, Any, Any, Any]
FuzzCase = schemathesis.Case[Any]
MAX_EXAMPLES = 25  # per operation: each run stays well under two minutes


def operations(api: Api, method: str) -> tuple[dict[str, Any], list[Operation]]:
    spec = httpx.get(f"{api.url}/openapi.json").json()
    chosen = (
        schemathesis.openapi.from_dict(spec)
        .include(method_regex=f"^({method})$", path_regex="^/v1/")
        .exclude(path="/v1/stream")
    )
    found = []
    for result in chosen.get_all_operations():
        assert isinstance(result, Ok), result  # the app's schema must load in full
        found.append(result.ok())
    return spec, found


def answer_is_documented(api: Api, case: FuzzCase, headers: dict[str, str]) -> Response:
    """Call `case`; its answer must be below 500, and an error a problem."""
    response = case.call(base_url=api.url, headers=headers, timeout=15)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == [PROBLEM], response.text
    case.validate_response(
        response, checks=[not_a_server_error, status_code_conformance, response_schema_conformance]
    )
    return response


def fuzz(
    operation: Operation, check: Callable[[FuzzCase, bool], None], *, invalid: bool = False
) -> None:
    """`MAX_EXAMPLES` generated cases of `operation` (with `invalid`, also cases its schema
    refuses), each given to `check` with whether its path should name the tenant's own
    resources."""
    cases = operation.as_strategy()
    if invalid:
        cases = st.one_of(cases, operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases, own=st.booleans())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: FuzzCase, own: bool) -> None:
        check(case, own)

    run()


def test_no_generated_read_gets_a_5xx_and_every_error_is_a_problem(
    api: Api, world: World, console_conversation: str
) -> None:
    headers = world.crew.headers(Role.ADMIN)
    seen: dict[str, set[int]] = {}

    def check(case: FuzzCase, _own: bool) -> None:
        response = answer_is_documented(api, case, headers)
        seen.setdefault(case.operation.label, set()).add(response.status_code)

    # Generated ids name nothing; the tenant's own make the detail routes answer 200.
    known = {"conversation_id": str(world.maria), "lead_id": str(world.maria_lead)}
    # Routes whose subject is named in the query (a generated one names nobody).
    known_query = {"/v1/privacy/subjects": {"lead_id": str(world.maria_lead)}}
    _, chosen = operations(api, "GET")
    for operation in chosen:
        names = {p.name for p in operation.path_parameters}
        if names:
            ids = known
            if operation.path.startswith("/v1/console/"):
                ids = {**known, "conversation_id": console_conversation}
            check(operation.Case(path_parameters={n: ids[n] for n in names}), True)
        if operation.path in known_query:
            check(operation.Case(query=known_query[operation.path]), True)
        fuzz(operation, check)
    # Every read was fuzzed, and the successes were checked against their models.
    assert set(seen) == {operation.label for operation in chosen}
    assert len(seen) >= 10  # at least the reads: /v1/me and the nine workspace routes
    assert all(200 in codes for codes in seen.values()), seen


def test_no_generated_write_gets_a_5xx_and_no_error_appends_an_event(
    api: Api, world: World
) -> None:
    spec, chosen = operations(api, WRITES)
    app = api.store.app
    tenant = world.crew.tenant_id
    # Resources the writes may change without taking the callers' own credentials away.
    victim, _ = access(api).add_user(
        tenant, email=f"victim.{tenant.hex[:8]}@example.com", role=Role.ANALYST
    )
    key = access(api).create_api_key(tenant, role=Role.ANALYST, by=None)
    app.register_template(tenant, "ola", language="pt_BR", parameters=[], text="Olá!")
    # Erasures take a lead of their own: the world's lead must keep its data for the rest.
    message = InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact="5511966665555",
        phone="5511966665555",
        sent_at=datetime.now(UTC),
        kind="text",
        text="Oi",
    )
    erasable = app.receive_message(ReceiveMessage(tenant, "cloud", message)).lead_id
    known = {
        "conversation_id": str(world.maria),
        "lead_id": str(world.maria_lead),
        "user_id": str(victim),
        "key_id": str(key.key_id),
        "queue_id": world.queue,
        "shortcut": "ola",
        "name": "ola",  # a template
        "channel_id": str(uuid4()),  # no Evolution channel here: a missing one
    }
    seen: dict[str, set[int]] = {}

    def check(case: FuzzCase, own: bool) -> None:
        names = {p.name for p in case.operation.path_parameters}
        if own and names:
            ids = known
            if case.operation.path.endswith("/erase"):
                ids = {**known, "lead_id": str(erasable)}
            case.path_parameters = {n: ids[n] for n in names}
        roles = spec["paths"][case.operation.path][case.method.lower()].get("x-roles")
        headers = world.crew.headers(Role(roles[0])) if roles else {}
        before = app.recorder.max_notification_id()
        response = answer_is_documented(api, case, headers)
        seen.setdefault(case.operation.label, set()).add(response.status_code)
        if response.status_code >= 400:
            assert app.recorder.max_notification_id() == before, (case.operation.label, response)

    for operation in chosen:
        fuzz(operation, check, invalid=True)
    assert set(seen) == {operation.label for operation in chosen}
    assert len(seen) >= 20  # login, users, keys, the conversation and team commands
    # The tenant's own resources took some of the generated bodies.
    assert sum(any(code < 300 for code in codes) for codes in seen.values()) >= len(seen) // 2, seen

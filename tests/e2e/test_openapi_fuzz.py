"""schemathesis against the app's own OpenAPI, with a valid admin token: every answer to a
generated request is below 500, a success matches its documented response model, and
every error is application/problem+json.

The /v1 reads run here on a tenant with data in its read models. Left out: /v1/stream (an
endless response a request-per-case fuzzer cannot read to its end; its errors are in
tests/e2e/test_stream_api.py) and the writing routes (POST/PATCH/DELETE), which
append events and are checked by their own e2e tests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.core.result import Ok

from tests.e2e.conftest import Api
from tests.e2e.test_reads_api import World, build
from urbana.adapters.postgres.replay import replay
from urbana.application.app import ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"


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
MAX_EXAMPLES = 25  # per operation: the run stays well under two minutes


def operations(api: Api) -> list[Operation]:
    spec = httpx.get(f"{api.url}/openapi.json").json()
    chosen = (
        schemathesis.openapi.from_dict(spec)
        .include(method="GET", path_regex="^/v1/")
        .exclude(path="/v1/stream")
    )
    found = []
    for result in chosen.get_all_operations():
        assert isinstance(result, Ok), result  # the app's schema must load in full
        found.append(result.ok())
    return found


def test_no_generated_read_gets_a_5xx_and_every_error_is_a_problem(
    api: Api, world: World, console_conversation: str
) -> None:
    headers = world.crew.headers(Role.ADMIN)
    seen: dict[str, set[int]] = {}

    def check(case: FuzzCase) -> None:
        response = case.call(base_url=api.url, headers=headers, timeout=15)
        seen.setdefault(case.operation.label, set()).add(response.status_code)
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert response.headers["content-type"] == [PROBLEM], response.text
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    # Generated ids name nothing; the tenant's own make the detail routes answer 200.
    known = {"conversation_id": str(world.maria), "lead_id": str(world.maria_lead)}
    # Routes whose subject is named in the query (a generated one names nobody).
    known_query = {"/v1/privacy/subjects": {"lead_id": str(world.maria_lead)}}
    chosen = operations(api)
    for operation in chosen:
        names = {p.name for p in operation.path_parameters}
        if names:
            ids = known
            if operation.path.startswith("/v1/console/"):
                ids = {**known, "conversation_id": console_conversation}
            check(operation.Case(path_parameters={n: ids[n] for n in names}))
        if operation.path in known_query:
            check(operation.Case(query=known_query[operation.path]))

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: FuzzCase) -> None:
            check(case)

        fuzz()
    # Every read was fuzzed, and the successes were checked against their models.
    assert set(seen) == {operation.label for operation in chosen}
    assert len(seen) >= 10  # at least the reads: /v1/me and the nine workspace routes
    assert all(200 in codes for codes in seen.values()), seen

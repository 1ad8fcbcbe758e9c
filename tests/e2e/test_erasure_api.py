"""`POST /v1/privacy/subjects/{lead_id}/erase` over HTTP: the receipt, and refusals that
append nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.access_helpers import Team, team
from tests.e2e.conftest import Api
from urbana.application.app import ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.domain.lead import Lead
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e


def subject(api: Api, tenant_id: UUID) -> UUID:
    phone = f"55319{uuid4().int % 10**8:08d}"
    message = InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=phone,
        phone=phone,
        sent_at=datetime.now(UTC),
        kind="text",
        text="Quero apagar meus dados",
        contact_name="Rui Barbosa",
    )
    return api.store.app.receive_message(ReceiveMessage(tenant_id, "cloud", message)).lead_id


def erase(api: Api, who: Team, lead_id: UUID, body: object) -> httpx.Response:
    return httpx.post(
        f"{api.url}/v1/privacy/subjects/{lead_id}/erase",
        json=body,
        headers=who.headers(Role.AUDITOR),
        timeout=30,
    )


def test_an_auditor_erases_a_subject_and_gets_the_receipt(api: Api) -> None:
    mine = team(api)
    lead_id = subject(api, mine.tenant_id)

    answer = erase(api, mine, lead_id, {"reason": "subject_request"})

    assert answer.status_code == 200, answer.text
    receipt = answer.json()
    assert (receipt["lead_id"], receipt["tenant_id"]) == (str(lead_id), str(mine.tenant_id))
    assert (receipt["reason"], receipt["already_erased"]) == ("subject_request", False)
    assert (receipt["removed"]["data_keys"], receipt["removed"]["events_appended"]) == (1, 1)
    erased = api.store.app.get(Lead, lead_id)
    assert erased.erased
    assert erased.pending_events == []
    assert type(api.store.app.stream(lead_id)[-1]).__name__ == "SubjectErased"
    assert api.store.app.stream(lead_id)[-1].by == str(mine.user_ids[Role.AUDITOR])

    head = api.event_count()
    again = erase(api, mine, lead_id, {"reason": "subject_request"})
    assert again.status_code == 200, again.text
    assert again.json()["already_erased"] is True
    assert set(again.json()["removed"].values()) == {0}
    assert again.json()["reason"] == "subject_request"
    assert api.event_count() == head


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("unknown subject", 404),
        ("another tenant's subject", 404),
        ("no reason", 422),
        ("empty reason", 422),
        ("free-text reason", 422),
        ("not a lead id", 422),
    ],
)
def test_a_refused_erasure_appends_nothing(api: Api, case: str, status: int) -> None:
    mine, theirs = team(api), team(api)
    lead_id = subject(
        api, theirs.tenant_id if case == "another tenant's subject" else mine.tenant_id
    )
    target: object = uuid4() if case == "unknown subject" else lead_id
    body: dict[str, str] = {
        "no reason": {},
        "empty reason": {"reason": ""},
        "free-text reason": {"reason": "pedido do Rui Barbosa por telefone"},
    }.get(case, {"reason": "subject_request"})
    head = api.event_count()

    if case == "not a lead id":
        target = "not-a-uuid"
    answer = httpx.post(
        f"{api.url}/v1/privacy/subjects/{target}/erase",
        json=body,
        headers=mine.headers(Role.AUDITOR),
        timeout=30,
    )

    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert api.event_count() == head
    assert not api.store.app.get(Lead, lead_id).erased

"""Templates over HTTP: an admin registers the tenant's approved templates; outside the
24-hour window an attendant's free reply is refused and a template goes, as the Cloud
API's `type: template` with its parameters, through the real relay and dispatcher."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.access_helpers import team
from tests.e2e.conftest import Api, running_api
from tests.e2e.fakes import Outside
from tests.e2e.webhook_helpers import cloud_tenant
from tests.e2e.workspace_helpers import inbound
from urbana.adapters.embedded import ServiceUrls
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

TEMPLATE = {
    "language": "pt_BR",
    "parameters": ["nome", "horario"],
    "text": "Olá {{1}}! Sua visita está confirmada para {{2}}.",
}


@pytest.fixture(scope="module")
def api(services: ServiceUrls) -> Iterator[Api]:
    with running_api(services, "tpl", ("relay", "dispatcher")) as api:
        yield api


def wait_until(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def stream_version(api: Api, stream: UUID) -> int:
    return len(api.store.app.stream(stream))


def test_admins_register_templates_and_attendants_list_them(api: Api) -> None:
    crew = team(api)
    name = f"visita_{uuid4().hex[:6]}"
    url = f"{api.url}/v1/templates"
    put = httpx.put(f"{url}/{name}", json=TEMPLATE, headers=crew.headers(Role.ADMIN))
    assert put.status_code == 200, put.text
    assert put.json() == {"name": name, **TEMPLATE}
    listed = httpx.get(url, headers=crew.headers(Role.ATTENDANT))
    assert listed.json()["items"] == [{"name": name, **TEMPLATE}]
    bad = httpx.put(
        f"{url}/{name}",
        json={**TEMPLATE, "text": "sem marcadores"},
        headers=crew.headers(Role.ADMIN),
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    assert httpx.get(url, headers=crew.headers(Role.ATTENDANT)).json()["items"][0] == put.json()
    gone = httpx.delete(f"{url}/{name}", headers=crew.headers(Role.ADMIN))
    assert gone.status_code == 204
    assert httpx.delete(f"{url}/{name}", headers=crew.headers(Role.ADMIN)).status_code == 404


def test_outside_the_window_a_template_goes_and_a_free_reply_does_not(
    api: Api, outside: Outside
) -> None:
    tenant = cloud_tenant(api, api_base_url=outside.url)
    tid = UUID(tenant.tenant_id)
    crew = team(api, tid)
    name = f"visita_{uuid4().hex[:6]}"
    httpx.put(f"{api.url}/v1/templates/{name}", json=TEMPLATE, headers=crew.headers(Role.ADMIN))
    wa_id = f"551196{uuid4().int % 10**7:07d}"
    cid = inbound(api, tid, phone=wa_id, at=datetime.now(UTC) - timedelta(hours=25)).conversation_id
    headers = crew.headers(Role.ATTENDANT)
    base = f"{api.url}/v1/conversations/{cid}"
    assert httpx.post(f"{base}/assign", headers=headers).status_code == 200
    before = stream_version(api, cid)

    free = httpx.post(f"{base}/messages", json={"text": "Oi, ainda quer?"}, headers=headers)
    assert free.status_code == 409
    assert "template" in free.json()["detail"]
    unknown = httpx.post(f"{base}/template", json={"name": "nao_existe"}, headers=headers)
    assert unknown.status_code == 422
    wrong = httpx.post(
        f"{base}/template", json={"name": name, "values": {"nome": "Ana"}}, headers=headers
    )
    assert wrong.status_code == 422
    assert stream_version(api, cid) == before  # the refusals appended nothing

    values = {"nome": "Ana", "horario": "amanhã às 10h"}
    sent = httpx.post(f"{base}/template", json={"name": name, "values": values}, headers=headers)
    assert sent.status_code == 202, sent.text

    def delivered() -> list[dict[str, Any]]:
        return outside.sends_to(wa_id)

    (send,) = wait_until(delivered)
    assert send["body"]["type"] == "template"
    assert send["body"]["template"] == {
        "name": name,
        "language": {"code": "pt_BR"},
        "components": [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "Ana"},
                    {"type": "text", "text": "amanhã às 10h"},
                ],
            }
        ],
    }
    (queued,) = [
        e for e in api.store.app.stream(cid) if type(e).__name__ == "OutboundMessageQueued"
    ]
    # The transcript keeps the text the lead read; the template and its values are sealed
    # under the lead's key with it.
    assert queued.text == "Olá Ana! Sua visita está confirmada para amanhã às 10h."
    assert queued.template == {"name": name, "language": "pt_BR", "values": list(values.values())}


def test_templates_are_refused_on_channels_without_them(api: Api) -> None:
    crew = team(api)
    name = f"visita_{uuid4().hex[:6]}"
    httpx.put(f"{api.url}/v1/templates/{name}", json=TEMPLATE, headers=crew.headers(Role.ADMIN))
    app = api.store.app
    from urbana.application.app import ReceiveMessage
    from urbana.application.channels import InboundMessage

    message = InboundMessage(
        provider_message_id=f"evo.{uuid4().hex}",
        contact="5511977776666",
        phone="5511977776666",
        sent_at=datetime.now(UTC),
        kind="text",
        text="oi",
    )
    cid = app.receive_message(ReceiveMessage(crew.tenant_id, "evolution", message)).conversation_id
    headers = crew.headers(Role.ATTENDANT)
    base = f"{api.url}/v1/conversations/{cid}"
    assert httpx.post(f"{base}/assign", headers=headers).status_code == 200
    values = {"nome": "Ana", "horario": "10h"}
    refused = httpx.post(f"{base}/template", json={"name": name, "values": values}, headers=headers)
    assert refused.status_code == 422
    assert "Cloud API" in refused.json()["detail"]

"""An attendant's reply reaches the gateway once, however often the request is retried.

The API with the relay and the dispatcher on the real embedded services, and a fake
Cloud API (tests.e2e.fakes) receiving what the dispatcher sends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.access_helpers import team
from tests.e2e.conftest import Api, running_api
from tests.e2e.fakes import Outside
from tests.e2e.webhook_helpers import cloud_tenant, cloud_text, post_cloud
from urbana.adapters.embedded import ServiceUrls
from urbana.domain.conversation import Conversation
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(services: ServiceUrls) -> Iterator[Api]:
    with running_api(services, "reply", ("relay", "dispatcher")) as api:
        yield api


def wait_until(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_a_reply_retried_five_times_reaches_the_gateway_once(api: Api, outside: Outside) -> None:
    tenant = cloud_tenant(api, api_base_url=outside.url)
    crew = team(api, UUID(tenant.tenant_id))
    wa_id = f"551197{uuid4().int % 10**7:07d}"
    with httpx.Client(timeout=10) as client:
        webhook = post_cloud(client, api, tenant, cloud_text(tenant.phone_number_id, wa_id, "oi"))
    assert webhook.status_code == 200, webhook.text
    cid = Conversation.create_id(UUID(tenant.tenant_id), "cloud", wa_id)
    headers = crew.headers(Role.ATTENDANT)
    base = f"{api.url}/v1/conversations/{cid}"
    assert httpx.post(f"{base}/assign", headers=headers).status_code == 200
    key = {**headers, "Idempotency-Key": uuid4().hex}
    answers = [
        httpx.post(f"{base}/messages", json={"text": "Olá, aqui é a Ana."}, headers=key)
        for _ in range(5)
    ]
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["outbound_id"] for a in answers}) == 1
    later = httpx.post(f"{base}/messages", json={"text": "Posso ajudar?"}, headers=headers)
    assert later.status_code == 202, later.text

    def sent() -> list[Any]:
        found = [e for e in api.store.app.stream(cid) if type(e).__name__ == "OutboundMessageSent"]
        return found if len(found) == 2 else []

    wait_until(sent)
    texts = [s["body"]["text"]["body"] for s in outside.sends_to(wa_id)]
    assert texts == ["Olá, aqui é a Ana.", "Posso ajudar?"]
    queued = [e for e in api.store.app.stream(cid) if type(e).__name__ == "OutboundMessageQueued"]
    assert [q.outbound_id for q in queued] == [
        answers[0].json()["outbound_id"],
        later.json()["outbound_id"],
    ]

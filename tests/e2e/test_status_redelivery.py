"""Gateways redeliver status webhooks freely: a redelivery answers 200 and appends nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.conftest import Api
from tests.e2e.webhook_helpers import (
    CloudTenant,
    SecretTenant,
    cloud_tenant,
    cloud_text,
    evolution_tenant,
    post_cloud,
    zapi_tenant,
)
from tests.helpers import ai_reply
from urbana.domain.conversation import Conversation

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parent.parent / "fixtures"

CLOUD_STATUSES = [
    "status_sent.json",
    "status_delivered.json",
    "status_read.json",
    "status_played.json",
    "status_failed.json",
    "status_bsuid_delivered.json",
    "status_sent_biz_opaque.json",
    "status_delivered_and_read.json",
]
ZAPI_STATUSES = [
    "status_sent.json",
    "status_received.json",
    "status_read_several_ids.json",
    "status_played.json",
]
EVOLUTION_STATUSES = [
    "update_server_ack.json",
    "update_delivery_ack.json",
    "update_read.json",
    "update_played.json",
    "update_error.json",
    "update_key_object.json",
    "update_uppercase_numeric.json",
]
# Shapes that carry no delivery fact for us: answered 200 "ignored", twice.
IGNORED = [
    ("cloud", "status_group_read.json"),
    ("zapi", "status_read_by_me.json"),
    ("evolution", "update_inbound_read_ignored.json"),
]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def tenants(api: Api) -> dict[str, Any]:
    return {
        "cloud": cloud_tenant(api),
        "evolution": evolution_tenant(api),
        "zapi": zapi_tenant(api),
    }


def _fresh_ids(ids: list[str]) -> dict[str, str]:
    """One new provider id per distinct id in the fixture, so every test starts unknown."""
    return {old: f"{old}.{uuid4().hex[:12]}" for old in dict.fromkeys(ids)}


def _cloud_body(tenant: CloudTenant, payload: dict[str, Any]) -> dict[str, Any]:
    values = [c["value"] for e in payload["entry"] for c in e["changes"]]
    renamed = _fresh_ids([s["id"] for v in values for s in v.get("statuses", [])])
    for value in values:
        value["metadata"]["phone_number_id"] = tenant.phone_number_id
        for status in value.get("statuses", []):
            status["id"] = renamed[status["id"]]
    return payload


def _zapi_body(tenant: SecretTenant, payload: dict[str, Any]) -> dict[str, Any]:
    payload["instanceId"] = tenant.instance
    renamed = _fresh_ids(payload["ids"])
    payload["ids"] = [renamed[i] for i in payload["ids"]]
    return payload


def _evolution_body(tenant: SecretTenant, payload: dict[str, Any]) -> dict[str, Any]:
    payload["instance"] = tenant.instance
    records = payload["data"] if isinstance(payload["data"], list) else [payload["data"]]
    for record in records:
        if "keyId" in record:
            record["keyId"] = f"{record['keyId']}{uuid4().hex[:12].upper()}"
        else:
            record["key"]["id"] = f"{record['key']['id']}{uuid4().hex[:12].upper()}"
    return payload


def _poster(
    api: Api, client: httpx.Client, tenants: dict[str, Any], channel: str, fixture: str
) -> Callable[[], httpx.Response]:
    """Post one fixture, retargeted at this module's tenant with fresh ids, any number of times."""
    payload = json.loads((FIXTURES / channel / fixture).read_text())
    tenant = tenants[channel]
    if channel == "cloud":
        body = _cloud_body(tenant, payload)
        return lambda: post_cloud(client, api, tenant, body)
    if channel == "zapi":
        body = _zapi_body(tenant, payload)
        return lambda: client.post(f"{api.url}/webhooks/zapi/{tenant.secret}", json=body)
    body = _evolution_body(tenant, payload)
    return lambda: client.post(f"{api.url}/webhooks/evolution/{tenant.secret}", json=body)


@pytest.mark.parametrize(
    ("channel", "fixture"),
    [("cloud", f) for f in CLOUD_STATUSES]
    + [("zapi", f) for f in ZAPI_STATUSES]
    + [("evolution", f) for f in EVOLUTION_STATUSES],
)
def test_a_held_status_delivered_again_appends_nothing_and_is_a_duplicate(
    api: Api, client: httpx.Client, tenants: dict[str, Any], channel: str, fixture: str
) -> None:
    post = _poster(api, client, tenants, channel, fixture)
    before = api.event_count()
    first = post()
    assert first.status_code == 200, first.text
    held = first.json()["statuses"]["held"]
    assert held >= 1
    assert first.json()["duplicates"] == 0
    after_first = api.event_count()
    assert after_first > before
    for _ in range(3):
        again = post()
        assert again.status_code == 200, again.text
        assert again.json()["duplicates"] == held, again.text
        assert again.json()["received"] == 0
        assert "statuses" not in again.json(), again.text
        assert api.event_count() == after_first


@pytest.mark.parametrize(("channel", "fixture"), IGNORED)
def test_a_status_that_carries_no_delivery_fact_appends_nothing(
    api: Api, client: httpx.Client, tenants: dict[str, Any], channel: str, fixture: str
) -> None:
    post = _poster(api, client, tenants, channel, fixture)
    before = api.event_count()
    for _ in range(2):
        r = post()
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ignored"}
    assert api.event_count() == before


def test_an_applied_status_delivered_again_is_stale_and_appends_nothing(
    api: Api, client: httpx.Client, tenants: dict[str, Any]
) -> None:
    t: CloudTenant = tenants["cloud"]
    wa_id = f"55119{uuid4().int % 10**8:08d}"
    assert post_cloud(client, api, t, cloud_text(t.phone_number_id, wa_id, "oi")).status_code == 200
    conversation_id = Conversation.create_id(UUID(t.tenant_id), "cloud", wa_id)
    outbound = ai_reply(
        api.store.app, conversation_id, reply_to_seq=1, text="Olá!", intent="greet", confidence=0.9
    )
    wamid = f"wamid.{uuid4().hex}"
    api.store.app.mark_sent(conversation_id, outbound, wamid)
    delivered = _cloud_status(t, wamid, "delivered", wa_id)
    first = post_cloud(client, api, t, delivered)
    assert first.status_code == 200
    assert first.json()["statuses"] == {"applied": 1}
    count = api.event_count()
    for _ in range(2):
        again = post_cloud(client, api, t, delivered)
        assert again.status_code == 200
        assert again.json()["statuses"] == {"stale": 1}
        assert api.event_count() == count
    assert (
        api.store.app.get(Conversation, conversation_id).outbound[outbound].delivery == "delivered"
    )


def test_a_status_about_an_inbound_message_appends_nothing(
    api: Api, client: httpx.Client, tenants: dict[str, Any]
) -> None:
    t: CloudTenant = tenants["cloud"]
    wa_id = f"55119{uuid4().int % 10**8:08d}"
    wamid = f"wamid.{uuid4().hex}"
    message = cloud_text(t.phone_number_id, wa_id, "oi", wamid=wamid)
    assert post_cloud(client, api, t, message).status_code == 200
    count = api.event_count()
    for _ in range(2):
        r = post_cloud(client, api, t, _cloud_status(t, wamid, "read", wa_id))
        assert r.status_code == 200
        assert r.json()["statuses"] == {"stale": 1}
        assert api.event_count() == count


def test_a_held_status_redelivered_after_its_message_arrived_appends_nothing(
    api: Api, client: httpx.Client, tenants: dict[str, Any]
) -> None:
    t: SecretTenant = tenants["evolution"]
    key_id = uuid4().hex.upper()
    url = f"{api.url}/webhooks/evolution/{t.secret}"
    status = json.loads((FIXTURES / "evolution" / "update_delivery_ack.json").read_text())
    status["instance"] = t.instance
    status["data"]["keyId"] = key_id
    assert client.post(url, json=status).json()["statuses"] == {"held": 1}
    sent_from_phone = json.loads((FIXTURES / "evolution" / "from_me.json").read_text())
    sent_from_phone["instance"] = t.instance
    sent_from_phone["data"]["key"]["id"] = key_id
    sent_from_phone["data"]["messageTimestamp"] = int(time.time())
    assert client.post(url, json=sent_from_phone).json()["received"] == 1
    count = api.event_count()
    again = client.post(url, json=status)
    assert again.status_code == 200
    assert again.json()["statuses"] == {"stale": 1}
    assert api.event_count() == count


def _cloud_status(t: CloudTenant, wamid: str, status: str, wa_id: str) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "5511933334444",
                                "phone_number_id": t.phone_number_id,
                            },
                            "statuses": [
                                {
                                    "id": wamid,
                                    "status": status,
                                    "timestamp": str(int(datetime.now(UTC).timestamp())),
                                    "recipient_id": wa_id,
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }

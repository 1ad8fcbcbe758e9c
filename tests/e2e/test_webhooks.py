"""Webhooks over HTTP into the real store: durable, exactly once, bad input changes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import jwt
import pytest
import redis

from tests.e2e.conftest import Api
from tests.e2e.webhook_helpers import (
    cloud_tenant,
    cloud_text,
    evolution_tenant,
    post_cloud,
    sign,
    zapi_tenant,
)
from urbana.domain.conversation import Conversation, Status
from urbana.domain.lead import Lead

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parent.parent / "fixtures"


def received_events(api: Api, conversation_id: UUID) -> list[object]:
    return [
        e
        for e in api.store.app.stream(conversation_id)
        if type(e).__qualname__ == "Conversation.MessageReceived"
    ]


def phone() -> str:
    """A Brazilian mobile (9 + 8 digits starting 6-9, so the ninth digit is droppable)."""
    return f"551199{uuid4().int % 10**7:07d}"


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


# -- Cloud API ------------------------------------------------------------------------


def test_cloud_handshake_echoes_the_challenge_for_a_known_token(
    api: Api, client: httpx.Client
) -> None:
    t = cloud_tenant(api)
    params = {
        "hub.mode": "subscribe",
        "hub.verify_token": t.verify_token,
        "hub.challenge": "1158201444",
    }
    r = client.get(f"{api.url}/webhooks/whatsapp-cloud", params=params)
    assert r.status_code == 200
    assert r.text == "1158201444"
    wrong = client.get(
        f"{api.url}/webhooks/whatsapp-cloud", params={**params, "hub.verify_token": "nope"}
    )
    assert wrong.status_code == 403
    assert wrong.headers["content-type"] == "application/problem+json"
    missing = client.get(f"{api.url}/webhooks/whatsapp-cloud", params={"hub.mode": "subscribe"})
    assert missing.status_code == 400


def test_signed_text_message_is_durable_when_answered(api: Api, client: httpx.Client) -> None:
    t = cloud_tenant(api)
    wa_id = phone()
    r = post_cloud(client, api, t, cloud_text(t.phone_number_id, wa_id, "Quanto custa a entrega?"))
    assert r.status_code == 200, r.text
    assert r.json()["received"] == 1
    conv = api.store.app.get(
        Conversation, Conversation.create_id(UUID(t.tenant_id), "cloud", wa_id)
    )
    assert conv.history[-1]["text"] == "Quanto custa a entrega?"


@pytest.mark.parametrize("case", ["missing", "wrong", "reserialised"])
def test_bad_signature_is_401_and_appends_nothing(
    api: Api, client: httpx.Client, case: str
) -> None:
    t = cloud_tenant(api)
    payload = cloud_text(t.phone_number_id, phone(), "oi")
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if case == "wrong":
        headers["X-Hub-Signature-256"] = sign(body, "not-the-secret")
    elif case == "reserialised":
        headers["X-Hub-Signature-256"] = sign(body, t.app_secret)
        body = json.dumps(payload, indent=2).encode()  # same JSON, other bytes
    before = api.event_count()
    r = client.post(f"{api.url}/webhooks/whatsapp-cloud", content=body, headers=headers)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert api.event_count() == before


def test_ten_identical_concurrent_webhooks_record_one_message(api: Api) -> None:
    t = cloud_tenant(api)
    wa_id = phone()
    payload = cloud_text(t.phone_number_id, wa_id, "Vocês abrem sábado?")
    with httpx.Client(timeout=10) as c, ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda _: post_cloud(c, api, t, payload).status_code, range(10)))
    assert codes == [200] * 10
    conv_id = Conversation.create_id(UUID(t.tenant_id), "cloud", wa_id)
    assert len(received_events(api, conv_id)) == 1


def test_retry_after_the_cache_forgot_is_still_one_event(api: Api, client: httpx.Client) -> None:
    t = cloud_tenant(api)
    wa_id = phone()
    payload = cloud_text(t.phone_number_id, wa_id, "Ainda tem vaga?")
    assert post_cloud(client, api, t, payload).json()["received"] == 1
    # Minutes later the Redis entry may be gone: the store must still refuse it.
    with redis.Redis.from_url(api.settings.redis_url or "") as r:
        r.delete(*r.keys(f"urbana:seen:{t.tenant_id}:*"))
    again = post_cloud(client, api, t, payload)
    assert again.status_code == 200
    assert again.json()["duplicates"] == 1
    conv_id = Conversation.create_id(UUID(t.tenant_id), "cloud", wa_id)
    assert len(received_events(api, conv_id)) == 1


def test_ninth_digit_variants_reach_one_lead(api: Api, client: httpx.Client) -> None:
    t = cloud_tenant(api)
    with_nine = phone()
    without_nine = with_nine[:4] + with_nine[5:]
    post_cloud(client, api, t, cloud_text(t.phone_number_id, with_nine, "oi"))
    post_cloud(client, api, t, cloud_text(t.phone_number_id, without_nine, "oi de novo"))
    tid = UUID(t.tenant_id)
    lead = api.store.app.get(Lead, Lead.create_id(tid, f"phone:{with_nine}"))
    assert lead.phone in (with_nine, without_nine)
    conv = api.store.app.get(Conversation, Conversation.create_id(tid, "cloud", with_nine))
    assert conv.inbound_seq == 2


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[]", 422),
        (json.dumps({"object": "page", "entry": []}).encode(), 422),
        (b"x" * (1024 * 1024 + 1), 413),
    ],
)
def test_malformed_bodies_are_4xx_problems_and_append_nothing(
    api: Api, client: httpx.Client, body: bytes, status: int
) -> None:
    before = api.event_count()
    r = client.post(
        f"{api.url}/webhooks/whatsapp-cloud",
        content=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, "x")},
    )
    assert r.status_code in (status, 400, 401, 422)
    assert r.status_code < 500
    if status == 413:
        assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert api.event_count() == before


def test_unknown_phone_number_id_is_404(api: Api, client: httpx.Client) -> None:
    body = json.dumps(cloud_text("999999999999999", phone(), "oi")).encode()
    before = api.event_count()
    r = client.post(
        f"{api.url}/webhooks/whatsapp-cloud",
        content=body,
        headers={"X-Hub-Signature-256": sign(body, "x")},
    )
    assert r.status_code == 404
    assert api.event_count() == before


def test_every_cloud_fixture_is_accepted_end_to_end(api: Api, client: httpx.Client) -> None:
    t = cloud_tenant(api, phone_number_id="106540352242922")
    for path in sorted((FIXTURES / "cloud").glob("*.json")):
        if path.name == "two_phone_numbers.json":
            continue
        body = path.read_bytes()
        r = client.post(
            f"{api.url}/webhooks/whatsapp-cloud",
            content=body,
            headers={"X-Hub-Signature-256": sign(body, t.app_secret)},
        )
        assert r.status_code == 200, (path.name, r.text)


def test_cloud_status_before_its_message_is_held(api: Api, client: httpx.Client) -> None:
    t = cloud_tenant(api)
    payload = json.loads((FIXTURES / "cloud" / "status_delivered.json").read_text())
    payload["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = t.phone_number_id
    r = post_cloud(client, api, t, payload)
    assert r.status_code == 200
    assert r.json()["statuses"] == {"held": 1}


# -- Evolution API ----------------------------------------------------------------------


def evolution_body(instance: str, remote: str, text: str, *, from_me: bool = False) -> bytes:
    payload = json.loads((FIXTURES / "evolution" / "text_conversation.json").read_text())
    payload["instance"] = instance
    payload["data"]["key"].update(
        {"remoteJid": remote, "fromMe": from_me, "id": uuid4().hex.upper()}
    )
    payload["data"]["message"] = {"conversation": text}
    payload["data"]["messageTimestamp"] = int(time.time())
    return json.dumps(payload).encode()


def test_evolution_message_by_path_secret(api: Api, client: httpx.Client) -> None:
    t = evolution_tenant(api)
    number = phone()
    r = client.post(
        f"{api.url}/webhooks/evolution/{t.secret}",
        content=evolution_body(t.instance, f"{number}@s.whatsapp.net", "Boa tarde"),
    )
    assert r.status_code == 200
    assert r.json()["received"] == 1
    wrong = client.post(
        f"{api.url}/webhooks/evolution/{uuid4().hex}",
        content=evolution_body(t.instance, f"{number}@s.whatsapp.net", "Boa tarde"),
    )
    assert wrong.status_code == 404


def test_evolution_other_instance_with_this_secret_is_refused(
    api: Api, client: httpx.Client
) -> None:
    t = evolution_tenant(api)
    before = api.event_count()
    r = client.post(
        f"{api.url}/webhooks/evolution/{t.secret}",
        content=evolution_body("someone-else", f"{phone()}@s.whatsapp.net", "oi"),
    )
    assert r.status_code == 403
    assert api.event_count() == before


def test_evolution_from_me_is_a_human_takeover(api: Api, client: httpx.Client) -> None:
    t = evolution_tenant(api)
    number = phone()
    jid = f"{number}@s.whatsapp.net"
    client.post(
        f"{api.url}/webhooks/evolution/{t.secret}", content=evolution_body(t.instance, jid, "Oi")
    )
    r = client.post(
        f"{api.url}/webhooks/evolution/{t.secret}",
        content=evolution_body(t.instance, jid, "Aqui é a Júlia, da loja", from_me=True),
    )
    assert r.status_code == 200
    conv = api.store.app.get(
        Conversation, Conversation.create_id(UUID(t.tenant_id), "evolution", jid)
    )
    assert conv.status is Status.HUMAN
    assert conv.assignee == "business_phone"


def test_evolution_jwt_is_checked_when_configured(api: Api, client: httpx.Client) -> None:
    key = uuid4().hex + uuid4().hex
    t = evolution_tenant(api, jwt_key=key)
    body = evolution_body(t.instance, f"{phone()}@s.whatsapp.net", "oi")
    url = f"{api.url}/webhooks/evolution/{t.secret}"
    assert client.post(url, content=body).status_code == 401
    expired = jwt.encode({"exp": int(time.time()) - 3600}, key, algorithm="HS256")
    assert (
        client.post(url, content=body, headers={"Authorization": f"Bearer {expired}"}).status_code
        == 401
    )
    good = jwt.encode({"exp": int(time.time()) + 600, "app": "evolution"}, key, algorithm="HS256")
    assert (
        client.post(url, content=body, headers={"Authorization": f"Bearer {good}"}).status_code
        == 200
    )


# -- Z-API ----------------------------------------------------------------------------------


def test_zapi_message_and_status_list(api: Api, client: httpx.Client) -> None:
    t = zapi_tenant(api)
    payload = json.loads((FIXTURES / "zapi" / "text.json").read_text())
    payload.update({"instanceId": t.instance, "messageId": uuid4().hex.upper(), "phone": phone()})
    r = client.post(f"{api.url}/webhooks/zapi/{t.secret}", json=payload)
    assert r.status_code == 200
    assert r.json()["received"] == 1
    status = json.loads((FIXTURES / "zapi" / "status_read_several_ids.json").read_text())
    status["instanceId"] = t.instance
    r = client.post(f"{api.url}/webhooks/zapi/{t.secret}", json=status)
    assert r.status_code == 200
    assert r.json()["statuses"] == {"held": 3}


def test_zapi_group_message_is_ignored(api: Api, client: httpx.Client) -> None:
    t = zapi_tenant(api)
    payload = json.loads((FIXTURES / "zapi" / "group.json").read_text())
    payload["instanceId"] = t.instance
    before = api.event_count()
    r = client.post(f"{api.url}/webhooks/zapi/{t.secret}", json=payload)
    assert r.status_code == 200
    assert r.json()["status"] == "ignored"
    assert api.event_count() == before


# -- admin ------------------------------------------------------------------------------------


def test_admin_endpoints_need_the_key(api: Api, client: httpx.Client) -> None:
    r = client.post(f"{api.url}/admin/tenants", json={"name": "Sem chave"})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    r = client.post(
        f"{api.url}/admin/tenants", json={"name": "x"}, headers={"X-Admin-Key": "wrong"}
    )
    assert r.status_code == 401


def test_a_route_cannot_be_taken_by_another_tenant(api: Api, client: httpx.Client) -> None:
    first = cloud_tenant(api)
    from tests.e2e.webhook_helpers import admin, create_tenant

    other = create_tenant(api)
    r = client.post(
        f"{api.url}/admin/tenants/{other}/channels",
        json={
            "kind": "cloud",
            "fields": {
                "phone_number_id": first.phone_number_id,
                "app_secret": "a" * 32,
                "verify_token": uuid4().hex,
                "access_token": "b" * 32,
            },
        },
        headers=admin(api),
    )
    assert r.status_code == 409

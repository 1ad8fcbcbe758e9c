"""A tenant's channels and their live state: Evolution's `qrcode.updated` and
`connection.update` webhooks recorded on the channel, `GET /v1/channels`, and linking an
instance through Evolution's connect endpoint (a local fake speaking its protocol)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.access_helpers import access, bearer
from tests.e2e.conftest import Api
from tests.e2e.fake_evolution import PAIRING_CODE, QR_IMAGE, FakeEvolution, fake_evolution
from tests.e2e.test_console import tenant_events_since
from tests.e2e.test_stream_api import events
from tests.e2e.webhook_helpers import cloud_tenant, connect, create_tenant
from urbana.adapters.postgres.schema import EVENTS_TABLE
from urbana.domain.contacts import channel_route_id_for
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

API_KEY = "evo-" + "k" * 28


@pytest.fixture(scope="module")
def evolution() -> Iterator[FakeEvolution]:
    with fake_evolution(API_KEY) as fake:
        yield fake


class Linked:
    """A tenant with an Evolution channel on the fake, and an admin's headers."""

    def __init__(self, api: Api, evolution: FakeEvolution, api_url: str | None = None) -> None:
        self.api = api
        self.tenant_id = create_tenant(api)
        self.instance = f"loja-{uuid4().hex[:8]}"
        self.secret = uuid4().hex
        evolution.known.add(self.instance)
        connect(
            api,
            self.tenant_id,
            "evolution",
            {
                "instance": self.instance,
                "webhook_secret": self.secret,
                "api_url": api_url or evolution.url,
                "api_key": API_KEY,
            },
        )
        key = access(api).create_api_key(UUID(self.tenant_id), role=Role.ADMIN, by=None)
        self.headers = bearer(key.token)
        self.channel_id = str(channel_route_id_for("evolution", self.instance))

    def webhook(self, event: str, data: dict[str, Any]) -> httpx.Response:
        body = {
            "event": event,
            "instance": self.instance,
            "data": data,
            "destination": f"{self.api.url}/webhooks/evolution/{self.secret}",
            "date_time": "2026-12-02T03:01:20.092Z",
            "sender": "5511999990000@s.whatsapp.net",
            "server_url": "http://evolution.local:8080",
            "apikey": API_KEY,
        }
        return httpx.post(f"{self.api.url}/webhooks/evolution/{self.secret}", json=body)

    def channel(self) -> dict[str, Any]:
        r = httpx.get(f"{self.api.url}/v1/channels", headers=self.headers)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        found: dict[str, Any] = next(c for c in items if c["id"] == self.channel_id)
        return found

    def connect(self, channel_id: str | None = None) -> httpx.Response:
        return httpx.post(
            f"{self.api.url}/v1/channels/{channel_id or self.channel_id}/connect",
            headers=self.headers,
        )


def test_webhooks_move_the_channel_through_its_states(
    api: Api, evolution: FakeEvolution, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    t = Linked(api, evolution)
    first = t.channel()
    assert first["kind"] == "evolution"
    assert first["route_key"] == t.instance
    assert first["state"] is None  # Evolution has said nothing yet

    # Evolution v2 instance webhooks: `qrcode.updated` with the QR under data.qrcode ...
    qr = {"qrcode": {"instance": t.instance, "pairingCode": PAIRING_CODE, "code": "2@X"}}
    qr["qrcode"]["base64"] = QR_IMAGE
    r = t.webhook("qrcode.updated", qr)
    assert r.status_code == 200, r.text
    assert r.json()["states"] == 1
    waiting = t.channel()
    assert waiting["state"] == "waiting_qr"
    assert waiting["qr_code"] == QR_IMAGE
    assert waiting["pairing_code"] == PAIRING_CODE
    assert waiting["since"].startswith("2026-12-02T03:01:20")
    # ... redelivered: nothing new is recorded.
    assert t.webhook("qrcode.updated", qr).json()["states"] == 0

    # Global webhooks name the event in capitals; the phone scanned the code.
    r = t.webhook(
        "CONNECTION_UPDATE", {"instance": t.instance, "state": "open", "statusReason": 200}
    )
    assert r.status_code == 200, r.text
    connected = t.channel()
    assert (connected["state"], connected["state_reason"]) == ("connected", "200")
    assert connected["qr_code"] is None
    assert connected["pairing_code"] is None

    # The phone logged out: "desconectado" in the panel, and the reason.
    t.webhook("connection.update", {"instance": t.instance, "state": "close", "statusReason": 401})
    gone = t.channel()
    assert (gone["state"], gone["state_reason"]) == ("disconnected", "401")

    # The QR code is a way into the account: sealed in the store, never logged.
    assert not [r for r in caplog.records if QR_IMAGE in r.getMessage()]
    table = f'"{api.settings.database_schema}".{EVENTS_TABLE}'
    with api.store.pool.connection() as conn:
        rows = conn.execute(f"SELECT state FROM {table}").fetchall()  # noqa: S608
    assert [row for row in rows if b"waiting_qr" in bytes(row[0])]  # states are readable JSON
    assert not [row for row in rows if QR_IMAGE.encode() in bytes(row[0])]


def test_a_webhook_for_another_instance_is_refused_and_appends_nothing(
    api: Api, evolution: FakeEvolution
) -> None:
    t = Linked(api, evolution)
    before = api.event_count()
    body = {"instance": "outra", "state": "open", "statusReason": 200}
    r = httpx.post(
        f"{api.url}/webhooks/evolution/{t.secret}",
        json={"event": "connection.update", "instance": "outra", "data": body},
    )
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
    bad_qr = t.webhook("qrcode.updated", {"qrcode": {"code": "2@X"}})  # no image
    assert bad_qr.status_code == 422, bad_qr.text
    assert tenant_events_since(api, before, UUID(t.tenant_id)) == []
    assert t.channel()["state"] is None


def test_connect_asks_evolution_for_the_qr_code_and_records_it(
    api: Api, evolution: FakeEvolution, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    t = Linked(api, evolution)
    r = t.connect()
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["state"], body["qr_code"], body["pairing_code"]) == (
        "waiting_qr",
        QR_IMAGE,
        PAIRING_CODE,
    )
    assert evolution.calls[-1] == {"instance": t.instance, "apikey": API_KEY}
    assert t.channel()["qr_code"] == QR_IMAGE
    assert not [r for r in caplog.records if QR_IMAGE in r.getMessage()]

    evolution.linked.add(t.instance)  # scanned meanwhile: Evolution says it is open
    again = t.connect().json()
    assert (again["state"], again["qr_code"]) == ("connected", None)


def test_connect_refusals_are_problems_and_append_nothing(
    api: Api, evolution: FakeEvolution
) -> None:
    t = Linked(api, evolution)
    before = api.event_count()
    # Evolution refuses (the instance was deleted there): 502, nothing recorded.
    evolution.known.discard(t.instance)
    refused = t.connect()
    assert refused.status_code == 502, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert "does not exist" in refused.json()["detail"]
    # Evolution does not answer at all.
    down = Linked(api, evolution, api_url="http://127.0.0.1:9")
    assert down.connect().status_code == 502
    # Not a channel linked by QR code.
    cloud = cloud_tenant(api)
    cloud_id = str(channel_route_id_for("cloud", cloud.phone_number_id))
    key = access(api).create_api_key(UUID(cloud.tenant_id), role=Role.ADMIN, by=None)
    r = httpx.post(f"{api.url}/v1/channels/{cloud_id}/connect", headers=bearer(key.token))
    assert r.status_code == 409, r.text
    # Another tenant's channel, and a route that is a secret's hash, are not found.
    assert t.connect(down.channel_id).status_code == 404
    assert t.connect(str(uuid4())).status_code == 404
    assert t.connect("not-an-id").status_code == 422
    assert tenant_events_since(api, before, UUID(t.tenant_id)) == []


def test_a_channel_state_reaches_admins_live_without_its_qr(
    api: Api, evolution: FakeEvolution
) -> None:
    t = Linked(api, evolution)
    before = api.event_count()
    qr = {"qrcode": {"instance": t.instance, "base64": QR_IMAGE, "pairingCode": PAIRING_CODE}}
    assert t.webhook("qrcode.updated", qr).status_code == 200
    token = t.headers["Authorization"].removeprefix("Bearer ")

    got = events(api, token, last_event_id=before, until=lambda e: e.type == "channel.updated")

    assert got[-1].data == {"channel_id": t.channel_id, "state": "waiting_qr", "reason": None}
    assert QR_IMAGE not in str([e.data for e in got])

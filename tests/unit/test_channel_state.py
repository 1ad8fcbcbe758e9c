"""A channel's live state: Evolution's state webhooks and connect answer, and the rule that
records it on the channel's route."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
import pytest

from urbana.adapters.channels.evolution import ConnectFailed, EvolutionChannel
from urbana.application.channels import ChannelState
from urbana.domain.errors import InvalidInput
from urbana.domain.tenant import ChannelRoute
from urbana.errors import Rejected

QR = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAQAAAAEAAQMAAABmvDolAAAA"
CONFIG = {"api_url": "http://evolution.local/", "api_key": "evo-key", "instance": "loja"}


def webhook(event: str, data: Any, date_time: str = "2025-05-02T03:01:20.092Z") -> bytes:
    body = {"event": event, "instance": "loja", "data": data, "date_time": date_time}
    return json.dumps(body).encode()


def parse(body: bytes) -> ChannelState:
    (item,) = EvolutionChannel(httpx.AsyncClient()).parse(body)
    assert item.route_key == "loja"
    assert (item.messages, item.statuses) == ((), ())
    (state,) = item.states
    return state


@pytest.mark.parametrize(
    ("raw", "state"),
    [("open", "connected"), ("connecting", "connecting"), ("close", "disconnected")],
)
def test_connection_update_names_the_link_state(raw: str, state: str) -> None:
    got = parse(
        webhook("connection.update", {"instance": "loja", "state": raw, "statusReason": 401})
    )
    assert (got.state, got.reason, got.qr_code) == (state, "401", None)
    assert got.at == datetime(2025, 5, 2, 3, 1, 20, 92000, tzinfo=UTC)


def test_a_connection_state_baileys_added_later_records_nothing() -> None:
    body = webhook("CONNECTION_UPDATE", {"instance": "loja", "state": "refused"})
    assert EvolutionChannel(httpx.AsyncClient()).parse(body) == ()


@pytest.mark.parametrize(
    "data",
    [
        {"qrcode": {"instance": "loja", "pairingCode": "WZYEH1YY", "code": "2@A", "base64": QR}},
        {"qrcode": {"base64": QR, "code": "2@A"}, "count": 1, "pairingCode": None},
    ],
)
def test_qrcode_updated_carries_the_qr_image(data: dict[str, Any]) -> None:
    got = parse(webhook("QRCODE_UPDATED", data, date_time="2024-01-01 00:00:00"))
    assert (got.state, got.qr_code) == ("waiting_qr", QR)
    assert got.at == datetime(2024, 1, 1, tzinfo=UTC)


def test_a_qrcode_updated_without_an_image_is_refused() -> None:
    with pytest.raises(Rejected) as refused:
        EvolutionChannel(httpx.AsyncClient()).parse(webhook("qrcode.updated", {"qrcode": {}}))
    assert refused.value.status == 422


async def connect_with(handler: Any) -> ChannelState:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await EvolutionChannel(client, timeout=5).connect(CONFIG)


async def test_connect_calls_evolution_with_its_api_key_and_reads_the_qr() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"pairingCode": "WZYEH1YY", "code": "2@A", "base64": QR, "count": 1}
        return httpx.Response(200, json=body)

    got = await connect_with(handler)
    assert (got.state, got.qr_code, got.pairing_code) == ("waiting_qr", QR, "WZYEH1YY")
    assert [(r.method, str(r.url), r.headers["apikey"]) for r in seen] == [
        ("GET", "http://evolution.local/instance/connect/loja", "evo-key")
    ]


@pytest.mark.parametrize(
    ("answer", "state"),
    [
        ({"instance": {"instanceName": "loja", "state": "open"}}, "connected"),
        ({"count": 0}, "connecting"),  # still starting: the QR follows by webhook
        (
            {
                "instance": {"instanceName": "loja", "status": "connecting"},
                "qrcode": {"base64": QR},
            },
            "waiting_qr",
        ),
    ],
)
async def test_connect_answers_map_to_states(answer: dict[str, Any], state: str) -> None:
    got = await connect_with(lambda request: httpx.Response(200, json=answer))
    assert got.state == state


@pytest.mark.parametrize(
    "handler",
    [
        lambda request: httpx.Response(401, json={"status": 401, "error": "Unauthorized"}),
        lambda request: httpx.Response(200, content=b"<html>proxy</html>"),
        lambda request: (_ for _ in ()).throw(httpx.ConnectError("refused", request=request)),
    ],
)
async def test_connect_failures_are_connect_failed(handler: Any) -> None:
    with pytest.raises(ConnectFailed):
        await connect_with(handler)


def route() -> ChannelRoute:
    return ChannelRoute(channel="evolution", route_key=f"loja-{uuid4().hex[:6]}", tenant_id=uuid4())


def test_a_route_records_only_changes_of_state() -> None:
    r = route()
    now = datetime.now(UTC)
    assert r.change_state(state="waiting_qr", at=now, qr_code=QR, pairing_code="AB")
    assert not r.change_state(state="waiting_qr", at=now, qr_code=QR, pairing_code="AB")
    assert r.change_state(state="waiting_qr", at=now, qr_code=QR + "2")  # a fresh QR
    assert r.change_state(state="connected", at=now, reason="200")
    assert (r.state, r.state_reason, r.pairing) == ("connected", "200", {})
    events = r.collect_events()
    assert [type(e).__name__ for e in events][1:] == ["ChannelStateChanged"] * 3
    assert all(vars(e)["tenant_id"] == r.tenant_id for e in events)


@pytest.mark.parametrize(
    "change",
    [
        {"state": "linked"},
        {"state": "waiting_qr"},  # without its QR code
        {"state": "connected", "qr_code": QR},
        {"state": "connected", "at": datetime(2026, 1, 1)},  # naive time
    ],
)
def test_a_route_refuses_a_state_that_cannot_be(change: dict[str, Any]) -> None:
    r = route()
    with pytest.raises(InvalidInput):
        r.change_state(**{"at": datetime.now(UTC), **change})
    assert len(r.collect_events()) == 1  # only ChannelRouted

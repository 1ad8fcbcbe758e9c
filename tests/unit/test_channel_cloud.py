"""The WhatsApp Cloud API adapter: signature, handshake, parsing and sending."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from urbana.adapters.channels.cloud import CloudChannel, verify_handshake, verify_signature
from urbana.adapters.channels.errors import ChannelSendError
from urbana.application.channels import (
    DeliveryStatus,
    InboundMessage,
    OutboundRequest,
    ParsedWebhook,
    StatusUpdate,
)
from urbana.errors import Rejected

FIXTURES = Path(__file__).parents[1] / "fixtures" / "cloud"
PNID = "106540352242922"
WA = "5511987654321"
APP_SECRET = "segredo-do-app"


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def refuse(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"unexpected request {request.url}")


def channel() -> CloudChannel:
    return CloudChannel(httpx.AsyncClient(transport=httpx.MockTransport(refuse)))


def one_message(name: str) -> InboundMessage:
    (parsed,) = channel().parse(fixture(name))
    assert parsed.route_key == PNID
    assert parsed.statuses == ()
    (message,) = parsed.messages
    return message


def from_maria(**fields: object) -> InboundMessage:
    base: dict[str, Any] = {
        "contact": WA,
        "phone": WA,
        "contact_name": "Maria Souza",
    }
    base.update(fields)
    return InboundMessage(**base)


EXPECTED_MESSAGES: dict[str, InboundMessage] = {
    "text": from_maria(
        provider_message_id="wamid.HBgNNTUxMTk4NzY1NDMyMRUCABIYFDNBMDFBQkNERUYwMTIzNDU2Nzg5AA==",
        sent_at=at(1749416383),
        kind="text",
        text="Olá, vocês têm horário amanhã?",
    ),
    "image": from_maria(
        provider_message_id="wamid.IMG001",
        sent_at=at(1749416400),
        kind="image",
        text="Foto do comprovante",
        media_url="1003383421387256",
        media_mime="image/jpeg",
        extra={
            "media_id": "1003383421387256",
            "url": "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1003383421387256",
            "sha256": "HgcvMh3Zy9VZ4G0d7N2pUQ7X9lC0hJ0b0m6ZJxgK1aE=",
        },
    ),
    "audio": from_maria(
        provider_message_id="wamid.AUD001",
        sent_at=at(1749416410),
        kind="audio",
        media_url="1233017621552034",
        media_mime="audio/ogg; codecs=opus",
        extra={
            "media_id": "1233017621552034",
            "sha256": "9Rm3L5qXfXcA0a1b2c3d4e5f6g7h8i9j0kLmNoPqRsT=",
            "voice": True,
        },
    ),
    "video": from_maria(
        provider_message_id="wamid.VID001",
        sent_at=at(1749416420),
        kind="video",
        text="Vídeo do defeito",
        media_url="1184614453184063",
        media_mime="video/mp4",
        extra={"media_id": "1184614453184063", "sha256": "a1b2c3"},
    ),
    "document": from_maria(
        provider_message_id="wamid.DOC001",
        sent_at=at(1749416430),
        kind="document",
        text="Segue o orçamento",
        media_url="1476432863695149",
        media_mime="application/pdf",
        extra={"media_id": "1476432863695149", "sha256": "d4e5f6", "filename": "orcamento.pdf"},
    ),
    "sticker": from_maria(
        provider_message_id="wamid.STK001",
        sent_at=at(1749416440),
        kind="sticker",
        media_url="1096542628532153",
        media_mime="image/webp",
        extra={"media_id": "1096542628532153", "sha256": "s7t8", "animated": False},
    ),
    "location": from_maria(
        provider_message_id="wamid.LOC001",
        sent_at=at(1749416450),
        kind="location",
        text="MASP, Av. Paulista, 1578 - Bela Vista, São Paulo - SP",
        extra={
            "latitude": -23.561414,
            "longitude": -46.655881,
            "name": "MASP",
            "address": "Av. Paulista, 1578 - Bela Vista, São Paulo - SP",
            "url": "https://masp.org.br",
        },
    ),
    "contacts": from_maria(
        provider_message_id="wamid.CON001",
        sent_at=at(1749416460),
        kind="contacts",
        text="João Pereira",
        extra={"contacts": [{"name": "João Pereira", "phones": ["5521998765432"]}]},
    ),
    "interactive_button_reply": from_maria(
        provider_message_id="wamid.BTN001",
        sent_at=at(1749416470),
        kind="interactive",
        text="Quero agendar",
        reply_to="wamid.OUT001",
        extra={"reply_type": "button_reply", "reply_id": "agendar"},
    ),
    "interactive_list_reply": from_maria(
        provider_message_id="wamid.LST001",
        sent_at=at(1749416480),
        kind="interactive",
        text="Unidade Centro",
        reply_to="wamid.OUT002",
        extra={
            "reply_type": "list_reply",
            "reply_id": "unidade-centro",
            "description": "Rua XV de Novembro, 100",
        },
    ),
    "button": from_maria(
        provider_message_id="wamid.TPL001",
        sent_at=at(1749416490),
        kind="button",
        text="Confirmar visita",
        reply_to="wamid.OUT003",
        extra={"payload": "CONFIRMAR_VISITA"},
    ),
    "reaction": from_maria(
        provider_message_id="wamid.RCT001",
        sent_at=at(1749416500),
        kind="reaction",
        text="\U0001f44d",
        extra={"reacted_message_id": "wamid.OUT004"},
    ),
    "context_reply": from_maria(
        provider_message_id="wamid.RPL001",
        sent_at=at(1749416510),
        kind="text",
        text="Pode ser às 15h?",
        reply_to="wamid.OUT005",
    ),
    "referral": from_maria(
        provider_message_id="wamid.ADS001",
        sent_at=at(1749416520),
        kind="text",
        text="Oi, vi o anúncio e quero saber o preço",
        referral={
            "source_url": "https://fb.me/3cr4Wqqkv",
            "source_id": "120226305854810726",
            "source_type": "ad",
            "headline": "Clínica Sorriso",
            "body": "Agende sua avaliação gratuita",
            "media_type": "image",
            "image_url": "https://scontent.xx.fbcdn.net/v/t45.1600-4/anuncio.jpg",
            "ctwa_clid": (
                "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4Xvn"
                "O2E4Nx0-eM-GABDLOPaOdRMv-_zfUQ2a"
            ),
        },
    ),
    "bsuid_without_wa_id": InboundMessage(
        provider_message_id="wamid.BSU001",
        contact="bsuid:BR.1502576394655843",
        phone=None,
        sent_at=at(1776944344),
        kind="text",
        text="Oi, sou eu pelo nome de usuário",
        contact_name="Ana Lima",
        extra={"bsuid": "BR.1502576394655843", "username": "@analima"},
    ),
    "unsupported": from_maria(
        provider_message_id="wamid.UNS001",
        sent_at=at(1749416530),
        kind="unsupported",
        extra={"unsupported_type": "poll_creation"},
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_MESSAGES))
def test_each_message_fixture_parses_to_its_exact_message(name: str) -> None:
    assert one_message(name) == EXPECTED_MESSAGES[name]


EXPECTED_STATUSES: dict[str, StatusUpdate] = {
    "status_sent": StatusUpdate("wamid.OUT010", DeliveryStatus.SENT, at(1749416600), WA),
    "status_delivered": StatusUpdate("wamid.OUT010", DeliveryStatus.DELIVERED, at(1749416602), WA),
    "status_read": StatusUpdate("wamid.OUT010", DeliveryStatus.READ, at(1749416700), WA),
    "status_failed": StatusUpdate(
        "wamid.OUT011",
        DeliveryStatus.FAILED,
        at(1749416800),
        WA,
        error_code="131047",
        error_title="Re-engagement message",
    ),
    "status_sent_callback_data": StatusUpdate(
        "wamid.OUT013",
        DeliveryStatus.SENT,
        at(1749416600),
        WA,
        callback_data="0b6f3c2e-5a1d-5c7e-9f00-3d2a1b4c5e6f:7c9e6679-7425-40de-944b-e07fc1f90ae7",
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_STATUSES))
def test_each_status_fixture_parses_to_its_exact_status(name: str) -> None:
    assert channel().parse(fixture(name)) == (
        ParsedWebhook(route_key=PNID, statuses=(EXPECTED_STATUSES[name],)),
    )


def test_changes_for_two_phone_numbers_give_one_item_per_phone_number() -> None:
    first, second = channel().parse(fixture("two_phone_numbers"))
    assert first.route_key == PNID
    assert [m.provider_message_id for m in first.messages] == ["wamid.TWO001"]
    assert first.statuses == ()
    assert second == ParsedWebhook(
        route_key="223344556677889",
        statuses=(
            StatusUpdate("wamid.OUT012", DeliveryStatus.DELIVERED, at(1749416901), "5521987651234"),
        ),
    )


def test_account_update_field_parses_to_nothing() -> None:
    assert channel().parse(fixture("account_update")) == ()


def test_status_sent_to_a_bsuid_names_the_contact_by_bsuid() -> None:
    body = json.loads(fixture("status_read"))
    status = body["entry"][0]["changes"][0]["value"]["statuses"][0]
    del status["recipient_id"]
    status["recipient_user_id"] = "BR.1502576394655843"
    (parsed,) = channel().parse(json.dumps(body).encode())
    assert parsed.statuses[0].contact == "bsuid:BR.1502576394655843"


def test_message_with_phone_and_bsuid_keeps_phone_as_contact_and_bsuid_in_extra() -> None:
    body = json.loads(fixture("text"))
    value = body["entry"][0]["changes"][0]["value"]
    value["contacts"][0]["user_id"] = "BR.99"
    value["messages"][0]["from_user_id"] = "BR.99"
    (parsed,) = channel().parse(json.dumps(body).encode())
    message = parsed.messages[0]
    assert (message.contact, message.phone, message.extra) == (WA, WA, {"bsuid": "BR.99"})


def test_group_message_is_skipped() -> None:
    body = json.loads(fixture("text"))
    body["entry"][0]["changes"][0]["value"]["messages"][0]["group_id"] = "120363000000000000"
    assert channel().parse(json.dumps(body).encode()) == ()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 400),
        (b"{not json", 400),
        (b"\xff\xfe", 400),
        (b"[]", 422),
        (b'{"object": "page", "entry": []}', 422),
        (b'{"object": "whatsapp_business_account"}', 422),
        (b'{"object": "whatsapp_business_account", "entry": [{"changes": {}}]}', 422),
    ],
)
def test_malformed_bodies_are_rejected_with_a_client_status(body: bytes, status: int) -> None:
    with pytest.raises(Rejected) as caught:
        channel().parse(body)
    assert caught.value.status == status


@pytest.mark.parametrize(
    ("path", "replacement"),
    [
        (("messages", 0, "id"), None),
        (("messages", 0, "timestamp"), "ontem"),
        (("messages", 0, "timestamp"), 10**20),
        (("messages", 0, "type"), 7),
        (("metadata", "phone_number_id"), None),
    ],
)
def test_missing_or_wrong_required_fields_are_rejected_with_422(
    path: tuple[str | int, ...], replacement: object
) -> None:
    body = json.loads(fixture("text"))
    target = body["entry"][0]["changes"][0]["value"]
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = replacement
    with pytest.raises(Rejected) as caught:
        channel().parse(json.dumps(body).encode())
    assert caught.value.status == 422


def test_message_without_any_sender_identity_is_rejected() -> None:
    body = json.loads(fixture("text"))
    value = body["entry"][0]["changes"][0]["value"]
    del value["messages"][0]["from"]
    value["contacts"] = []
    with pytest.raises(Rejected) as caught:
        channel().parse(json.dumps(body).encode())
    assert caught.value.status == 422


# --- signature and handshake -------------------------------------------------------------


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_valid_signature_is_accepted() -> None:
    body = fixture("text")
    verify_signature(body, sign(body), APP_SECRET)


def test_signature_hex_is_case_insensitive() -> None:
    body = fixture("text")
    verify_signature(body, sign(body).upper().replace("SHA256=", "sha256="), APP_SECRET)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha1=abc",
        "sha256=",
        "sha256=zz" + "0" * 62,
        "sha256=é" + "0" * 63,
        sign(b"outro corpo"),
        sign(b"", secret="outro-segredo"),
    ],
)
def test_missing_malformed_or_wrong_signature_is_rejected_with_401(header: str | None) -> None:
    with pytest.raises(Rejected) as caught:
        verify_signature(fixture("text"), header, APP_SECRET)
    assert caught.value.status == 401


def test_signature_over_a_reserialised_body_is_rejected() -> None:
    raw = fixture("text")
    same_json = orjson.dumps(json.loads(raw))
    assert same_json != raw
    assert json.loads(same_json) == json.loads(raw)
    with pytest.raises(Rejected) as caught:
        verify_signature(same_json, sign(raw), APP_SECRET)
    assert caught.value.status == 401


def test_handshake_returns_the_challenge() -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": "tok", "hub.challenge": "1158201444"}
    assert verify_handshake(params, "tok") == "1158201444"


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "errado", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": "tok", "hub.challenge": "1"},
    ],
)
def test_handshake_with_wrong_token_or_mode_is_forbidden(params: dict[str, str]) -> None:
    with pytest.raises(Rejected) as caught:
        verify_handshake(params, "tok")
    assert caught.value.status == 403


@pytest.mark.parametrize("missing", ["hub.mode", "hub.verify_token", "hub.challenge"])
def test_handshake_without_a_field_is_a_bad_request(missing: str) -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": "tok", "hub.challenge": "1"}
    del params[missing]
    with pytest.raises(Rejected) as caught:
        verify_handshake(params, "tok")
    assert caught.value.status == 400


# --- any input: a result or a 4xx, nothing else ------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)
ALL_FIXTURES = sorted(p.stem for p in FIXTURES.glob("*.json"))
DELETE = object()


def paths(doc: object, prefix: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from paths(value, (*prefix, index))


def replaced(doc: object, path: tuple[object, ...], value: object) -> object:
    if not path:
        return None if value is DELETE else value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        copy = dict(doc)
        if not rest and value is DELETE:
            copy.pop(head, None)
        else:
            copy[head] = replaced(copy[head], rest, value)
        return copy
    assert isinstance(doc, list)
    assert isinstance(head, int)
    copy_list = list(doc)
    if not rest and value is DELETE:
        del copy_list[head]
    else:
        copy_list[head] = replaced(copy_list[head], rest, value)
    return copy_list


@st.composite
def mutated_fixtures(draw: st.DrawFn) -> bytes:
    doc: object = json.loads(fixture(str(draw(st.sampled_from(ALL_FIXTURES)))))
    for _ in range(int(draw(st.integers(min_value=1, max_value=3)))):
        path = draw(st.sampled_from(list(paths(doc))))
        doc = replaced(doc, path, draw(json_values | st.just(DELETE)))
    return json.dumps(doc).encode()


def parses_or_rejects(body: bytes) -> None:
    rejected: Rejected | None = None
    result: object = ()
    try:
        result = channel().parse(body)
    except Rejected as exc:
        rejected = exc
    if rejected is not None:
        assert 400 <= rejected.status <= 499
    assert isinstance(result, tuple)
    assert all(isinstance(item, ParsedWebhook) for item in result)


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_random_bodies_parse_or_are_rejected_with_4xx(body: bytes) -> None:
    parses_or_rejects(body)


@settings(
    max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(mutated_fixtures())
def test_mutated_fixtures_parse_or_are_rejected_with_4xx(body: bytes) -> None:
    parses_or_rejects(body)


# --- sending -----------------------------------------------------------------------------

CONFIG = {"access_token": "EAAG-token", "phone_number_id": PNID}


def replying(
    status: int, body: object, seen: list[httpx.Request]
) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    return handler


async def send_with(
    handler: Callable[[httpx.Request], httpx.Response],
    request: OutboundRequest,
    config: dict[str, str] = CONFIG,
) -> str:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await CloudChannel(client).send(config, request)


ACCEPTED = {
    "messaging_product": "whatsapp",
    "contacts": [{"input": WA, "wa_id": WA}],
    "messages": [{"id": "wamid.SENT001"}],
}


async def test_send_text_posts_the_exact_request_and_returns_the_wamid() -> None:
    seen: list[httpx.Request] = []
    message_id = await send_with(
        replying(200, ACCEPTED, seen), OutboundRequest(to=WA, text="Olá, Maria! Tudo bem?")
    )
    assert message_id == "wamid.SENT001"
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == f"https://graph.facebook.com/v21.0/{PNID}/messages"
    assert request.headers["Authorization"] == "Bearer EAAG-token"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": WA,
        "type": "text",
        "text": {"body": "Olá, Maria! Tudo bem?", "preview_url": False},
    }


async def test_send_template_uses_the_template_and_pt_br() -> None:
    seen: list[httpx.Request] = []
    config = {**CONFIG, "api_base_url": "http://meta.test/", "api_version": "v23.0"}
    await send_with(
        replying(200, ACCEPTED, seen),
        OutboundRequest(to=WA, text="", template="retomar_conversa"),
        config,
    )
    (request,) = seen
    assert str(request.url) == f"http://meta.test/v23.0/{PNID}/messages"
    assert json.loads(request.content) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": WA,
        "type": "template",
        "template": {"name": "retomar_conversa", "language": {"code": "pt_BR"}},
    }


async def test_send_template_fills_the_body_parameters_in_order() -> None:
    seen: list[httpx.Request] = []
    request = OutboundRequest(
        to=WA,
        text="Olá Ana! Sua visita é amanhã às 10h.",
        template="confirmacao_visita",
        template_language="pt_BR",
        template_values=("Ana", "amanhã às 10h"),
    )
    await send_with(replying(200, ACCEPTED, seen), request)
    assert json.loads(seen[0].content)["template"] == {
        "name": "confirmacao_visita",
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


async def test_send_to_a_bsuid_contact_uses_the_recipient_field() -> None:
    seen: list[httpx.Request] = []
    await send_with(replying(200, ACCEPTED, seen), OutboundRequest(to="bsuid:BR.150257", text="Oi"))
    sent = json.loads(seen[0].content)
    assert sent["recipient"] == "BR.150257"
    assert "to" not in sent


@pytest.mark.parametrize(
    ("status", "body", "retryable", "channel_wide"),
    [
        (500, {"error": {"message": "Internal"}}, True, True),
        (503, {}, True, True),
        (429, {"error": {"code": 80007}}, True, True),
        (400, {"error": {"code": 130429, "message": "Rate limit hit"}}, True, True),
        (400, {"error": {"code": 4, "message": "Application request limit reached"}}, True, True),
        (400, {"error": {"code": 613, "message": "Calls exceeded the rate limit"}}, True, True),
        (400, {"error": {"code": 131056, "message": "(Business, Consumer) pair"}}, True, False),
        (400, {"error": {"code": 131000, "message": "Something went wrong"}}, True, True),
        (400, {"error": {"code": 131047, "message": "Re-engagement message"}}, False, True),
        (400, {"error": {"code": 131030, "message": "Recipient not in allowed list"}}, False, True),
        (401, {"error": {"code": 190, "message": "Invalid OAuth access token"}}, False, True),
    ],
)
async def test_send_maps_gateway_answers_to_channel_send_error(
    status: int, body: object, retryable: bool, channel_wide: bool
) -> None:
    with pytest.raises(ChannelSendError) as caught:
        await send_with(replying(status, body, []), OutboundRequest(to=WA, text="Oi"))
    assert caught.value.retryable is retryable
    assert caught.value.channel_wide is channel_wide
    assert caught.value.outcome_unknown is False
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    assert caught.value.code == (str(code) if code is not None else None)


async def test_a_success_without_a_wamid_is_an_unknown_outcome() -> None:
    with pytest.raises(ChannelSendError) as caught:
        await send_with(
            replying(200, {"messaging_product": "whatsapp"}, []), OutboundRequest(to=WA, text="Oi")
        )
    assert caught.value.retryable is True
    assert caught.value.outcome_unknown is True


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), ("0", 0.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("soon", None)],
)
async def test_retry_after_is_read_from_a_throttled_answer(
    header: str, seconds: float | None
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json={"error": {"code": 130429}}, headers={"Retry-After": header}
        )

    with pytest.raises(ChannelSendError) as caught:
        await send_with(handler, OutboundRequest(to=WA, text="Oi"))
    assert caught.value.retry_after == seconds


async def test_callback_data_goes_out_as_biz_opaque_callback_data() -> None:
    seen: list[httpx.Request] = []
    await send_with(
        replying(200, ACCEPTED, seen), OutboundRequest(to=WA, text="Oi", callback_data="c:o")
    )
    assert json.loads(seen[0].content)["biz_opaque_callback_data"] == "c:o"


@pytest.mark.parametrize(
    ("error", "unknown"),
    [
        (httpx.ReadTimeout("lento demais"), True),
        (httpx.RemoteProtocolError("connection closed"), True),
        (httpx.ConnectError("recusado"), False),
        (httpx.ConnectTimeout("sem rota"), False),
    ],
)
async def test_send_transport_failures_are_retryable(error: httpx.HTTPError, unknown: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(ChannelSendError) as caught:
        await send_with(handler, OutboundRequest(to=WA, text="Oi"))
    assert caught.value.retryable is True
    # Refused before it reached the gateway: surely not sent. Broken after: maybe sent.
    assert caught.value.outcome_unknown is unknown
    assert caught.value.__cause__ is error


async def test_send_with_incomplete_config_is_not_retryable() -> None:
    with pytest.raises(ChannelSendError) as caught:
        await send_with(refuse, OutboundRequest(to=WA, text="Oi"), {"access_token": "x"})
    assert caught.value.retryable is False

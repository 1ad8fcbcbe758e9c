"""The Evolution API v2 adapter: JWT, parsing and sending."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from urbana.adapters.channels.errors import ChannelSendError
from urbana.adapters.channels.evolution import EvolutionChannel, verify_jwt
from urbana.application.channels import (
    ChannelState,
    DeliveryStatus,
    InboundMessage,
    OutboundRequest,
    ParsedWebhook,
    StatusUpdate,
)
from urbana.errors import Rejected

FIXTURES = Path(__file__).parents[1] / "fixtures" / "evolution"
INSTANCE = "loja-centro"
PHONE = "5511987654321"
JWT_KEY = "chave-jwt-do-webhook-da-loja-centro-com-bem-mais-de-sessenta-e-quatro-bytes"


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def refuse(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"unexpected request {request.url}")


def channel() -> EvolutionChannel:
    return EvolutionChannel(httpx.AsyncClient(transport=httpx.MockTransport(refuse)))


def from_maria(**fields: object) -> InboundMessage:
    base: dict[str, Any] = {"contact": PHONE, "phone": PHONE, "contact_name": "Maria Souza"}
    base.update(fields)
    return InboundMessage(**base)


EXPECTED_MESSAGES: dict[str, InboundMessage] = {
    "text_conversation": from_maria(
        provider_message_id="3EB0C767D097B7D5A1F2",
        sent_at=at(1749478429),
        kind="text",
        text="Boa tarde! Qual o valor da consulta?",
    ),
    "extended_text_reply": from_maria(
        provider_message_id="3EB0A1B2C3D4E5F60718",
        sent_at=at(1749478500),
        kind="text",
        text="Pode ser na sexta às 10h",
        reply_to="BAE5F1E2D3C4B5A6",
    ),
    "image": from_maria(
        provider_message_id="3EB0IMG00000000001",
        sent_at=at(1749478600),
        kind="image",
        text="Olha a foto do produto",
        media_url="https://mmg.whatsapp.net/o1/v/t62.7118-24/f1/m232/imagem.enc",
        media_mime="image/jpeg",
    ),
    "audio": from_maria(
        provider_message_id="3EB0AUD00000000001",
        sent_at=at(1749478700),
        kind="audio",
        media_url="https://mmg.whatsapp.net/v/t62.7117-24/audio.enc",
        media_mime="audio/ogg; codecs=opus",
        extra={"voice": True},
    ),
    "document": from_maria(
        provider_message_id="3EB0DOC00000000001",
        sent_at=at(1749478800),
        kind="document",
        text="Contrato assinado",
        media_url="https://mmg.whatsapp.net/v/t62.7119-24/doc.enc",
        media_mime="application/pdf",
        extra={"filename": "contrato.pdf"},
    ),
    "location": from_maria(
        provider_message_id="3EB0LOC00000000001",
        sent_at=at(1749478900),
        kind="location",
        text="Cristo Redentor, Parque Nacional da Tijuca - Alto da Boa Vista, Rio de Janeiro - RJ",
        extra={
            "latitude": -22.951916,
            "longitude": -43.210487,
            "name": "Cristo Redentor",
            "address": "Parque Nacional da Tijuca - Alto da Boa Vista, Rio de Janeiro - RJ",
        },
    ),
    "lid_contact": InboundMessage(
        provider_message_id="3EB0LID00000000001",
        contact=PHONE,
        phone=PHONE,
        sent_at=at(1749479000),
        kind="text",
        text="Oi, quero um orçamento",
        contact_name="Carlos Dias",
        extra={"lid": "272516946294519@lid"},
    ),
    "lid_without_phone": InboundMessage(
        provider_message_id="3EB0LID00000000002",
        contact="198765432109876@lid",
        phone=None,
        sent_at=at(1749479050),
        kind="text",
        text="Vocês abrem sábado?",
        contact_name="Bia",
        extra={"lid": "198765432109876@lid"},
    ),
    "from_me": from_maria(
        provider_message_id="BAE5F00000000001",
        sent_at=at(1749479200),
        kind="text",
        text="Olá Maria, aqui é a Júlia da loja. Posso ajudar?",
        contact_name=None,
        from_me=True,
    ),
    "uppercase_event_list_data": from_maria(
        provider_message_id="3EB0UPP00000000001",
        sent_at=at(1749479300),
        kind="text",
        text="Mensagem pelo webhook global",
    ),
    "ad_referral": from_maria(
        provider_message_id="3EB0ADS00000000001",
        sent_at=at(1749479400),
        kind="text",
        text="Olá! Tenho interesse e queria mais informações, por favor.",
        referral={
            "source_url": "https://fb.me/3cr4Wqqkv",
            "source_id": "120226305854810726",
            "source_type": "ad",
            "headline": "Clínica Sorriso",
            "body": "Agende sua avaliação gratuita",
            "ctwa_clid": "Afc3nYt6AAA",
            "thumbnail_url": "https://scontent.xx.fbcdn.net/thumb.jpg",
        },
    ),
    "reaction": from_maria(
        provider_message_id="3EB0RCT00000000001",
        sent_at=at(1749479500),
        kind="reaction",
        text="\u2764\ufe0f",
        extra={"reacted_message_id": "BAE5F00000000001"},
    ),
    "list_response": from_maria(
        provider_message_id="3EB0LST00000000001",
        sent_at=at(1749479600),
        kind="interactive",
        text="Corte masculino",
        extra={"reply_type": "list_reply", "reply_id": "servico-corte", "description": "R$ 45,00"},
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_MESSAGES))
def test_each_upsert_fixture_parses_to_its_exact_message(name: str) -> None:
    assert channel().parse(fixture(name)) == (
        ParsedWebhook(route_key=INSTANCE, messages=(EXPECTED_MESSAGES[name],)),
    )


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


EXPECTED_STATUSES: dict[str, StatusUpdate] = {
    "update_server_ack": StatusUpdate(
        "BAE5F00000000001", DeliveryStatus.SENT, iso("2025-06-09T14:20:00.100Z"), PHONE
    ),
    "update_delivery_ack": StatusUpdate(
        "BAE5F00000000001", DeliveryStatus.DELIVERED, iso("2025-06-09T14:20:01.200Z"), PHONE
    ),
    "update_read": StatusUpdate(
        "BAE5F00000000001", DeliveryStatus.READ, iso("2025-06-09T14:25:00.000Z"), PHONE
    ),
    "update_played": StatusUpdate(
        "BAE5F00000000002", DeliveryStatus.READ, iso("2025-06-09T14:26:00.000Z"), PHONE
    ),
    "update_error": StatusUpdate(
        "BAE5F00000000003", DeliveryStatus.FAILED, iso("2025-06-09T14:27:00.000Z"), PHONE
    ),
    "update_key_object": StatusUpdate(
        "BAE5F00000000004", DeliveryStatus.DELIVERED, iso("2025-06-09T14:29:00.000Z"), PHONE
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_STATUSES))
def test_each_update_fixture_parses_to_its_exact_status(name: str) -> None:
    assert channel().parse(fixture(name)) == (
        ParsedWebhook(route_key=INSTANCE, statuses=(EXPECTED_STATUSES[name],)),
    )


@pytest.mark.parametrize("name", ["group_ignored", "update_inbound_read_ignored"])
def test_events_the_engine_does_not_use_parse_to_nothing(name: str) -> None:
    assert channel().parse(fixture(name)) == ()


def test_the_link_state_fixtures_parse_to_channel_states() -> None:
    at = datetime(2025, 6, 9, 14, 13, 49, 253000, tzinfo=UTC)
    assert channel().parse(fixture("connection_update")) == (
        ParsedWebhook(INSTANCE, states=(ChannelState("connected", at, reason="200"),)),
    )
    assert channel().parse(fixture("qrcode_updated")) == (
        ParsedWebhook(
            INSTANCE,
            states=(ChannelState("waiting_qr", at, qr_code="data:image/png;base64,iVBOR"),),
        ),
    )


def test_group_message_is_kept_when_groups_are_included() -> None:
    (parsed,) = channel().parse(fixture("group_ignored"), include_groups=True)
    assert parsed.messages == (
        InboundMessage(
            provider_message_id="3EB0GRP00000000001",
            contact="120363025246125486@g.us",
            phone=None,
            sent_at=at(1749479100),
            kind="text",
            text="Bom dia, pessoal!",
            contact_name="Pedro",
            extra={"participant": "5521998765432@s.whatsapp.net"},
        ),
    )


def test_lid_with_sender_pn_uses_the_phone() -> None:
    body = json.loads(fixture("lid_without_phone"))
    body["data"]["key"]["senderPn"] = "5531912345678@s.whatsapp.net"
    (parsed,) = channel().parse(json.dumps(body).encode())
    assert (parsed.messages[0].contact, parsed.messages[0].phone) == (
        "5531912345678",
        "5531912345678",
    )


def test_long_timestamp_object_is_read_as_epoch_seconds() -> None:
    body = json.loads(fixture("text_conversation"))
    body["data"]["messageTimestamp"] = {"low": 1749478429, "high": 0, "unsigned": True}
    (parsed,) = channel().parse(json.dumps(body).encode())
    assert parsed.messages[0].sent_at == at(1749478429)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 400),
        (b"{nope", 400),
        (b'"messages.upsert"', 422),
        (b'{"instance": "x", "data": {}}', 422),
        (b'{"event": "messages.upsert", "data": {}}', 422),
        (b'{"event": "messages.upsert", "instance": "x", "data": 3}', 422),
        (b'{"event": "messages.upsert", "instance": "x", "data": {"key": {}}}', 422),
        (b'{"event": "messages.update", "instance": "x", "data": {"status": "READ"}}', 422),
    ],
)
def test_malformed_bodies_are_rejected_with_a_client_status(body: bytes, status: int) -> None:
    with pytest.raises(Rejected) as caught:
        channel().parse(body)
    assert caught.value.status == status


@pytest.mark.parametrize(
    ("field", "value"),
    [("messageTimestamp", "ontem"), ("messageTimestamp", -5), ("message", "texto")],
)
def test_wrong_required_upsert_fields_are_rejected_with_422(field: str, value: object) -> None:
    body = json.loads(fixture("text_conversation"))
    body["data"][field] = value
    with pytest.raises(Rejected) as caught:
        channel().parse(json.dumps(body).encode())
    assert caught.value.status == 422


def test_status_without_a_usable_date_time_is_rejected_with_422() -> None:
    body = json.loads(fixture("update_read"))
    body["date_time"] = "ontem à tarde"
    with pytest.raises(Rejected) as caught:
        channel().parse(json.dumps(body).encode())
    assert caught.value.status == 422


# --- JWT ---------------------------------------------------------------------------------


def token(key: str = JWT_KEY, exp_in: int = 600, **claims: object) -> str:
    now = int(time.time())
    payload = {"iat": now, "exp": now + exp_in, "app": "evolution", "action": "webhook"}
    payload.update(claims)
    return jwt.encode(payload, key, algorithm="HS256")


def test_valid_jwt_is_accepted() -> None:
    verify_jwt(f"Bearer {token()}", JWT_KEY)


def test_token_expired_within_the_leeway_is_accepted() -> None:
    verify_jwt(f"Bearer {token(exp_in=-5)}", JWT_KEY)


def test_short_operator_key_works_without_warnings() -> None:
    short_key = "curta"
    with pytest.warns(UserWarning, match="HMAC key"):
        signed = token(key=short_key)
    verify_jwt(f"bearer {signed}", short_key)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        f"Bearer {token(exp_in=-120)}",
        f"Bearer {token(key='outra-chave-tambem-com-32-bytes-no-minimo')}",
        "Bearer nao.e.jwt",
        f"Bearer {jwt.encode({'app': 'evolution'}, JWT_KEY, algorithm='HS256')}",
        f"Bearer {jwt.encode({'exp': 9999999999}, JWT_KEY, algorithm='HS512')}",
    ],
    ids=[
        "missing",
        "empty",
        "no-token",
        "basic",
        "expired",
        "wrong-key",
        "garbage",
        "no-exp",
        "hs512",
    ],
)
def test_missing_expired_or_foreign_jwt_is_rejected_with_401(header: str | None) -> None:
    with pytest.raises(Rejected) as caught:
        verify_jwt(header, JWT_KEY)
    assert caught.value.status == 401


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


def parses_or_rejects(body: bytes, include_groups: bool = False) -> None:
    rejected: Rejected | None = None
    result: object = ()
    try:
        result = channel().parse(body, include_groups=include_groups)
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
@given(mutated_fixtures(), st.booleans())
def test_mutated_fixtures_parse_or_are_rejected_with_4xx(body: bytes, groups: bool) -> None:
    parses_or_rejects(body, include_groups=groups)


# --- sending -----------------------------------------------------------------------------

CONFIG = {"api_url": "https://evo.example.com.br/", "api_key": "chave-api", "instance": INSTANCE}
SENT = {
    "key": {"remoteJid": f"{PHONE}@s.whatsapp.net", "fromMe": True, "id": "BAE594145F4C59B4"},
    "message": {"extendedTextMessage": {"text": "Olá!"}},
    "messageTimestamp": "1749480000",
    "status": "PENDING",
}


async def send_with(
    handler: Callable[[httpx.Request], httpx.Response],
    request: OutboundRequest,
    config: dict[str, str] = CONFIG,
) -> str:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await EvolutionChannel(client).send(config, request)


async def test_send_text_posts_the_exact_request_and_returns_key_id() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=SENT)

    message_id = await send_with(
        handler, OutboundRequest(to=PHONE, text="Olá, Maria! Seu pedido saiu para entrega.")
    )
    assert message_id == "BAE594145F4C59B4"
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == f"https://evo.example.com.br/message/sendText/{INSTANCE}"
    assert request.headers["apikey"] == "chave-api"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "number": PHONE,
        "text": "Olá, Maria! Seu pedido saiu para entrega.",
    }


async def test_send_includes_the_configured_delay() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=SENT)

    await send_with(handler, OutboundRequest(to=PHONE, text="Oi"), {**CONFIG, "delay_ms": "1200"})
    assert json.loads(seen[0].content) == {"number": PHONE, "text": "Oi", "delay": 1200}


@pytest.mark.parametrize(
    ("status", "body", "retryable"),
    [
        (500, {"status": 500, "error": "Internal Server Error"}, True),
        (429, {}, True),
        (
            400,
            {"status": 400, "error": "Bad Request", "response": {"message": [{"exists": False}]}},
            False,
        ),
        (
            404,
            {"status": 404, "error": "Not Found", "response": {"message": ["instance not found"]}},
            False,
        ),
        # Taken, but with no id to confirm it by: Evolution echoes nothing back, so it is
        # sent again (at-least-once).
        (201, {"status": "PENDING"}, True),
    ],
)
async def test_send_maps_gateway_answers_to_channel_send_error(
    status: int, body: object, retryable: bool
) -> None:
    with pytest.raises(ChannelSendError) as caught:
        await send_with(
            lambda request: httpx.Response(status, json=body), OutboundRequest(to=PHONE, text="Oi")
        )
    assert caught.value.retryable is retryable


async def test_send_timeout_is_retryable() -> None:
    timeout = httpx.ReadTimeout("lento demais")

    def handler(request: httpx.Request) -> httpx.Response:
        raise timeout

    with pytest.raises(ChannelSendError) as caught:
        await send_with(handler, OutboundRequest(to=PHONE, text="Oi"))
    assert caught.value.retryable is True
    assert caught.value.__cause__ is timeout


async def test_send_with_incomplete_config_is_not_retryable() -> None:
    with pytest.raises(ChannelSendError) as caught:
        await send_with(refuse, OutboundRequest(to=PHONE, text="Oi"), {"api_url": "http://x"})
    assert caught.value.retryable is False

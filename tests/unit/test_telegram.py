"""The Telegram adapter against httpx.MockTransport speaking the Bot API, and the notice
text: what may have reached the chat is never told apart wrongly."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from uuid import UUID

import httpx
import pytest

from urbana.adapters.telegram import TelegramBot
from urbana.application.notifications import (
    HandoffNotice,
    NotifyFailed,
    NotifyOutcomeUnknown,
    notice_text,
)
from urbana.domain.tenant import TelegramTarget

TARGET = TelegramTarget(chat_id="-100777", bot_token="123456:ABC-def")


def bot(answer: Callable[[httpx.Request], httpx.Response]) -> TelegramBot:
    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return TelegramBot(client, base_url="https://tg.test/")


async def test_send_message_posts_the_text_and_an_inline_url_button() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True, "result": {"message_id": 99, "chat": {}}})

    message_id = await bot(answer).send(
        TARGET, "Novo atendimento", "Abrir conversa", "https://p/c/1"
    )
    assert message_id == "99"
    request = seen[0]
    assert request.method == "POST"
    assert str(request.url) == "https://tg.test/bot123456:ABC-def/sendMessage"
    assert json.loads(request.content) == {
        "chat_id": "-100777",
        "text": "Novo atendimento",
        "reply_markup": {"inline_keyboard": [[{"text": "Abrir conversa", "url": "https://p/c/1"}]]},
    }


async def test_without_a_button_no_reply_markup_is_sent() -> None:
    bodies: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"ok": True, "result": {"message_id": 1}})

    await bot(answer).send(TARGET, "Novo atendimento\nhttp://127.0.0.1/p", None, None)
    assert bodies == [{"chat_id": "-100777", "text": "Novo atendimento\nhttp://127.0.0.1/p"}]


def error(status: int, description: str, **parameters: int) -> httpx.Response:
    doc: dict[str, object] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        doc["parameters"] = parameters
    return httpx.Response(status, json=doc)


@pytest.mark.parametrize(
    ("response", "retryable", "retry_after"),
    [
        (error(429, "Too Many Requests: retry after 7", retry_after=7), True, 7.0),
        (error(502, "Bad Gateway"), True, None),
        (httpx.Response(503, text="<html>down</html>"), True, None),
        (error(400, "Bad Request: chat not found"), False, None),
        (error(401, "Unauthorized"), False, None),
        (error(403, "Forbidden: bot was blocked by the user"), False, None),
    ],
)
async def test_throttling_and_outages_are_retryable_and_refusals_are_final(
    response: httpx.Response, retryable: bool, retry_after: float | None
) -> None:
    with pytest.raises(NotifyFailed) as caught:
        await bot(lambda _: response).send(TARGET, "t", "b", "https://p")
    assert caught.value.retryable is retryable
    assert caught.value.retry_after == retry_after
    assert not caught.value.button_refused
    assert TARGET.bot_token not in str(caught.value)


async def test_a_refused_button_url_is_told_apart_from_other_refusals() -> None:
    for description in (
        "Bad Request: BUTTON_URL_INVALID",
        "Bad Request: inline keyboard button URL 'http://localhost' is invalid: Wrong HTTP URL",
    ):
        refusal = error(400, description)

        def refuse(request: httpx.Request, refusal: httpx.Response = refusal) -> httpx.Response:
            return refusal

        with pytest.raises(NotifyFailed) as caught:
            await bot(refuse).send(TARGET, "t", "b", "http://x")
        assert caught.value.button_refused
        assert not caught.value.retryable


async def test_no_connection_is_retryable_but_no_answer_may_have_delivered() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def silent(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(NotifyFailed) as caught:
        await bot(refused).send(TARGET, "t", "b", "https://p")
    assert caught.value.retryable
    with pytest.raises(NotifyOutcomeUnknown) as unknown:
        await bot(silent).send(TARGET, "t", "b", "https://p")
    assert TARGET.bot_token not in str(unknown.value)


def test_the_notice_names_the_lead_the_reason_in_words_and_the_summary() -> None:
    notice = HandoffNotice(
        tenant_id=UUID(int=1),
        conversation_id=UUID(int=2),
        lead_name=None,
        reason="low_confidence",
        summary="x" * 5_000,
        url="https://p",
    )
    text = notice_text(notice)
    assert text.splitlines()[:3] == [
        "🔔 Novo atendimento aguardando",
        "Cliente: sem nome",
        "Motivo: a IA não teve confiança na resposta",
    ]
    assert len(text) < 4_096  # Telegram's limit
    # The model's own reason codes are shown as they are.
    assert "Motivo: pricing" in notice_text(dataclasses.replace(notice, reason="pricing"))

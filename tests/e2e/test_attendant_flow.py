"""The whole attendant flow over HTTP on the real stack, every role in the process.

A lead writes, the AI answers, then hands off; the notifier tells the tenant's Telegram
chat once; an attendant signed in with a password takes the conversation, replies (the
reply reaches the gateway once) and gives it back to the AI; the lead writes again and
the AI answers with the attendant's words in what it was given. The outside world is
local fakes speaking the real protocols: OpenAI and the Cloud API (tests.e2e.fakes) and
the Telegram Bot API (tests.fake_telegram).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.access_helpers import PASSWORD, access, bearer, login, new_email
from tests.e2e.conftest import Api, start_api, stop_api
from tests.e2e.fakes import ANSWER, SUMMARY, Outside
from tests.e2e.test_ai_loop import add_knowledge, wait_until
from tests.e2e.webhook_helpers import CloudTenant, cloud_tenant, cloud_text, post_cloud
from tests.fake_telegram import FakeTelegram, fake_telegram
from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.runtime import ROLES
from urbana.domain.conversation import Conversation
from urbana.domain.reply import DEFAULT_MESSAGES
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

PANEL = "https://painel.example.com/panel"  # Telegram refuses buttons to local hosts
BOT_TOKEN = "123456:flow-bot"
CHAT_ID = "-100777"
GUARD_S = 60.0  # only against a hang: every wait ends as soon as its condition holds

HANDOFF = {
    **ANSWER,
    "reply": "",
    "intent": "complaint",
    "should_handoff": True,
    "handoff_reason": "complaint",
    "confidence": 0.9,
}
ATTENDANT_SAYS = "Aqui é a Ana: o seu reembolso do pedido 4471 foi aprovado hoje."


@pytest.fixture(scope="module")
def telegram() -> Iterator[FakeTelegram]:
    with fake_telegram() as fake:
        yield fake


@pytest.fixture(scope="module")
def stack(services: ServiceUrls, outside: Outside, telegram: FakeTelegram) -> Iterator[Api]:
    run = uuid4().hex[:8]
    api = start_api(
        services,
        f"flow_{run}",
        os.urandom(32),
        roles=ROLES,
        openai_api_key="sk-test-e2e",
        openai_base_url=f"{outside.url}/v1",
        llm_model="gpt-test",
        llm_fallback_model="gpt-test-fallback",
        events_topic=f"e2e.flow.{run}",
        consumer_group_prefix=f"e2e.flow.{run}",
        debounce_ms=0,
        telegram_api_url=telegram.url,
        panel_url=PANEL,
    )
    try:
        yield api
    finally:
        stop_api(api)


def named(api: Api, cid: UUID, name: str) -> list[Any]:
    return [e for e in api.store.app.stream(cid) if type(e).__qualname__.endswith("." + name)]


def lead_writes(client: httpx.Client, api: Api, t: CloudTenant, wa_id: str, text: str) -> None:
    r = post_cloud(client, api, t, cloud_text(t.phone_number_id, wa_id, text, name="Maria Souza"))
    assert r.status_code == 200, r.text


def test_handoff_notice_assign_reply_return_and_the_ai_knows_what_the_attendant_said(
    stack: Api, outside: Outside, telegram: FakeTelegram
) -> None:
    tenant = cloud_tenant(stack, api_base_url=outside.url)
    tid = UUID(tenant.tenant_id)
    stack.store.app.change_settings(tid, debounce_ms=0)
    stack.store.app.configure_telegram(tid, chat_id=CHAT_ID, bot_token=BOT_TOKEN)
    add_knowledge(stack, tenant)
    email = new_email()
    ana, _ = access(stack).add_user(tid, email=email, role=Role.ATTENDANT, password=PASSWORD)
    signed_in = login(stack, email)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["token_type"] == "bearer"
    headers = bearer(signed_in.json()["access_token"])

    wa_id = f"551197{uuid4().int % 10**7:07d}"
    cid = Conversation.create_id(tid, "cloud", wa_id)
    base = f"{stack.url}/v1/conversations/{cid}"
    marker = uuid4().hex[:8]  # the words the fake model hands off on, unique to this run
    outside.decisions[f"reembolso{marker}"] = HANDOFF

    def texts() -> list[str]:
        return [s["body"]["text"]["body"] for s in outside.sends_to(wa_id)]

    def reaches(n: int) -> Callable[[], bool]:
        return lambda: len(outside.sends_to(wa_id)) >= n

    try:
        with httpx.Client(timeout=10) as client:
            # 1. The lead asks; the AI answers from the knowledge.
            lead_writes(client, stack, tenant, wa_id, "Qual o horário de atendimento?")
            wait_until(reaches(1), GUARD_S)
            assert texts() == [ANSWER["reply"]]

            # 2. The lead complains; the model hands off. The lead is told a person is
            # coming, and (nobody online) that they wait in the queue.
            lead_writes(client, stack, tenant, wa_id, f"Quero um reembolso{marker} agora")
            wait_until(reaches(3), GUARD_S)
            (handoff,) = named(stack, cid, "HandoffRequested")
            assert (handoff.reason, handoff.summary) == ("complaint", SUMMARY)
            assert texts() == [
                ANSWER["reply"],
                DEFAULT_MESSAGES["handoff"],
                DEFAULT_MESSAGES["expect_queue"],
            ]

            # 3. The tenant's Telegram chat is told once, with a button to the conversation.
            telegram.wait_for(lambda t: len(t.to(BOT_TOKEN)) >= 1, timeout=GUARD_S)
            (notice,) = telegram.to(BOT_TOKEN)
            assert notice["chat"]["id"] == CHAT_ID
            assert "Cliente: Maria Souza" in notice["text"]
            assert f"Resumo: {SUMMARY}" in notice["text"]
            assert notice["reply_markup"] == {
                "inline_keyboard": [
                    [{"text": "Abrir conversa", "url": f"{PANEL}/conversations/{cid}"}]
                ]
            }

            # 4. The attendant takes it.
            taken = client.post(f"{base}/assign", headers=headers)
            assert taken.status_code == 200, taken.text
            assert taken.json()["status"] == "human"
            assert taken.json()["assignee"] == str(ana)

            # 5. The attendant replies (retried with the same key); it is sent once.
            key = {**headers, "Idempotency-Key": uuid4().hex}
            replies = [
                client.post(f"{base}/messages", json={"text": ATTENDANT_SAYS}, headers=key)
                for _ in range(2)
            ]
            assert [r.status_code for r in replies] == [202, 202], replies[-1].text
            assert replies[0].json()["outbound_id"] == replies[1].json()["outbound_id"]
            wait_until(reaches(4), GUARD_S)
            wait_until(lambda: named(stack, cid, "OutboundMessageSent")[3:], GUARD_S)
            assert texts()[3:] == [ATTENDANT_SAYS]

            # 6. Back to the AI.
            back = client.post(f"{base}/return-to-ai", headers=headers)
            assert back.status_code == 200, back.text
            assert back.json()["status"] == "ai"

            # 7. The lead writes again; the AI answers, and was given the attendant's words.
            later = f"Obrigada! E qual o horário de vocês{marker}?"
            lead_writes(client, stack, tenant, wa_id, later)
            wait_until(lambda: outside.llm_calls_about(later), GUARD_S)
            wait_until(reaches(5), GUARD_S)
    finally:
        outside.decisions.pop(f"reembolso{marker}", None)

    assert texts() == [
        ANSWER["reply"],
        DEFAULT_MESSAGES["handoff"],
        DEFAULT_MESSAGES["expect_queue"],
        ATTENDANT_SAYS,
        ANSWER["reply"],
    ]
    (asked,) = outside.llm_calls_about(later)
    # The attendant's reply, then the end of the human stretch, then the new message.
    context = json.dumps(asked["messages"], ensure_ascii=False)
    assert [m["role"] for m in asked["messages"][-3:]] == ["assistant", "system", "user"], context
    assert asked["messages"][-3]["content"] == f"(atendente humano) {ATTENDANT_SAYS}", context
    assert asked["messages"][-2]["content"].startswith("[Fim do atendimento humano"), context
    assert asked["messages"][-1] == {"role": "user", "content": later}
    assert context.count(ATTENDANT_SAYS) == 1

    # The read model shows the reply as the attendant's, sent.
    def detail() -> list[dict[str, Any]]:
        r = httpx.get(f"{base}", headers=headers)
        assert r.status_code == 200, r.text
        mine = [m for m in r.json()["messages"] if m["author"] == "human"]
        return mine if mine and mine[0]["status"] == "sent" else []

    (shown,) = wait_until(detail, GUARD_S)
    assert (shown["text"], shown["attendant"]) == (ATTENDANT_SAYS, str(ana))
    # Still one notice, one handoff, one queued reply from the attendant.
    assert len(telegram.to(BOT_TOKEN)) == 1
    assert len(named(stack, cid, "HandoffRequested")) == 1
    humans = [q for q in named(stack, cid, "OutboundMessageQueued") if q.author == "human"]
    assert [q.outbound_id for q in humans] == [replies[0].json()["outbound_id"]]

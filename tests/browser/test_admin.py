"""The admin's screens in a real browser: a knowledge document uploaded and then used by
the bot in `Testar` (with why it answered), an Evolution number linked by its QR code
and its state live, the Telegram notice and the bot's settings, and an attendant kept out."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ASKS_FOR_A_PERSON, Shop, sign_in
from tests.e2e.fake_evolution import QR_IMAGE, FakeEvolution, fake_evolution
from tests.e2e.fakes import ANSWER, SUMMARY, Outside
from tests.e2e.webhook_helpers import connect
from urbana.adapters.http.panel.views import REASONS
from urbana.domain.contacts import channel_route_id_for
from urbana.domain.tenant import Tenant
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

EVOLUTION_KEY = "evo-" + "k" * 28
BOT_TOKEN = "7123456789:AAH3xJ9kq0bS2mZ4vW8yR1tL6nP5c"


@pytest.fixture(scope="module")
def evolution() -> Iterator[FakeEvolution]:
    with fake_evolution(EVOLUTION_KEY) as fake:
        yield fake


def wait_until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def indexed(shop: Shop, marker: str) -> bool:
    """The knowledge role has embedded the shop's document that holds `marker`."""
    with shop.api.store.pool.connection() as conn:
        table = conn.execute("SELECT to_regclass('kb_chunks')").fetchone()
        if table is None or table[0] is None:
            return False
        row = conn.execute(
            "SELECT count(*) FROM kb_chunks WHERE tenant_id = %s AND text LIKE %s",
            (shop.tenant_id, f"%{marker}%"),
        ).fetchone()
    return bool(row and row[0])


def test_an_uploaded_document_is_listed_and_testar_answers_from_it_showing_why(
    shop: Shop, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    page = new_page()
    sign_in(page, shop.api, shop.user(Role.ADMIN, "Gil"))
    page.get_by_role("link", name="Conhecimento").click()
    expect(page.get_by_role("heading", name="Base de conhecimento")).to_be_visible()

    # A file that is not UTF-8 text is refused in words, and nothing is listed.
    latin = tmp_path / "precos.txt"
    latin.write_bytes("Preço: R$ 10".encode("latin-1"))
    page.get_by_label("Arquivo (Markdown ou texto)").set_input_files(latin)
    page.get_by_role("button", name="Enviar documento").click()
    expect(page.get_by_role("alert")).to_contain_text("texto em UTF-8")
    expect(page.get_by_text("Nenhum documento ainda.")).to_be_visible()

    marker = uuid4().hex[:8]
    doc = tmp_path / "horario.md"
    doc.write_text(
        f"# Horário de atendimento\n\nAtendemos de segunda a sexta, das 8h às 18h ({marker}).\n",
        encoding="utf-8",
    )
    page.get_by_label("Arquivo (Markdown ou texto)").set_input_files(doc)
    page.get_by_role("button", name="Enviar documento").click()
    expect(page.get_by_role("status")).to_contain_text("Documento horario.md enviado")
    documents = page.get_by_role("table", name="Documentos")
    expect(documents.get_by_role("cell", name="horario.md", exact=True)).to_be_visible()
    wait_until(lambda: indexed(shop, marker))

    page.get_by_role("link", name="Testar").click()
    page.get_by_label("Mensagem").fill("Qual o horário de atendimento?")
    page.get_by_role("button", name="Enviar").click()
    thread = page.get_by_role("list", name="Mensagens")
    reply = thread.get_by_role("listitem").filter(has_text=str(ANSWER["reply"]))
    expect(reply).to_be_visible()  # polled in: no reload
    why = reply.get_by_role("group", name="Por que a IA respondeu assim")
    expect(why).to_contain_text(f"intenção: {ANSWER['intent']}")
    expect(why).to_contain_text("confiança 92%")
    expect(why.get_by_role("list", name="Trechos usados")).to_contain_text("horario.md")
    expect(thread.get_by_role("listitem").first).to_contain_text("Qual o horário")

    # The next message continues the same conversation (the session rides in the form).
    page.get_by_label("Mensagem").fill("E aos sábados?")
    page.get_by_role("button", name="Enviar").click()
    mine = thread.locator(".msg.from-lead")
    expect(mine).to_have_count(2)
    expect(mine.nth(1)).to_contain_text("E aos sábados?")
    expect(thread.locator(".msg.from-ai")).to_have_count(2)
    page.screenshot(path=tmp_path / "testar.png", full_page=True)


def test_testar_shows_a_handoff_and_its_reason(
    shop: Shop, outside: Outside, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    page = new_page()
    sign_in(page, shop.api, shop.user(Role.ADMIN, "Gil"))
    page.get_by_role("link", name="Testar").click()
    marker = uuid4().hex[:8]
    outside.decisions[marker] = ASKS_FOR_A_PERSON
    page.get_by_label("Mensagem").fill(f"Quero falar com uma pessoa ({marker})")
    page.get_by_role("button", name="Enviar").click()
    handoff = page.get_by_role("note", name="Transferência para atendente")
    expect(handoff).to_contain_text(f"Motivo da transferência: {REASONS['lead_request']}")
    expect(handoff).to_contain_text(SUMMARY)
    expect(page.locator("#testar-status")).to_have_text("Aguardando atendente")
    page.screenshot(path=tmp_path / "testar-handoff.png", full_page=True)


def evolution_webhook(shop: Shop, instance: str, secret: str, event: str, data: Any) -> None:
    """What Evolution API v2 posts for an instance event (its webhook envelope)."""
    body = {
        "event": event,
        "instance": instance,
        "data": data,
        "destination": f"{shop.api.url}/webhooks/evolution/{secret}",
        "date_time": "2026-12-02T03:01:20.092Z",
        "sender": "5511999990000@s.whatsapp.net",
        "server_url": "http://evolution.local:8080",
        "apikey": EVOLUTION_KEY,
    }
    r = httpx.post(f"{shop.api.url}/webhooks/evolution/{secret}", json=body, timeout=10)
    assert r.status_code == 200, r.text


def test_an_evolution_number_is_linked_by_its_qr_code_and_its_state_follows_live(
    shop: Shop, evolution: FakeEvolution, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    instance, secret = f"loja-{uuid4().hex[:8]}", uuid4().hex
    evolution.known.add(instance)
    fields = {
        "instance": instance,
        "webhook_secret": secret,
        "api_url": evolution.url,
        "api_key": EVOLUTION_KEY,
    }
    connect(shop.api, str(shop.tenant_id), "evolution", fields)
    page = new_page()
    sign_in(page, shop.api, shop.user(Role.ADMIN, "Gil"))
    page.get_by_role("link", name="Canais").click()
    channel = page.get_by_role("listitem", name=f"Canal {instance}")
    expect(channel.locator("[data-channel-state]")).to_have_text("sem notícia do gateway")
    cloud = page.get_by_role("listitem", name=f"Canal {shop.tenant.phone_number_id}")
    expect(cloud).to_contain_text("WhatsApp Cloud API")
    expect(cloud.get_by_role("button", name="Conectar")).to_have_count(0)

    channel.get_by_role("button", name="Conectar").click()
    qr = channel.get_by_role("img", name=f"QR code para conectar {instance}")
    expect(qr).to_be_visible()
    assert qr.get_attribute("src") == QR_IMAGE
    expect(channel.locator("[data-channel-state]")).to_have_text("aguardando a leitura do QR code")
    assert evolution.calls[-1]["instance"] == instance
    page.evaluate("window.sameDocument = true")  # the connect redirected: a new document

    # The phone scanned the code: Evolution says so, and the screen follows by itself.
    evolution_webhook(
        shop, instance, secret, "connection.update", {"instance": instance, "state": "open"}
    )
    expect(channel.locator("[data-channel-state]")).to_have_text("conectado")
    expect(qr).to_have_count(0)
    expect(channel.get_by_role("button", name="Conectar")).to_have_count(0)
    page.screenshot(path=tmp_path / "channel-connected.png", full_page=True)

    evolution_webhook(
        shop,
        instance,
        secret,
        "connection.update",
        {"instance": instance, "state": "close", "statusReason": 401},
    )
    expect(channel.locator("[data-channel-state]")).to_have_text("desconectado")
    expect(channel).to_contain_text("motivo: 401")
    assert page.evaluate("window.sameDocument") is True  # no reload brought it
    listed = [c.id for c in shop.api.store.app.channels(shop.tenant_id)]
    assert channel_route_id_for("evolution", instance) in listed
    page.screenshot(path=tmp_path / "channel-disconnected.png", full_page=True)


def test_the_telegram_notice_is_saved_its_token_shown_only_as_configurado(
    shop: Shop, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    page = new_page()
    sign_in(page, shop.api, shop.user(Role.ADMIN, "Gil"))
    page.get_by_role("link", name="Configurações").click()
    expect(page.locator("#telegram-state")).to_have_text("Desligada.")
    page.get_by_label("ID do chat do Telegram").fill("-1001234567890")
    page.get_by_label("Token do bot do Telegram").fill(BOT_TOKEN)
    page.get_by_role("button", name="Salvar Telegram").click()
    expect(page.get_by_role("status")).to_have_text("Salvo.")
    expect(page.locator("#telegram-state")).to_have_text(
        "Ativa: chat -1001234567890, token do bot configurado."
    )
    expect(page.get_by_label("Token do bot do Telegram")).to_have_value("")
    expect(page.get_by_label("Token do bot do Telegram")).to_have_attribute(
        "placeholder", re.compile("^configurado")
    )
    assert BOT_TOKEN not in page.content()
    target = shop.api.store.app.get(Tenant, shop.tenant_id).telegram
    assert target is not None
    assert (target.chat_id, target.bot_token) == ("-1001234567890", BOT_TOKEN)

    # Another chat, the token left empty: the bot stays.
    page.get_by_label("ID do chat do Telegram").fill("-1009876543210")
    page.get_by_role("button", name="Salvar Telegram").click()
    expect(page.locator("#telegram-state")).to_contain_text("chat -1009876543210")
    target = shop.api.store.app.get(Tenant, shop.tenant_id).telegram
    assert target is not None
    assert target.bot_token == BOT_TOKEN

    # The bot's words and the stage thresholds are on the same screen.
    words = f"Já chamo uma pessoa para você ({uuid4().hex[:6]})."
    page.get_by_label("Mensagem ao transferir para uma pessoa").fill(words)
    page.get_by_label("Quente", exact=True).fill("80")
    # "Salvo." is on the screen already (the Telegram's): wait for this form's answer.
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Salvar configurações").click()
    assert posted.value.status == 200
    expect(page.get_by_role("status")).to_have_text("Salvo.")
    settings = shop.api.store.app.get(Tenant, shop.tenant_id).settings
    assert settings.bot_messages["handoff"] == words
    assert settings.stage_thresholds["hot"] == 80
    page.screenshot(path=tmp_path / "settings-telegram.png", full_page=True)


def test_an_attendant_cannot_open_the_admin_screens(
    shop: Shop, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    page = new_page()
    sign_in(page, shop.api, shop.user(Role.ATTENDANT, "Ana"))
    expect(page.get_by_role("heading", name="Fila")).to_be_visible()
    nav = page.get_by_role("navigation", name="Principal")
    for name in ("Testar", "Canais", "Conhecimento", "Configurações"):
        expect(nav.get_by_role("link", name=name)).to_have_count(0)
    for path in ("testar", "channels", "knowledge", f"testar/{UUID(int=1)}/fragment"):
        answer = page.goto(f"{shop.api.url}/panel/{path}")
        assert answer is not None
        assert answer.status == 403, path
        expect(page.get_by_role("heading", name="Sem permissão")).to_be_visible()
    page.screenshot(path=tmp_path / "admin-refused.png", full_page=True)

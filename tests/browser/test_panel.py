"""The attendant panel in a real browser: sign in and out, the queue live, a
conversation worked from Assumir to Encerrar, the 24-hour window, and who may open what."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from playwright.sync_api import Page, expect
from psycopg import sql

from tests.browser.conftest import (
    ASKS_FOR_A_PERSON,
    Shop,
    conversation_of,
    lead_writes,
    live,
    sign_in,
    wa_id,
)
from tests.e2e.access_helpers import PASSWORD
from tests.e2e.fakes import SUMMARY, Outside
from tests.e2e.test_ai_loop import wait_until
from urbana.adapters.http.panel import v1 as panel_v1
from urbana.adapters.http.panel.views import REASONS
from urbana.config import conninfo
from urbana.domain.conversation import Conversation
from urbana.domain.lead import Lead
from urbana.domain.tenant import Tenant
from urbana.domain.user import Role
from urbana.projections.base import physical_name
from urbana.projections.conversation_view import ConversationView

pytestmark = pytest.mark.e2e


def test_sign_in_shows_the_queue_and_sign_out_ends_the_session(
    shop: Shop, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    email = shop.user(Role.ATTENDANT, "Ana")
    page = new_page()
    sign_in(page, shop.api, email, password="not the password")
    expect(page.get_by_role("alert")).to_have_text("E-mail ou senha incorretos.")

    sign_in(page, shop.api, email)
    expect(page.get_by_role("heading", name="Fila")).to_be_visible()
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "urbana_session"]
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")

    page.get_by_role("button", name="Sair").click()
    expect(page.get_by_role("button", name="Entrar")).to_be_visible()
    assert not [c for c in page.context.cookies() if c["name"] == "urbana_session"]
    page.goto(f"{shop.api.url}/panel/")
    expect(page.get_by_label("Senha")).to_be_visible()
    page.screenshot(path=tmp_path / "signed-out.png", full_page=True)
    assert PASSWORD not in page.content()


def test_a_lead_asking_for_a_person_appears_in_the_queue_without_a_reload(
    shop: Shop, outside: Outside, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    page = new_page()
    sign_in(page, shop.api, shop.user(Role.ATTENDANT, "Ana"))
    expect(page.get_by_role("heading", name="Fila")).to_be_visible()
    live(page)
    page.evaluate("window.sameDocument = true")  # gone if the page were reloaded
    queue = page.get_by_role("region", name="Conversas")

    who, marker = wa_id(), uuid4().hex[:8]
    outside.decisions[marker] = ASKS_FOR_A_PERSON
    started = time.monotonic()
    lead_writes(shop, who, f"Quero falar com um atendente ({marker})", name="Joana Lima")
    expect(queue.get_by_role("link", name="Joana Lima")).to_be_visible()
    took = time.monotonic() - started

    assert page.evaluate("window.sameDocument") is True
    item = queue.get_by_role("listitem").filter(has_text="Joana Lima")
    expect(item.locator(".reason")).to_have_text(REASONS["lead_request"])
    expect(item.locator("[data-since]")).to_have_text(re.compile(r"\d\d min \d\d s"))
    expect(page.get_by_role("link", name=re.compile("^Fila"))).to_contain_text("1")
    page.screenshot(path=tmp_path / "queue.png", full_page=True)
    print(f"webhook to queue: {took:.2f} s")


def handed_off(shop: Shop, outside: Outside, page: Page, name: str) -> str:
    """A lead asks for a person; the signed-in page sees it in the queue and opens it."""
    who = wa_id()
    marker = uuid4().hex[:8]
    outside.decisions[marker] = ASKS_FOR_A_PERSON
    lead_writes(shop, who, f"Preciso falar com um atendente ({marker})", name=name)
    queue = page.get_by_role("region", name="Conversas")
    queue.get_by_role("link", name=name).click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    return who


def test_assumir_reply_return_to_the_ai_and_close(
    shop: Shop, outside: Outside, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    page = new_page()
    sign_in(page, shop.api, shop.user(Role.ATTENDANT, "Ana"))
    live(page)
    who = handed_off(shop, outside, page, "Carla Dias")
    status = page.locator("#conversation-status")
    expect(status).to_have_text("Aguardando atendente")
    handoff = page.get_by_role("note", name="Transferência para atendente")
    expect(handoff).to_contain_text(f"Motivo: {REASONS['lead_request']}")
    expect(handoff).to_contain_text(f"Resumo: {SUMMARY}")
    expect(page.get_by_role("textbox", name="Mensagem")).to_have_count(0)

    page.get_by_role("button", name="Assumir").click()
    expect(status).to_have_text("Em atendimento")
    expect(page.locator("[data-countdown]")).to_have_text(re.compile(r"^23 h \d\d min"))
    says = f"Oi Carla, aqui é a Ana ({uuid4().hex[:6]}). Vou ver o seu pedido."
    page.get_by_role("textbox", name="Mensagem").fill(says)
    page.get_by_role("button", name="Enviar").click()

    thread = page.get_by_role("list", name="Mensagens")
    mine = thread.get_by_role("listitem").filter(has_text=says)
    expect(mine).to_contain_text("Atendente · Ana")
    expect(mine.get_by_role("img", name="enviada")).to_be_visible()
    assert [s["body"]["text"]["body"] for s in outside.sends_to(who)][-1] == says
    expect(thread.get_by_role("listitem").filter(has_text="Preciso falar")).to_contain_text("Lead")

    page.get_by_role("button", name="Devolver para a IA").click()
    expect(status).to_have_text("Com a IA")
    page.get_by_role("button", name="Encerrar").click()
    expect(status).to_have_text("Encerrada")
    expect(page.get_by_role("button", name="Reabrir")).to_be_visible()
    # The whole screen is the closed one (not only its live part): nothing to answer.
    expect(page.get_by_text("Assuma a conversa para responder.")).to_have_count(0)
    page.screenshot(path=tmp_path / "conversation.png", full_page=True)


def test_a_second_attendant_sees_the_conversation_leave_the_queue_live(
    shop: Shop, outside: Outside, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    ana, bia = new_page(), new_page()
    sign_in(ana, shop.api, shop.user(Role.ATTENDANT, "Ana"))
    sign_in(bia, shop.api, shop.user(Role.ATTENDANT, "Bia"))
    live(ana)
    live(bia)
    bia.evaluate("window.sameDocument = true")
    handed_off(shop, outside, ana, "Davi Rocha")
    bias_queue = bia.get_by_role("region", name="Conversas")
    expect(bias_queue.get_by_role("link", name="Davi Rocha")).to_be_visible()

    ana.get_by_role("button", name="Assumir").click()
    expect(ana.locator("#conversation-status")).to_have_text("Em atendimento")
    expect(bias_queue.get_by_role("link", name="Davi Rocha")).to_have_count(0)
    assert bia.evaluate("window.sameDocument") is True
    bia.screenshot(path=tmp_path / "queue-after.png", full_page=True)


def test_outside_the_24_hour_window_the_reply_box_says_so_and_offers_no_send(
    shop: Shop, new_page: Callable[..., Page], tmp_path: Path
) -> None:
    page = new_page(width=360)  # a phone
    sign_in(page, shop.api, shop.user(Role.ATTENDANT, "Ana"))
    who = wa_id()
    yesterday = time.time() - 25 * 3600
    lead_writes(shop, who, "Oi, vocês abrem amanhã?", name="Elisa Prado", sent_at=yesterday)
    cid = conversation_of(shop, who)
    # Nothing follows a message a day old (no reply is generated outside the window), so
    # no live redraw brings it: open the list once the read model has it.
    deadline = time.monotonic() + 60
    while True:
        page.goto(f"{shop.api.url}/panel/?view=all")
        if page.get_by_role("link", name="Elisa Prado").count() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    page.get_by_role("link", name="Elisa Prado").click()
    page.get_by_role("button", name="Assumir").click()
    expect(page.locator("#conversation-status")).to_have_text("Em atendimento")
    expect(page.get_by_role("status")).to_contain_text("A janela de 24 horas fechou")
    expect(page.get_by_role("textbox", name="Mensagem")).to_have_count(0)
    expect(page.get_by_role("button", name="Enviar")).to_have_count(0)
    assert page.url.endswith(f"/panel/conversations/{cid}")
    # Nothing is wider than the phone: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    page.screenshot(path=tmp_path / "window-closed.png", full_page=True)


def test_an_attendant_cannot_open_the_settings_and_an_admin_can(
    shop: Shop, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    admin, attendant = new_page(), new_page()
    sign_in(admin, shop.api, shop.user(Role.ADMIN, "Gil"))
    admin.get_by_role("link", name="Configurações").click()
    prompt = f"Você atende a Loja {uuid4().hex[:6]}."
    admin.get_by_label("Instruções para a IA (prompt)").fill(prompt)
    admin.get_by_role("button", name="Salvar configurações").click()
    expect(admin.get_by_role("status")).to_have_text("Salvo.")
    assert shop.api.store.app.get(Tenant, shop.tenant_id).settings.prompt == prompt

    sign_in(attendant, shop.api, shop.user(Role.ATTENDANT, "Ana"))
    expect(attendant.get_by_role("heading", name="Fila")).to_be_visible()
    expect(attendant.get_by_role("link", name="Configurações")).to_have_count(0)
    answer = attendant.goto(f"{shop.api.url}/panel/settings")
    assert answer is not None
    assert answer.status == 403
    expect(attendant.get_by_role("heading", name="Sem permissão")).to_be_visible()
    attendant.screenshot(path=tmp_path / "settings-refused.png", full_page=True)


def test_a_lead_moves_on_the_kanban_by_its_menu_and_a_supervisor_reads_the_kpis(
    shop: Shop, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    who = wa_id()
    lead_writes(shop, who, "Olá, quero saber dos planos", name="Fábio Reis")
    lead_id = shop.api.store.app.get(Conversation, conversation_of(shop, who)).lead_id
    supervisor = new_page()
    sign_in(supervisor, shop.api, shop.user(Role.SUPERVISOR, "Sara"))
    expect(supervisor.get_by_role("heading", name="Fila")).to_be_visible()

    def on_the_board() -> bool:
        supervisor.goto(f"{shop.api.url}/panel/leads")
        return supervisor.locator(f"[data-lead='{lead_id}']").count() == 1

    wait_until(on_the_board, 30)
    supervisor.get_by_label("Etapa de Fábio Reis").select_option("qualified")
    column = supervisor.get_by_role("region", name=re.compile("^Qualificado"))
    expect(column.get_by_text("Fábio Reis", exact=True)).to_be_visible()
    assert shop.api.store.app.get(Lead, lead_id).stage == "qualified"

    supervisor.get_by_role("link", name="Indicadores").click()
    expect(supervisor.get_by_role("heading", name="Indicadores")).to_be_visible()
    expect(supervisor.get_by_role("img", name="Conversas por dia, por dia")).to_be_visible()
    expect(supervisor.get_by_role("table")).to_contain_text("Conversas")
    supervisor.screenshot(path=tmp_path / "kpis.png", full_page=True)


def test_canned_responses_on_slash_and_private_notes_that_never_reach_the_lead(
    shop: Shop, outside: Outside, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    greeting = f"Olá! Sou a Ana ({uuid4().hex[:6]}), em que posso ajudar?"
    shop.api.store.app.save_canned_response(shop.tenant_id, "/ola", greeting)
    page = new_page()
    sign_in(page, shop.api, shop.user(Role.ATTENDANT, "Ana"))
    live(page)
    who = handed_off(shop, outside, page, "Gabi Nunes")
    page.get_by_role("button", name="Assumir").click()
    box = page.get_by_role("textbox", name="Mensagem")
    expect(box).to_be_visible()

    def listed() -> bool:  # the canned responses' read model follows the store
        page.reload()
        return page.locator("#canned [role=option]").count() == 1

    wait_until(listed, 30)
    box.press_sequentially("/ol")
    expect(page.get_by_role("listbox", name="Respostas prontas")).to_be_visible()
    box.press("ArrowDown")
    box.press("Enter")
    expect(box).to_have_value(greeting)
    page.get_by_role("button", name="Enviar").click()
    thread = page.get_by_role("list", name="Mensagens")
    sent_item = thread.get_by_role("listitem").filter(has_text=greeting)
    expect(sent_item.get_by_role("img", name="enviada")).to_be_visible()  # the gateway took it

    note = f"Cliente prefere ligação à tarde ({uuid4().hex[:6]})"
    page.get_by_label("Nota privada").fill(note)
    page.get_by_role("button", name="Salvar nota").click()
    expect(page.get_by_role("region", name="Notas privadas")).to_contain_text(note)
    sent = [s["body"]["text"]["body"] for s in outside.sends_to(who)]
    assert greeting in sent
    assert note not in sent
    page.screenshot(path=tmp_path / "canned-and-note.png", full_page=True)


def test_what_an_attendant_did_shows_up_even_when_the_read_models_lag_past_the_wait(
    shop: Shop,
    outside: Outside,
    new_page: Callable[[], Page],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The form waits CATCH_UP_S for the read models, then draws what they have; the
    # screen must still show the note once the projector gets past a stall longer than
    # that (here: another session holding the notes table against writes).
    monkeypatch.setattr(panel_v1, "CATCH_UP_S", 0.3)
    page = new_page()
    sign_in(page, shop.api, shop.user(Role.ATTENDANT, "Ana"))
    live(page)
    handed_off(shop, outside, page, "Iara Souza")
    page.get_by_role("button", name="Assumir").click()
    expect(page.get_by_role("textbox", name="Mensagem")).to_be_visible()

    note = f"Retornar amanhã cedo ({uuid4().hex[:6]})"
    notes = physical_name(ConversationView(), "notes")
    store = shop.api.store
    with psycopg.connect(conninfo(store.url, store.schema)) as stall:
        stall.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier(notes)))
        page.get_by_label("Nota privada").fill(note)
        page.get_by_role("button", name="Salvar nota").click()
        expect(page.get_by_label("Nota privada")).to_have_value("")  # the screen after it
        time.sleep(1.5)  # several catch-up waits pass with the note not yet projected
        expect(page.get_by_role("region", name="Notas privadas")).to_have_count(0)
    expect(page.get_by_role("region", name="Notas privadas")).to_contain_text(note)

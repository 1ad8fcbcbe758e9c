"""The auditor's screens in a real browser: a subject found by phone, exported (the
downloads arrive and hold the conversation), erased through the confirmation, the
conversation then reading `[erased]`, the access log; and an attendant kept out."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ASKS_FOR_A_PERSON, Shop, conversation_of, lead_writes, sign_in
from tests.browser.conftest import wa_id as new_wa_id
from tests.e2e.fakes import Outside
from urbana.domain.conversation import Conversation
from urbana.domain.lead import Lead
from urbana.domain.pii import ERASED
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

PURPOSE = "LGPD art. 18, pedido 123"


def spoken(who: str) -> str:
    """The phone as a person types it: +55, area code in parentheses, a dash."""
    return f"+55 ({who[2:4]}) {who[4:9]}-{who[9:]}"


def test_an_auditor_finds_exports_and_erases_a_subject_whose_conversation_then_reads_erased(
    shop: Shop, outside: Outside, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    who, marker = new_wa_id(), uuid4().hex[:8]
    said = f"Quero falar com um atendente sobre o meu pedido ({marker})"
    outside.decisions[marker] = ASKS_FOR_A_PERSON
    lead_writes(shop, who, said, name="Helena Souza")
    cid = conversation_of(shop, who)
    lead_id = shop.api.store.app.get(Conversation, cid).lead_id

    page = new_page()
    sign_in(page, shop.api, shop.user(Role.AUDITOR, "Iris"))
    page.get_by_role("link", name="Privacidade").click()
    page.get_by_label("Telefone do titular").fill(spoken(who))
    page.get_by_label("Finalidade da consulta").fill(PURPOSE)
    page.get_by_role("button", name="Buscar").click()
    found = page.get_by_role("region", name="Titular encontrado")
    expect(found).to_contain_text("Helena Souza")
    expect(found).to_contain_text(str(lead_id))
    expect(page.locator("#subject-counts")).to_contain_text("1 lead, 1 conversa(s)")
    expect(page.get_by_role("table", name="Conversas do titular")).to_contain_text(who)

    with page.expect_download() as as_json:
        page.get_by_role("button", name="Baixar JSON").click()
    assert as_json.value.suggested_filename == f"titular-{lead_id}.json"
    document = json.loads(Path(as_json.value.path()).read_text(encoding="utf-8"))
    assert document["purpose"] == PURPOSE
    assert said in [e["data"].get("text") for e in document["events"]]
    with page.expect_download() as as_html:
        page.get_by_role("button", name="Baixar HTML").click()
    assert as_html.value.suggested_filename == f"titular-{lead_id}.html"
    assert said in Path(as_html.value.path()).read_text(encoding="utf-8")

    page.get_by_role("link", name="Ver conversa 1").click()
    thread = page.get_by_role("list", name="Mensagens")
    expect(thread).to_contain_text(said)
    page.get_by_role("link", name="← Titular").click()

    page.get_by_role("link", name="Apagar os dados deste titular…").click()
    summary = page.locator("#erase-summary")
    expect(summary).to_contain_text(f"-{who[-4:]}")
    expect(summary).not_to_contain_text(who[4:9])  # the phone is masked
    expect(summary).to_contain_text("1 conversa(s)")
    expect(summary).to_contain_text("1 lead")
    page.get_by_label("Motivo").select_option(label="Pedido do titular")
    page.get_by_role("button", name="Apagar definitivamente").click()
    expect(page.get_by_role("status")).to_have_text("Dados do titular apagados.")
    removed = page.get_by_role("table", name="Removido")
    expect(removed.get_by_role("row", name="conversas 1")).to_be_visible()
    assert shop.api.store.app.get(Lead, lead_id).erased

    page.get_by_role("link", name="Ver o titular").click()
    expect(page.get_by_role("status")).to_contain_text("Dados pessoais já apagados")
    expect(page.get_by_role("table", name="Conversas do titular")).to_contain_text(ERASED)
    page.get_by_role("link", name="Ver conversa 1").click()
    expect(thread.get_by_role("listitem").first).to_contain_text(ERASED)
    expect(page.get_by_role("main")).not_to_contain_text(marker)
    page.screenshot(path=tmp_path / "erased-conversation.png", full_page=True)
    # The attendants' screen of it has nothing left to show: its rows went with the key.
    answer = page.goto(f"{shop.api.url}/panel/conversations/{cid}")
    assert answer is not None
    assert answer.status == 404

    page.goto(f"{shop.api.url}/panel/privacy/subjects/{lead_id}/erase?purpose=again")
    expect(page.get_by_role("status")).to_contain_text("já foi apagado")
    page.get_by_role("button", name="Apagar definitivamente").click()
    expect(page.get_by_role("status")).to_contain_text("já apagado")

    page.get_by_role("link", name="Privacidade").click()
    page.get_by_role("link", name="Registro de acessos").click()
    log = page.get_by_role("table", name="Acessos")
    expect(log.get_by_role("row").filter(has_text=PURPOSE).first).to_contain_text("Iris")
    expect(log).to_contain_text("GET /v1/privacy/subjects/{lead_id}/export")
    page.screenshot(path=tmp_path / "access-log.png", full_page=True)


def test_an_attendant_cannot_open_the_auditor_screens(
    shop: Shop, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    who = new_wa_id()
    lead_writes(shop, who, "Olá, tudo bem?", name="Joel Lima")
    lead_id = shop.api.store.app.get(Conversation, conversation_of(shop, who)).lead_id
    page = new_page()
    sign_in(page, shop.api, shop.user(Role.ATTENDANT, "Ana"))
    expect(page.get_by_role("heading", name="Fila")).to_be_visible()
    expect(page.get_by_role("link", name="Privacidade")).to_have_count(0)
    for path in (
        "/panel/privacy",
        f"/panel/privacy?phone={who}&purpose=x",
        f"/panel/privacy/subjects/{lead_id}?purpose=x",
        f"/panel/privacy/subjects/{lead_id}/export?purpose=x&format=json",
        f"/panel/privacy/subjects/{lead_id}/erase?purpose=x",
        "/panel/privacy/access-log",
    ):
        answer = page.goto(f"{shop.api.url}{path}")
        assert answer is not None
        assert answer.status == 403, path
        expect(page.get_by_role("heading", name="Sem permissão")).to_be_visible()
    refused = page.request.post(
        f"{shop.api.url}/panel/privacy/subjects/{lead_id}/erase",
        form={"reason": "subject_request"},
        headers={"Origin": shop.api.url},
    )
    assert refused.status == 403
    expect(page.get_by_role("main")).not_to_contain_text(re.compile(who))
    assert not shop.api.store.app.get(Lead, lead_id).erased
    page.screenshot(path=tmp_path / "privacy-refused.png", full_page=True)

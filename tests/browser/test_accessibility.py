"""The panel for people who do not use it as its designers do: WCAG AA colour contrast
on every screen (axe-core, bundled by axe-playwright-python, so it runs offline), the
keyboard alone from the login to Assumir, and a 360 px phone with no sideways scroll."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

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
from tests.e2e.fakes import Outside
from tests.e2e.test_ai_loop import wait_until
from urbana.domain.conversation import Conversation
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

AXE = Axe()
CONTRAST = {"runOnly": {"type": "rule", "values": ["color-contrast"]}}
PURPOSE = "Pedido 42"
MAX_TABS = 80  # more stops than any screen has: past it, the keyboard cannot get there


def a_conversation_with_everything(shop: Shop, outside: Outside) -> tuple[str, UUID, UUID]:
    """A lead the AI answered once, who then asked for a person: the conversation screen
    has every kind of text (lead, IA with intent and confidence, the handoff note)."""
    who, marker = wa_id(), uuid4().hex[:8]
    outside.decisions[marker] = ASKS_FOR_A_PERSON
    lead_writes(shop, who, "Olá, qual o horário de vocês?", name="Lia Campos")
    cid = conversation_of(shop, who)
    wait_until(lambda: bool(outside.sends_to(who)), 60)  # the AI's answer went out
    lead_writes(shop, who, f"Quero falar com uma pessoa ({marker})", name="Lia Campos")
    return who, cid, shop.api.store.app.get(Conversation, cid).lead_id


@dataclass
class Tour:
    """The screens to visit, each with data on it, as (name, address); and the erasure
    receipt, which only a POST draws."""

    page: Page
    addresses: list[tuple[str, str]]
    erased_phone: str
    url: str

    def receipt(self) -> None:
        self.page.goto(f"{self.url}/panel/privacy?purpose={PURPOSE}&phone={self.erased_phone}")
        self.page.get_by_role("link", name="Apagar os dados deste titular…").click()
        self.page.get_by_role("button", name="Apagar definitivamente").click()
        heading = self.page.get_by_role("heading", name="Comprovante de apagamento")
        expect(heading).to_be_visible()


def tour(page: Page, shop: Shop, outside: Outside) -> Tour:
    """Sign an admin in (who may open every screen) once the read models show the
    conversation, and take it (so its screen has the reply box and the countdown)."""
    who, cid, lead_id = a_conversation_with_everything(shop, outside)
    erased_phone = wa_id()
    lead_writes(shop, erased_phone, "Oi, pode apagar os meus dados?", name="Rui Alves")
    sign_in(page, shop.api, shop.user(Role.ADMIN, "Gil"))
    url = shop.api.url

    def in_queue() -> bool:
        page.goto(f"{url}/panel/")
        return page.get_by_role("link", name="Lia Campos").count() == 1

    wait_until(in_queue, 60)
    page.goto(f"{url}/panel/conversations/{cid}")
    page.get_by_role("button", name="Assumir").click()
    expect(page.locator("#conversation-status")).to_have_text("Em atendimento")
    subject = f"{url}/panel/privacy/subjects/{lead_id}"
    addresses = [
        ("fila", f"{url}/panel/"),
        ("todas", f"{url}/panel/?view=all"),
        ("conversa", f"{url}/panel/conversations/{cid}"),
        ("leads", f"{url}/panel/leads"),
        ("indicadores", f"{url}/panel/kpis"),
        ("configuracoes", f"{url}/panel/settings"),
        ("privacidade", f"{url}/panel/privacy"),
        ("titular", f"{url}/panel/privacy?purpose={PURPOSE}&phone={who}"),
        ("conversa-do-titular", f"{subject}/conversations/{cid}?purpose={PURPOSE}"),
        ("apagar", f"{subject}/erase?purpose={PURPOSE}"),
        ("acessos", f"{url}/panel/privacy/access-log"),
        ("nao-encontrado", f"{url}/panel/conversations/{uuid4()}"),
    ]
    return Tour(page, addresses, erased_phone, url)


def contrast_failures(page: Page) -> list[str]:
    found: dict[str, Any] = AXE.run(page, options=CONTRAST).response
    return [
        f"{node['target']}: {node['any'][0]['message']}"
        for violation in found["violations"]
        for node in violation["nodes"]
    ]


def test_every_screen_meets_wcag_aa_colour_contrast(
    shop: Shop, outside: Outside, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    signed_out = new_page()
    signed_out.goto(f"{shop.api.url}/panel/login")
    failures = {"login": contrast_failures(signed_out)}
    # The check sees a failure when there is one: grey #999 on white is 2.8:1.
    signed_out.evaluate(
        """() => { const p = document.createElement('p'); p.id = 'pale';
        p.style.color = '#999'; p.textContent = 'Texto claro demais';
        document.querySelector('main').append(p); }"""
    )
    assert [f for f in contrast_failures(signed_out) if "#pale" in f]
    signed_out.reload()
    signed_out.get_by_label("E-mail").fill("ninguem@example.com")
    signed_out.get_by_label("Senha").fill("errada")
    signed_out.get_by_role("button", name="Entrar").click()
    expect(signed_out.get_by_role("alert")).to_be_visible()
    failures["login-erro"] = contrast_failures(signed_out)

    page = new_page()
    visit = tour(page, shop, outside)
    for name, address in visit.addresses:
        page.goto(address)
        expect(page.get_by_role("main")).to_be_visible()
        failures[name] = contrast_failures(page)
        page.screenshot(path=tmp_path / f"{name}.png", full_page=True)
    visit.receipt()
    failures["comprovante"] = contrast_failures(page)

    assert {k: v for k, v in failures.items() if v} == {}


def focused(page: Page) -> dict[str, Any]:
    """The focused element: its text or label, and whether its focus ring shows."""
    found: dict[str, Any] = page.evaluate(
        """() => {
          const e = document.activeElement;
          const style = getComputedStyle(e);
          return {
            text: (e.innerText || e.getAttribute('aria-label') || e.id || '').trim(),
            id: e.id,
            ring: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0,
          };
        }"""
    )
    return found


def tab_to(page: Page, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Press Tab until the focused element is `wanted`; it must be reachable."""
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        now = focused(page)
        if wanted(now):
            return now
    raise AssertionError("not reachable with Tab")


def test_the_keyboard_alone_signs_in_and_takes_a_conversation(
    shop: Shop, outside: Outside, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    email = shop.user(Role.ATTENDANT, "Ana")
    page = new_page()
    page.goto(f"{shop.api.url}/panel/login")
    tab_to(page, lambda e: e["id"] == "email")
    page.keyboard.type(email)
    tab_to(page, lambda e: e["id"] == "password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Fila")).to_be_visible()
    live(page)

    who, marker = wa_id(), uuid4().hex[:8]
    outside.decisions[marker] = ASKS_FOR_A_PERSON
    lead_writes(shop, who, f"Quero falar com um atendente ({marker})", name="Nina Reis")
    expect(page.get_by_role("link", name="Nina Reis")).to_be_visible()
    link = tab_to(page, lambda e: e["text"] == "Nina Reis")
    assert link["ring"], "the focused link shows no focus ring"
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Nina Reis")).to_be_visible()
    button = tab_to(page, lambda e: e["text"] == "Assumir")
    assert button["ring"], "the focused button shows no focus ring"
    page.keyboard.press("Enter")
    expect(page.locator("#conversation-status")).to_have_text("Em atendimento")
    expect(page.get_by_role("textbox", name="Mensagem")).to_be_visible()
    page.screenshot(path=tmp_path / "keyboard-assumir.png", full_page=True)


def too_wide(page: Page) -> list[str]:
    """What makes the page scroll sideways: the page's width past the viewport, and the
    elements whose right edge is past it (none when it fits)."""
    found: list[str] = page.evaluate(
        """() => {
          const width = document.documentElement.clientWidth;
          if (document.documentElement.scrollWidth <= width) return [];
          return [`page ${document.documentElement.scrollWidth} > ${width}`].concat(
            [...document.querySelectorAll('body *')]
              .filter(e => e.getBoundingClientRect().right > width + 0.5)
              .map(e => `${e.tagName.toLowerCase()}.${e.className} `
                + Math.round(e.getBoundingClientRect().right))
              .slice(0, 8));
        }"""
    )
    return found


def test_the_main_screens_fit_a_360_px_phone_without_sideways_scroll(
    shop: Shop, outside: Outside, new_page: Callable[..., Page], tmp_path: Path
) -> None:
    page = new_page(width=360)
    page.goto(f"{shop.api.url}/panel/login")
    wider = {"login": too_wide(page)}
    visit = tour(page, shop, outside)
    for name, address in visit.addresses:
        page.goto(address)
        expect(page.get_by_role("main")).to_be_visible()
        wider[name] = too_wide(page)
        page.screenshot(path=tmp_path / f"{name}-360.png", full_page=True)
    visit.receipt()
    wider["comprovante"] = too_wide(page)

    assert {k: w for k, w in wider.items() if w} == {}

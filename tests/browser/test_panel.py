"""The attendant panel in a real browser: sign in and out, the queue live, a
conversation worked from Assumir to Encerrar, the 24-hour window, and who may open what."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Shop, lead_writes, live, sign_in, wa_id
from tests.e2e.access_helpers import PASSWORD
from urbana.adapters.http.panel.views import REASONS
from urbana.domain.user import Role

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
    shop: Shop, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    page = new_page()
    sign_in(page, shop.api, shop.user(Role.ATTENDANT, "Ana"))
    expect(page.get_by_role("heading", name="Fila")).to_be_visible()
    live(page)
    page.evaluate("window.sameDocument = true")  # gone if the page were reloaded
    queue = page.get_by_role("region", name="Conversas")

    who = wa_id()
    started = time.monotonic()
    lead_writes(shop, who, "Quero falar com um atendente, por favor", name="Joana Lima")
    expect(queue.get_by_role("link", name="Joana Lima")).to_be_visible()
    took = time.monotonic() - started

    assert page.evaluate("window.sameDocument") is True
    item = queue.get_by_role("listitem").filter(has_text="Joana Lima")
    expect(item.locator(".reason")).to_have_text(re.compile("|".join(REASONS.values())))
    expect(item.locator("[data-since]")).to_have_text(re.compile(r"\d\d min \d\d s"))
    expect(page.get_by_role("link", name=re.compile("^Fila"))).to_contain_text("1")
    page.screenshot(path=tmp_path / "queue.png", full_page=True)
    print(f"webhook to queue: {took:.2f} s")

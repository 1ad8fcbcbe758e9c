"""The attendant panel in a real browser: sign in and out, the queue live, a
conversation worked from Assumir to Encerrar, the 24-hour window, and who may open what."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Shop, sign_in
from tests.e2e.access_helpers import PASSWORD
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

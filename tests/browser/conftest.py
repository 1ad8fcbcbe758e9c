"""The panel in a real Chromium (the operating system's `chromium` package, driven by
Playwright), on the whole stack: every role in the API's process, the outside world as
local fakes (OpenAI and the Cloud API: tests.e2e.fakes)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from uuid import UUID, uuid4

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from tests.e2e.access_helpers import PASSWORD, access, new_email
from tests.e2e.conftest import Api, running_api
from tests.e2e.fakes import Outside, serving_outside
from tests.e2e.webhook_helpers import CloudTenant, cloud_tenant, cloud_text, post_cloud
from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.runtime import ROLES
from urbana.domain.conversation import Conversation
from urbana.domain.user import Role

CHROMIUM = os.environ.get("URBANA_TEST_CHROMIUM", "/usr/bin/chromium")
GUARD_MS = 30_000  # only against a hang: every wait ends as soon as its condition holds
expect.set_options(timeout=GUARD_MS)


@pytest.fixture(scope="module")
def outside() -> Iterator[Outside]:
    with serving_outside() as fake:
        yield fake


@pytest.fixture(scope="module")
def stack(services: ServiceUrls, outside: Outside) -> Iterator[Api]:
    with running_api(services, "panel", ROLES, llm=outside, debounce_ms=0) as api:
        yield api


# Module-scoped, not session-scoped: Playwright's sync API runs its own event loop, which
# is closed before the asyncio tests of the other directories run.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError(
            f"no Chromium at {CHROMIUM}: install it (`apt-get install -y chromium`, which "
            "scripts/test does when it runs as root) or point URBANA_TEST_CHROMIUM at one"
        )
    launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
    try:
        yield launched
    finally:
        launched.close()


@dataclass
class Shop:
    """A tenant on the Cloud API fake, and how to add its users."""

    api: Api
    tenant: CloudTenant

    @property
    def tenant_id(self) -> UUID:
        return UUID(self.tenant.tenant_id)

    def user(self, role: Role, name: str) -> str:
        email = new_email()
        access(self.api).add_user(
            self.tenant_id, email=email, role=role, password=PASSWORD, name=name
        )
        return email


@pytest.fixture
def shop(stack: Api, outside: Outside) -> Shop:
    tenant = cloud_tenant(stack, api_base_url=outside.url)
    stack.store.app.change_settings(UUID(tenant.tenant_id), debounce_ms=0)
    return Shop(stack, tenant)


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Pages in contexts of their own (one per attendant), closed after the test."""
    contexts: list[BrowserContext] = []

    def make(width: int = 1280) -> Page:
        context = browser.new_context(viewport={"width": width, "height": 900}, locale="pt-BR")
        context.set_default_timeout(GUARD_MS)
        contexts.append(context)
        return context.new_page()

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


def sign_in(page: Page, api: Api, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{api.url}/panel/")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Senha").fill(password)
    page.get_by_role("button", name="Entrar").click()


# What the fake model answers when a lead asks for a person (as a model that follows the
# reply contract would): no reply of its own, a handoff with the lead's request as reason.
ASKS_FOR_A_PERSON = {
    "reply": "",
    "intent": "human",
    "confidence": 0.95,
    "should_handoff": True,
    "handoff_reason": "lead_request",
    "score_delta": 0,
}


def wa_id() -> str:
    return f"551196{uuid4().int % 10**7:07d}"


def lead_writes(shop: Shop, who: str, text: str, name: str, sent_at: float | None = None) -> None:
    """The lead's message, as the Cloud API posts it (signed); `sent_at` its timestamp."""
    payload = cloud_text(shop.tenant.phone_number_id, who, text, name=name)
    if sent_at is not None:
        message = payload["entry"][0]["changes"][0]["value"]["messages"][0]
        message["timestamp"] = str(int(sent_at))
    with httpx.Client(timeout=10) as client:
        answer = post_cloud(client, shop.api, shop.tenant, payload)
    assert answer.status_code == 200, answer.text


def conversation_of(shop: Shop, who: str) -> UUID:
    return Conversation.create_id(shop.tenant_id, "cloud", who)


def live(page: Page) -> None:
    """Wait until the page follows /v1/stream (what happens from now on reaches it)."""
    expect(page.locator("body[data-live=on]")).to_be_attached()

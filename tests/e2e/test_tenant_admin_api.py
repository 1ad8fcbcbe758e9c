"""A tenant's admin over /v1: knowledge documents uploaded and listed (then indexed by the
knowledge role), and where handoff notices go (Telegram, its token write-only)."""

from __future__ import annotations

from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.access_helpers import team
from tests.e2e.conftest import Api
from tests.e2e.test_knowledge_api import chunks, kb_api, wait_for
from tests.e2e.webhook_helpers import create_tenant
from urbana.domain.tenant import MAX_DOCUMENT, Tenant
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

__all__ = ["kb_api"]  # the module's API, with the relay and the knowledge role

PROBLEM = "application/problem+json"
BOT_TOKEN = "7123456789:AAH3xJ9kq0bS2mZ4vW8yR1tL6nP5c"


def admin(api: Api, tenant_id: str) -> dict[str, str]:
    crew = team(api, UUID(tenant_id))
    return crew.headers(Role.ADMIN)


def upload(api: Api, headers: dict[str, str], name: str, body: bytes, kind: str) -> httpx.Response:
    return httpx.put(
        f"{api.url}/v1/knowledge/{name}", content=body, headers={**headers, "Content-Type": kind}
    )


def test_an_admin_uploads_a_document_lists_it_and_the_knowledge_role_indexes_it(
    kb_api: Api,
) -> None:
    tid = create_tenant(kb_api)
    headers = admin(kb_api, tid)
    text = "# Trocas\n\nAceitamos trocas em até 30 dias com a nota fiscal."
    r = upload(kb_api, headers, "trocas.md", text.encode(), "text/markdown; charset=utf-8")
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert (accepted["name"], accepted["characters"], accepted["status"]) == (
        "trocas.md",
        len(text),
        "accepted",
    )
    listed = httpx.get(f"{kb_api.url}/v1/knowledge", headers=headers)
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == [
        {"name": "trocas.md", "document_id": accepted["document_id"], "characters": len(text)}
    ]
    wait_for(lambda: chunks(kb_api, tid, "trocas.md"))
    assert "30 dias" in chunks(kb_api, tid, "trocas.md")[0][0]

    # The same name replaces it (a text/plain body too).
    again = upload(kb_api, headers, "trocas.md", "Trocas em até 7 dias.".encode(), "text/plain")
    assert again.status_code == 202, again.text
    wait_for(lambda: [t for t, _ in chunks(kb_api, tid, "trocas.md")] == ["Trocas em até 7 dias."])
    items = httpx.get(f"{kb_api.url}/v1/knowledge", headers=headers).json()["items"]
    assert [(d["name"], d["characters"]) for d in items] == [("trocas.md", 21)]


def test_bad_uploads_and_other_roles_are_problems_and_append_nothing(kb_api: Api) -> None:
    tid = create_tenant(kb_api)
    crew = team(kb_api, UUID(tid))
    headers = crew.headers(Role.ADMIN)
    before = kb_api.event_count()
    cases = [
        (upload(kb_api, headers, "vazio.md", b" \n\t ", "text/markdown"), 422),
        (upload(kb_api, headers, "latin1.txt", "preço".encode("latin-1"), "text/plain"), 422),
        (upload(kb_api, headers, "nul.txt", b"a\x00b", "text/plain"), 422),
        (upload(kb_api, headers, "grande.md", b"a" * (MAX_DOCUMENT + 1), "text/markdown"), 413),
        (upload(kb_api, headers, "enorme.md", b"a" * (4 * MAX_DOCUMENT + 1), "text/plain"), 413),
        (upload(kb_api, headers, "doc.pdf", b"%PDF-1.7", "application/pdf"), 415),
        (upload(kb_api, headers, "%20", b"Oi", "text/plain"), 422),
        (upload(kb_api, crew.headers(Role.SUPERVISOR), "x.md", b"Oi", "text/plain"), 403),
        (upload(kb_api, {}, "x.md", b"Oi", "text/plain"), 401),
        (httpx.get(f"{kb_api.url}/v1/knowledge", headers=crew.headers(Role.ATTENDANT)), 403),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == PROBLEM
    assert kb_api.event_count() == before
    assert httpx.get(f"{kb_api.url}/v1/knowledge", headers=headers).json() == {"items": []}


def test_another_tenants_documents_are_not_listed(kb_api: Api) -> None:
    mine, theirs = create_tenant(kb_api), create_tenant(kb_api)
    theirs_admin = admin(kb_api, theirs)
    r = upload(kb_api, theirs_admin, "segredo.md", b"Margem de 40%.", "text/markdown")
    assert r.status_code == 202, r.text
    listed = httpx.get(f"{kb_api.url}/v1/knowledge", headers=admin(kb_api, mine))
    assert listed.json() == {"items": []}


def test_telegram_notices_are_set_the_token_never_answered_and_turned_off(kb_api: Api) -> None:
    tid = create_tenant(kb_api)
    headers = admin(kb_api, tid)
    url = f"{kb_api.url}/v1/settings/telegram"
    assert httpx.get(url, headers=headers).json() == {
        "enabled": False,
        "chat_id": None,
        "bot_token_configured": False,
    }
    # No token configured yet: a chat alone is refused, and nothing is recorded.
    before = kb_api.event_count()
    refused = httpx.put(url, json={"chat_id": "-1001234567890"}, headers=headers)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == PROBLEM
    bad = httpx.put(url, json={"chat_id": "x", "bot_token": "nope"}, headers=headers)
    assert bad.status_code == 422, bad.text
    assert kb_api.event_count() == before

    r = httpx.put(url, json={"chat_id": "-1001234567890", "bot_token": BOT_TOKEN}, headers=headers)
    assert r.status_code == 200, r.text
    shown = {"enabled": True, "chat_id": "-1001234567890", "bot_token_configured": True}
    assert r.json() == shown
    read = httpx.get(url, headers=headers)
    assert read.json() == shown
    assert BOT_TOKEN not in read.text
    assert BOT_TOKEN not in httpx.get(f"{kb_api.url}/v1/settings", headers=headers).text

    # A new chat keeps the bot.
    moved = httpx.put(url, json={"chat_id": "-1009876543210"}, headers=headers)
    assert moved.json()["chat_id"] == "-1009876543210"
    target = kb_api.store.app.get(Tenant, UUID(tid)).telegram
    assert target is not None
    assert (target.chat_id, target.bot_token) == ("-1009876543210", BOT_TOKEN)

    assert httpx.delete(url, headers=headers).status_code == 204
    assert httpx.get(url, headers=headers).json()["enabled"] is False
    after = kb_api.event_count()
    assert httpx.delete(url, headers=headers).status_code == 204  # already off: no event
    assert kb_api.event_count() == after
    supervisor = team(kb_api, UUID(tid)).headers(Role.SUPERVISOR)
    assert httpx.get(url, headers=supervisor).status_code == 403


def test_a_bearer_of_another_tenant_changes_only_its_own_telegram(kb_api: Api) -> None:
    mine, theirs = create_tenant(kb_api), create_tenant(kb_api)
    r = httpx.put(
        f"{kb_api.url}/v1/settings/telegram",
        json={"chat_id": "@loja_" + uuid4().hex[:6], "bot_token": BOT_TOKEN},
        headers=admin(kb_api, theirs),
    )
    assert r.status_code == 200, r.text
    assert kb_api.store.app.get(Tenant, UUID(mine)).telegram is None

"""Testar: an admin talks to the tenant's bot through the console channel, on the real path
(store -> relay -> Kafka -> responder -> dispatcher -> the console sender), and reads why
it answered what it did. Console conversations reach no gateway and no attendant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.access_helpers import PASSWORD, access, bearer, login, new_email
from tests.e2e.conftest import ADMIN_KEY, Api, running_api
from tests.e2e.fakes import Outside
from tests.e2e.test_ai_loop import KNOWLEDGE, wait_until
from tests.e2e.webhook_helpers import cloud_tenant, create_tenant
from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.http.auth import SESSION_COOKIE
from urbana.adapters.http.panel import testar
from urbana.adapters.runtime import ROLES
from urbana.domain.conversation import Conversation
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def console_api(services: ServiceUrls, outside: Outside) -> Iterator[Api]:
    with running_api(services, "console", ROLES, llm=outside, debounce_ms=0) as api:
        yield api


def with_knowledge(api: Api, tenant_id: str) -> dict[str, str]:
    """The tenant's knowledge indexed, and an admin's API key as headers."""
    api.store.app.change_settings(UUID(tenant_id), debounce_ms=0)
    r = httpx.post(
        f"{api.url}/admin/tenants/{tenant_id}/knowledge",
        json={"name": "atendimento.md", "text": KNOWLEDGE},
        headers={"X-Admin-Key": ADMIN_KEY},
    )
    assert r.status_code == 202, r.text

    def indexed() -> bool:
        with api.store.pool.connection() as conn:
            table = conn.execute("SELECT to_regclass('kb_chunks')").fetchone()
            if table is None or table[0] is None:
                return False
            row = conn.execute(
                "SELECT count(*) FROM kb_chunks WHERE tenant_id = %s", (UUID(tenant_id),)
            ).fetchone()
        return bool(row and row[0])

    wait_until(indexed, timeout=60)
    key = access(api).create_api_key(UUID(tenant_id), role=Role.ADMIN, by=None)
    return bearer(key.token)


def say(api: Api, headers: dict[str, str], text: str, **extra: Any) -> dict[str, Any]:
    r = httpx.post(f"{api.url}/v1/console/messages", json={"text": text, **extra}, headers=headers)
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def answered(api: Api, headers: dict[str, str], said: dict[str, Any]) -> dict[str, Any]:
    """The console conversation once every message after `said` has left the dispatcher."""

    def look() -> dict[str, Any] | None:
        r = httpx.get(
            f"{api.url}/v1/console/conversations/{said['conversation_id']}", headers=headers
        )
        if r.status_code == 404:
            return None  # not projected yet
        assert r.status_code == 200, r.text
        detail: dict[str, Any] = r.json()
        keys = [m["key"] for m in detail["messages"]]
        if f"in:{said['seq']}" not in keys:
            return None
        after = detail["messages"][keys.index(f"in:{said['seq']}") + 1 :]
        replies = [m for m in after if m["direction"] == "out"]
        if not replies or any(m["status"] == "queued" for m in replies):
            return None
        return detail

    found: dict[str, Any] = wait_until(look, timeout=90)
    return found


def test_an_admin_tests_the_bot_before_any_number_is_connected(
    console_api: Api, outside: Outside
) -> None:
    tenant_id = create_tenant(console_api)
    headers = with_knowledge(console_api, tenant_id)
    sends_before = len(outside.sends)

    said = say(console_api, headers, "Qual o horário de atendimento?")
    assert said["seq"] == 1
    assert said["duplicate"] is False
    assert said["conversation_id"] == str(
        Conversation.create_id(UUID(tenant_id), "console", f"console:{said['session']}")
    )
    detail = answered(console_api, headers, said)

    assert detail["channel"] == "console"
    assert detail["status"] == "ai"
    reply = next(m for m in detail["messages"] if m["author"] == "ai")
    assert reply["text"] == "Atendemos de segunda a sexta, das 8h às 18h."
    assert reply["status"] == "sent"  # by the console sender, not a gateway
    assert (reply["intent"], reply["confidence"]) == ("faq", 0.92)
    assert reply["passages"], "the explanation names the knowledge the AI was given"
    best = reply["passages"][0]
    assert best["document"] == "atendimento.md"
    assert best["title"] in ("Atendimento", "Entrega")
    assert 0.0 < best["similarity"] <= 1.0
    assert [p["similarity"] for p in reply["passages"]] == sorted(
        (p["similarity"] for p in reply["passages"]), reverse=True
    )
    # The same explanation travels on the event (version 3) for any consumer.
    stream = console_api.store.app.stream(UUID(said["conversation_id"]))
    generated = [e for e in stream if type(e).__name__ == "AIReplyGenerated"]
    assert [p["title"] for p in generated[0].passages] == [p["title"] for p in reply["passages"]]
    # The session goes on in the same conversation.
    again = say(console_api, headers, "Vocês entregam em São Paulo?", session=said["session"])
    assert (again["conversation_id"], again["seq"]) == (said["conversation_id"], 2)
    answered(console_api, headers, again)
    assert len(outside.sends) == sends_before  # no gateway was called
    # Each read answered the text in clear, so each is in the access log.
    log = httpx.get(
        f"{console_api.url}/v1/privacy/access-log",
        params={"lead_id": detail["lead_id"]},
        headers=headers,
    ).json()["items"]
    assert log
    assert {e["route"] for e in log} == {"GET /v1/console/conversations/{conversation_id}"}
    assert {e["purpose"] for e in log} == {"console"}


def test_a_console_handoff_shows_its_reason_and_waits_for_nobody(
    console_api: Api, outside: Outside
) -> None:
    # A tenant with a real WhatsApp number: its console tests still never use it.
    tenant = cloud_tenant(console_api, api_base_url=outside.url)
    headers = with_knowledge(console_api, tenant.tenant_id)
    sends_before = len(outside.sends)

    said = say(console_api, headers, "Quero falar com um atendente, por favor")
    detail = answered(console_api, headers, said)

    assert detail["status"] == "waiting_human"
    assert detail["handoff_reason"] == "explicit_request"
    assert detail["handoff_summary"]
    assert [m["author"] for m in detail["messages"] if m["direction"] == "out"][-1] == "system"
    assert len(outside.sends) == sends_before
    queue = httpx.get(f"{console_api.url}/v1/queue", headers=headers)
    assert queue.status_code == 200, queue.text
    assert said["conversation_id"] not in [c["id"] for c in queue.json()["items"]]
    # The conversation stays unassigned: no attendant is pulled into a test.
    conv = console_api.store.app.get(Conversation, UUID(said["conversation_id"]))
    assert conv.assignee is None


def test_the_testar_thread_stops_asking_once_the_bot_has_had_its_say(
    console_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id = create_tenant(console_api)
    headers = with_knowledge(console_api, tenant_id)
    email = new_email()
    access(console_api).add_user(UUID(tenant_id), email=email, role=Role.ADMIN, password=PASSWORD)
    token = login(console_api, email).json()["access_token"]
    said = say(console_api, headers, "Qual o horário de atendimento?")
    answered(console_api, headers, said)
    url = f"{console_api.url}/panel/testar/{said['conversation_id']}/fragment"

    def polls(**params: int) -> bool:
        r = httpx.get(url, params=params, cookies={SESSION_COOKIE: token})
        assert r.status_code == 200, r.text
        assert "Atendemos de segunda a sexta" in r.text
        return 'hx-trigger="every 1s"' in r.text

    assert polls()  # just answered: a handoff's summary could still follow
    monkeypatch.setattr(testar, "QUIET_S", 0.0)
    assert not polls()  # quiet since: the tab stops reading (and logging) it
    assert polls(n=said["seq"] + 1)  # a message the view does not show yet: keep asking


def test_a_retried_console_message_is_recorded_once(console_api: Api) -> None:
    tenant_id = create_tenant(console_api)
    key = access(console_api).create_api_key(UUID(tenant_id), role=Role.ADMIN, by=None)
    headers = {**bearer(key.token), "Idempotency-Key": "k-1"}
    first = say(console_api, headers, "Oi", session="s1")
    second = say(console_api, headers, "Oi", session="s1")
    assert (second["conversation_id"], second["seq"]) == (first["conversation_id"], 1)
    assert (first["duplicate"], second["duplicate"]) == (False, True)
    stream = console_api.store.app.stream(UUID(first["conversation_id"]))
    assert [type(e).__name__ for e in stream].count("MessageReceived") == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": ""},
        {"text": "   \n "},
        {"text": "x" * 4097},
        {"text": "oi\x00"},
        {"text": 12},
        {"text": "Oi", "session": ""},
        {"text": "Oi", "session": "não/vale"},
        {"text": "Oi", "session": "s" * 65},
    ],
)
def test_bad_console_input_is_refused_and_appends_nothing(
    console_api: Api, body: dict[str, Any]
) -> None:
    tenant_id = create_tenant(console_api)
    key = access(console_api).create_api_key(UUID(tenant_id), role=Role.ADMIN, by=None)
    before = console_api.event_count()
    r = httpx.post(f"{console_api.url}/v1/console/messages", json=body, headers=bearer(key.token))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert tenant_events_since(console_api, before, UUID(tenant_id)) == []


def tenant_events_since(api: Api, position: int, tenant_id: UUID) -> list[Any]:
    """The tenant's events stored after `position` (other tests' keep flowing meanwhile)."""
    app = api.store.app
    notes = app.recorder.select_notifications(start=position + 1, limit=100_000)
    return [
        e
        for e in (app.mapper.to_domain_event(n) for n in notes)
        if getattr(e, "tenant_id", None) == tenant_id
    ]


def test_a_lead_conversation_is_not_a_console_one(console_api: Api, outside: Outside) -> None:
    tenant_id = create_tenant(console_api)
    key = access(console_api).create_api_key(UUID(tenant_id), role=Role.ADMIN, by=None)
    r = httpx.get(
        f"{console_api.url}/v1/console/conversations/{uuid4()}", headers=bearer(key.token)
    )
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == "application/problem+json"


URBANA = str(Path(sys.executable).with_name("urbana"))


def chat(
    api: Api, tenant_id: str, token: str, stdin: str, *args: str, home: Path
) -> subprocess.CompletedProcess[str]:
    """`urbana chat` as a user runs it, its input fed from a pipe."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("URBANA_")}
    env.update(URBANA_API_KEY=token, URBANA_DATA_DIR=str(home / "data"))
    return subprocess.run(
        [URBANA, "chat", tenant_id, "--url", api.url, "--timeout", "90", *args],
        input=stdin,
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_urbana_chat_talks_to_the_bot_and_explains_it(console_api: Api, tmp_path: Path) -> None:
    tenant_id = create_tenant(console_api)
    token = with_knowledge(console_api, tenant_id)["Authorization"].removeprefix("Bearer ")
    lines = "Qual o horário de atendimento?\n\n/nova\nQuero falar com um atendente\nAlô?\n"

    done = chat(console_api, tenant_id, token, lines, "--json", home=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    first, handoff, silent = (json.loads(line) for line in done.stdout.splitlines())
    assert first["answered"] is True
    assert first["status"] == "ai"
    (reply,) = first["replies"]
    assert reply["text"] == "Atendemos de segunda a sexta, das 8h às 18h."
    assert (reply["intent"], reply["confidence"]) == ("faq", 0.92)
    assert reply["passages"][0]["document"] == "atendimento.md"
    # /nova: a new session, so a new conversation; there the lead asks for a person.
    assert handoff["conversation_id"] != first["conversation_id"]
    assert (handoff["status"], handoff["handoff_reason"]) == ("waiting_human", "explicit_request")
    assert [m["author"] for m in handoff["replies"]][-1] == "system"
    # With a person, the bot stays silent: the turn ends without a reply.
    assert (silent["conversation_id"], silent["seq"]) == (handoff["conversation_id"], 2)
    assert silent["replies"] == []
    assert not (tmp_path / ".urbana").exists()


def test_urbana_chat_prints_the_reply_and_why(console_api: Api, tmp_path: Path) -> None:
    tenant_id = create_tenant(console_api)
    token = with_knowledge(console_api, tenant_id)["Authorization"].removeprefix("Bearer ")

    done = chat(
        console_api, tenant_id, token, "Qual o horário?\n/sair\nnunca lido\n", home=tmp_path
    )

    assert done.returncode == 0, done.stderr
    assert "bot> Atendemos de segunda a sexta, das 8h às 18h." in done.stdout
    assert "intent: faq · confidence: 0.92 · passages: atendimento.md › " in done.stdout
    said = tenant_events_since(console_api, 0, UUID(tenant_id))
    assert [type(e).__name__ for e in said].count("MessageReceived") == 1  # /sair ended it


def test_urbana_chat_refuses_what_cannot_chat(console_api: Api, tmp_path: Path) -> None:
    tenant_id = create_tenant(console_api)
    other = create_tenant(console_api)
    key = access(console_api).create_api_key(UUID(tenant_id), role=Role.ADMIN, by=None)
    attendant = access(console_api).create_api_key(UUID(tenant_id), role=Role.ATTENDANT, by=None)

    wrong = chat(console_api, tenant_id, "urb_nope_nope", "oi\n", home=tmp_path)
    assert (wrong.returncode, "not authenticated" in wrong.stderr) == (1, True), wrong.stderr
    elsewhere = chat(console_api, other, key.token, "oi\n", home=tmp_path)
    assert elsewhere.returncode == 1, elsewhere.stderr
    assert "of tenant" in elsewhere.stderr
    refused = chat(console_api, tenant_id, attendant.token, "oi\n", home=tmp_path)
    assert refused.returncode == 1, refused.stderr
    assert "needs an admin" in refused.stderr
    for done in (wrong, elsewhere, refused):
        assert "Traceback" not in done.stderr
    said = tenant_events_since(console_api, 0, UUID(tenant_id))
    assert "MessageReceived" not in [type(e).__name__ for e in said]

"""Data subject requests over HTTP: lookup, export (JSON and the Portuguese transcript),
the access log of every read that answers a subject's data in clear, and the refusals
that append nothing.

A subject talks on two channels (Cloud API by its phone, Evolution by an `@lid` contact
that carries the same phone in the old eight-digit form), recorded through the
application as the webhooks record it; a replay builds the read models the conversation
detail route reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest

from tests.e2e.access_helpers import Team, team
from tests.e2e.conftest import Api
from tests.helpers import ai_reply
from urbana.adapters.postgres.access_log import ACCESS_LOG_TABLE
from urbana.adapters.postgres.replay import replay
from urbana.application.app import ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.config import conninfo
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
TEXT = "Meu endereço é Rua das Flores, 12"
ANSWER = "Obrigada! Entregamos aí em 3 dias."


@dataclass
class Subject:
    crew: Team
    phone: str  # with the ninth digit
    old_form: str  # the same mobile without it
    lid: str
    lead: UUID
    cloud: UUID  # its conversation on the Cloud API
    evolution: UUID  # its conversation on Evolution, under the @lid contact
    other_crew: Team
    other_lead: UUID  # another tenant's subject with the same phone


def say(api: Api, tenant: UUID, channel: str, contact: str, phone: str, text: str) -> Any:
    message = InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=contact,
        phone=phone,
        sent_at=datetime.now(UTC),
        kind="text",
        text=text,
        contact_name="Joana <Prado>",
    )
    return api.store.app.receive_message(ReceiveMessage(tenant, channel, message))


@pytest.fixture(scope="module")
def subject(api: Api) -> Subject:
    crew, other_crew = team(api), team(api)
    subscriber = f"8{uuid4().int % 10**7:07d}"  # a mobile: its old form starts 6-9
    phone, old_form = f"55119{subscriber}", f"5511{subscriber}"
    lid = f"{uuid4().int % 10**15}@lid"
    cloud = say(api, crew.tenant_id, "cloud", phone, phone, TEXT)
    ai_reply(
        api.store.app,
        cloud.conversation_id,
        reply_to_seq=1,
        text=ANSWER,
        intent="entrega",
        confidence=0.9,
    )
    evolution = say(api, crew.tenant_id, "evolution", lid, old_form, "Oi pelo outro número")
    theirs = say(api, other_crew.tenant_id, "cloud", phone, phone, "Outra loja")
    replay(api.settings.database_url or "", api.settings.database_schema)
    assert cloud.lead_id == evolution.lead_id
    return Subject(
        crew=crew,
        phone=phone,
        old_form=old_form,
        lid=lid,
        lead=cloud.lead_id,
        cloud=cloud.conversation_id,
        evolution=evolution.conversation_id,
        other_crew=other_crew,
        other_lead=theirs.lead_id,
    )


def auditor(s: Subject) -> dict[str, str]:
    return s.crew.headers(Role.AUDITOR)


def access_rows(api: Api, lead: UUID) -> list[tuple[Any, ...]]:
    """The access log as the database owner sees it (every tenant)."""
    settings = api.settings
    with psycopg.connect(conninfo(settings.database_url or "", settings.database_schema)) as c:
        return c.execute(
            f"SELECT tenant_id, actor, role, lead_id, resource, route, purpose "  # noqa: S608
            f"FROM {ACCESS_LOG_TABLE} WHERE lead_id = %s ORDER BY at",
            (lead,),
        ).fetchall()


def lookup(
    api: Api, s: Subject, query: dict[str, str], headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.get(
        f"{api.url}/v1/privacy/subjects", params=query, headers=headers or auditor(s), timeout=30
    )


def test_every_phone_form_the_lead_id_and_the_lid_find_the_subject_on_both_channels(
    api: Api, subject: Subject
) -> None:
    forms: list[dict[str, str]] = [
        {"phone": subject.phone},
        {"phone": subject.old_form},
        {"phone": "+" + subject.phone},
        {"phone": f"+55 11 {subject.old_form[4:8]}-{subject.old_form[8:]}"},
        # National forms, as a person types them without +55 (with and without the 9).
        {"phone": f"(11) {subject.phone[4:9]}-{subject.phone[9:]}"},
        {"phone": subject.old_form[2:]},
        {"phone": "0" + subject.phone[2:]},
        {"lead_id": str(subject.lead)},
        {"contact_id": subject.lid},
        {"contact_id": f"{subject.phone}@s.whatsapp.net"},
    ]
    for query in forms:
        answer = lookup(api, subject, query)
        assert answer.status_code == 200, (query, answer.text)
        body = answer.json()
        assert body["lead_id"] == str(subject.lead), query
        assert body["phone"] == subject.phone
        assert body["name"] == "Joana <Prado>"
        by_channel = {c["channel"]: c for c in body["conversations"]}
        assert set(by_channel) == {"cloud", "evolution"}
        assert by_channel["cloud"]["id"] == str(subject.cloud)
        assert by_channel["evolution"]["id"] == str(subject.evolution)
        assert by_channel["evolution"]["contact"] == subject.lid
        assert body["erased"] is False


def test_unknown_other_tenants_and_malformed_lookups_append_nothing(
    api: Api, subject: Subject
) -> None:
    before_events, before_log = api.event_count(), len(access_rows(api, subject.other_lead))
    cases: list[tuple[int, dict[str, str]]] = [
        (404, {"phone": "5511900000000"}),
        (404, {"lead_id": str(subject.other_lead)}),
        (404, {"lead_id": str(uuid4())}),
        (404, {"contact_id": "999999999@lid"}),
        (422, {}),
        (422, {"phone": subject.phone, "lead_id": str(subject.lead)}),
        (422, {"phone": "not a phone"}),
        (422, {"lead_id": "not-a-uuid"}),
        (422, {"contact_id": "@lid"}),
    ]
    for status, query in cases:
        answer = lookup(api, subject, query)
        assert answer.status_code == status, (query, answer.text)
        assert answer.headers["content-type"] == PROBLEM
    assert api.event_count() == before_events
    assert len(access_rows(api, subject.other_lead)) == before_log


def test_each_lookup_is_in_the_access_log_with_its_purpose(api: Api, subject: Subject) -> None:
    before = len(access_rows(api, subject.lead))
    lookup(api, subject, {"phone": subject.phone, "purpose": "Art. 18 - pedido 1"})
    headers = {**auditor(subject), "X-Purpose": "Pedido 2"}
    lookup(api, subject, {"lead_id": str(subject.lead)}, headers)
    rows = access_rows(api, subject.lead)[before:]
    user = str(subject.crew.user_ids[Role.AUDITOR])
    assert rows == [
        (
            subject.crew.tenant_id,
            user,
            "auditor",
            subject.lead,
            str(subject.lead),
            "GET /v1/privacy/subjects",
            purpose,
        )
        for purpose in ("Art. 18 - pedido 1", "Pedido 2")
    ]


def export(api: Api, s: Subject, lead: UUID, **query: str) -> httpx.Response:
    return httpx.get(
        f"{api.url}/v1/privacy/subjects/{lead}/export",
        params=query,
        headers=auditor(s),
        timeout=60,
    )


def test_the_json_export_is_every_event_decrypted_in_order_and_is_recorded(
    api: Api, subject: Subject
) -> None:
    app = api.store.app
    streams = {subject.lead, subject.cloud, subject.evolution}
    stored = {s: len(app.stream(s)) for s in streams}
    logged = len(access_rows(api, subject.lead))

    answer = export(api, subject, subject.lead, purpose="Portabilidade, pedido 7")

    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    events = body["events"]
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    by_stream: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_stream.setdefault(e["stream_id"], []).append(e)
    for stream, count in stored.items():  # every event of each stream, none missing
        assert [e["stream_version"] for e in by_stream[str(stream)]] == list(range(1, count + 1))
    refs = [s for s, es in by_stream.items() if es[0]["aggregate"] == "MessageRef"]
    assert len(refs) == 2  # one per inbound message
    texts = [e["data"].get("text") for e in events]
    assert TEXT in texts
    assert ANSWER in texts
    created = by_stream[str(subject.lead)][0]
    assert (created["type"], created["data"]["phone"]) == ("LeadCreated", subject.phone)
    assert all({"type", "occurred_at", "stream_id", "stream_version"} <= set(e) for e in events)
    assert body["purpose"] == "Portabilidade, pedido 7"
    assert body["subject"]["lead_id"] == str(subject.lead)

    recorded = app.stream(subject.lead)[-1]
    assert type(recorded).__name__ == "SubjectDataExported"
    assert recorded.by == str(subject.crew.user_ids[Role.AUDITOR])
    assert (recorded.role, recorded.purpose, recorded.rendering) == (
        "auditor",
        "Portabilidade, pedido 7",
        "json",
    )
    assert len(app.stream(subject.lead)) == stored[subject.lead] + 1
    (row,) = access_rows(api, subject.lead)[logged:]
    assert row[5:] == ("GET /v1/privacy/subjects/{lead_id}/export", "Portabilidade, pedido 7")


def test_the_html_export_is_a_portuguese_transcript_with_the_lead_on_top(
    api: Api, subject: Subject
) -> None:
    answer = export(api, subject, subject.lead, format="html")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    page = answer.text
    assert '<html lang="pt-BR">' in page
    assert "Dados do titular" in page
    assert "Joana &lt;Prado&gt;" in page  # escaped: the name is the lead's text
    assert page.index("Dados do titular") < page.index(TEXT) < page.index(ANSWER)
    assert "Cliente" in page
    assert "Assistente virtual" in page
    assert "WhatsApp (Evolution API)" in page
    recorded = api.store.app.stream(subject.lead)[-1]
    assert (type(recorded).__name__, recorded.rendering) == ("SubjectDataExported", "html")


def test_exports_of_unknown_or_other_tenants_subjects_append_nothing(
    api: Api, subject: Subject
) -> None:
    before_events = api.event_count()
    before_log = len(access_rows(api, subject.other_lead))
    for lead, query, status in (
        (subject.other_lead, {}, 404),
        (uuid4(), {}, 404),
        (subject.lead, {"format": "pdf"}, 422),
        (subject.lead, {"purpose": "x" * 201}, 422),
    ):
        answer = export(api, subject, lead, **query)
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == PROBLEM
    assert api.event_count() == before_events
    assert len(access_rows(api, subject.other_lead)) == before_log


def test_reading_a_conversation_is_in_the_access_log(api: Api, subject: Subject) -> None:
    before = len(access_rows(api, subject.lead))
    headers = {**subject.crew.headers(Role.ATTENDANT), "X-Purpose": "Atendimento"}
    answer = httpx.get(f"{api.url}/v1/conversations/{subject.cloud}", headers=headers)
    assert answer.status_code == 200, answer.text
    (row,) = access_rows(api, subject.lead)[before:]
    assert row == (
        subject.crew.tenant_id,
        str(subject.crew.user_ids[Role.ATTENDANT]),
        "attendant",
        subject.lead,
        str(subject.cloud),
        "GET /v1/conversations/{conversation_id}",
        "Atendimento",
    )


def test_the_access_log_route_pages_and_filters_the_tenants_reads(
    api: Api, subject: Subject
) -> None:
    start = datetime.now(UTC)
    for n in range(3):
        lookup(api, subject, {"lead_id": str(subject.lead), "purpose": f"Página {n}"})
    theirs = subject.other_crew.headers(Role.AUDITOR)
    httpx.get(
        f"{api.url}/v1/privacy/subjects",
        params={"lead_id": str(subject.other_lead)},
        headers=theirs,
    )
    url = f"{api.url}/v1/privacy/access-log"
    seen: list[dict[str, Any]] = []
    query: dict[str, Any] = {"lead_id": str(subject.lead), "from": start.isoformat(), "limit": 2}
    while True:
        page = httpx.get(url, params=query, headers=auditor(subject))
        assert page.status_code == 200, page.text
        seen += page.json()["items"]
        if page.json()["next_cursor"] is None:
            break
        query["cursor"] = page.json()["next_cursor"]
    assert [e["purpose"] for e in seen] == ["Página 2", "Página 1", "Página 0"]  # newest first
    assert {e["lead_id"] for e in seen} == {str(subject.lead)}
    assert {e["route"] for e in seen} == {"GET /v1/privacy/subjects"}
    # Another tenant's reads are not in this tenant's log, even without a filter.
    everything = httpx.get(url, params={"from": start.isoformat()}, headers=auditor(subject))
    assert str(subject.other_lead) not in everything.text
    before = httpx.get(
        url, params={"to": (start - timedelta(days=365)).isoformat()}, headers=auditor(subject)
    )
    assert before.json() == {"items": [], "next_cursor": None}
    bad = httpx.get(url, params={"from": "yesterday"}, headers=auditor(subject))
    assert (bad.status_code, bad.headers["content-type"]) == (422, PROBLEM)


def test_a_read_whose_access_log_entry_cannot_be_written_fails_closed(
    api: Api, subject: Subject
) -> None:
    settings = api.settings
    with psycopg.connect(conninfo(settings.database_url or "", settings.database_schema)) as c:
        # Someone holds the table (a maintenance job): the entry waits out the store wait.
        c.execute(f"LOCK TABLE {ACCESS_LOG_TABLE} IN ACCESS EXCLUSIVE MODE")
        answer = httpx.get(
            f"{api.url}/v1/conversations/{subject.cloud}",
            headers=subject.crew.headers(Role.ATTENDANT),
            timeout=60,
        )
        c.rollback()
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert "Retry-After" in answer.headers
    assert TEXT not in answer.text
    again = httpx.get(
        f"{api.url}/v1/conversations/{subject.cloud}", headers=subject.crew.headers(Role.ATTENDANT)
    )
    assert again.status_code == 200

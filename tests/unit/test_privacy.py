"""The pure parts of data subject requests: naming a subject, opening its records, the
export record on the lead, and the Portuguese transcript."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import orjson
import pytest
from tests.fakes import InMemoryCipher
from tests.unit.test_envelope import history

from urbana.adapters.http.audit import purpose_of
from urbana.adapters.transcript import TranscriptRenderer, export_json
from urbana.application.envelope import envelope_from_stored
from urbana.application.privacy import (
    ConversationFacts,
    StoredRecord,
    Subject,
    SubjectExport,
    SubjectQuery,
    message_ref_ids,
    open_records,
)
from urbana.application.store import OrjsonTranscoder, PiiMapper, open_sealed
from urbana.domain.contacts import lead_id_for, message_ref_id_for
from urbana.domain.conversation import Conversation
from urbana.domain.errors import InvalidInput
from urbana.domain.lead import MAX_PURPOSE, Lead
from urbana.domain.pii import ERASED

TENANT = UUID("00000000-0000-4000-8000-000000000001")


def test_a_subject_is_named_by_exactly_one_of_phone_lead_or_contact() -> None:
    with pytest.raises(InvalidInput):
        SubjectQuery()
    with pytest.raises(InvalidInput):
        SubjectQuery(phone="5511987654321", lead_id=uuid4())
    with pytest.raises(InvalidInput):
        SubjectQuery(phone="not a phone").candidates(TENANT)
    with pytest.raises(InvalidInput):
        SubjectQuery(contact_id="@lid").candidates(TENANT)


@pytest.mark.parametrize(
    "form", ["5511987654321", "551187654321", "+55 11 98765-4321", "+55 (11) 8765-4321"]
)
def test_every_form_of_a_brazilian_mobile_names_the_lead_the_ingest_made(form: str) -> None:
    leads, conversations = SubjectQuery(phone=form).candidates(TENANT)
    assert leads == [lead_id_for(TENANT, "phone:5511987654321")]
    assert conversations == []


def test_a_contact_id_names_its_lead_and_its_conversation_on_every_channel() -> None:
    leads, conversations = SubjectQuery(contact_id="12345@lid").candidates(TENANT)
    assert leads == [lead_id_for(TENANT, "lid:12345")]
    assert conversations == [
        Conversation.create_id(TENANT, channel, "12345@lid")
        for channel in ("cloud", "evolution", "zapi", "console")
    ]


def records(cipher: InMemoryCipher, *aggregates: Lead | Conversation) -> list[StoredRecord]:
    mapper = PiiMapper(OrjsonTranscoder(), cipher)
    stored = [mapper.to_stored_event(e) for a in aggregates for e in a.collect_events()]
    return [
        StoredRecord(i + 1, str(s.originator_id), s.originator_version, s.topic, s.state)
        for i, s in enumerate(stored)
    ]


def lead_and_talk() -> tuple[Lead, Conversation]:
    lead = Lead.create(TENANT, "phone:5511987654321", phone="5511987654321", name="Joana")
    talk = Conversation.start(TENANT, "cloud", "5511987654321", lead.id)
    talk.receive(
        provider_message_id="wamid.1",
        kind="text",
        sent_at=datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
        text="<b>Olá</b>",
        contact_name="Joana",
    )
    return lead, talk


def test_records_open_with_the_subjects_key_and_read_erased_once_it_is_gone() -> None:
    cipher = InMemoryCipher()
    lead, talk = lead_and_talk()
    stored = records(cipher, lead, talk)
    assert b"Joana" not in b"".join(r.state for r in stored)

    opened = open_records(cipher, stored)
    assert [(e.aggregate, e.type, e.stream_version) for e in opened] == [
        ("Lead", "LeadCreated", 1),
        ("Conversation", "ConversationStarted", 1),
        ("Conversation", "MessageReceived", 2),
    ]
    assert (opened[0].data["name"], opened[2].data["text"]) == ("Joana", "<b>Olá</b>")
    assert opened[2].data["tenant_id"] == str(TENANT)

    cipher.shred(lead.id)
    erased = open_records(cipher, stored)
    assert (erased[0].data["phone"], erased[2].data["text"]) == (ERASED, ERASED)
    assert erased[2].data["provider_message_id"] == "wamid.1"  # not personal: kept


def test_the_message_refs_of_a_conversation_come_from_its_provider_ids() -> None:
    cipher = InMemoryCipher()
    lead, talk = lead_and_talk()
    opened = open_records(cipher, records(cipher, lead, talk))
    assert message_ref_ids(TENANT, "cloud", opened) == {
        message_ref_id_for(TENANT, "cloud", "wamid.1")
    }


def test_an_export_is_recorded_on_the_lead_without_personal_data() -> None:
    lead, _ = lead_and_talk()
    lead.collect_events()
    lead.record_export(by="user-1", role="auditor", purpose="Ticket 9", rendering="html")
    (recorded,) = lead.collect_events()
    assert type(recorded).__name__ == "SubjectDataExported"
    fields = vars(recorded)
    assert (fields["by"], fields["purpose"], fields["rendering"]) == ("user-1", "Ticket 9", "html")
    assert not {"phone", "name", "key"} & set(fields)
    with pytest.raises(InvalidInput):
        lead.record_export(
            by="u", role="auditor", purpose="x" * (MAX_PURPOSE + 1), rendering="json"
        )
    with pytest.raises(InvalidInput):
        lead.record_export(by="", role="auditor", purpose=None, rendering="json")


def an_export() -> SubjectExport:
    cipher = InMemoryCipher()
    lead, talk = lead_and_talk()
    talk.record_ai_reply(
        outbound_id="o1", reply_to_seq=1, text="Como posso ajudar?", intent="oi", confidence=0.9
    )
    events = open_records(cipher, records(cipher, lead, talk))
    subject = Subject(
        tenant_id=TENANT,
        lead_id=lead.id,
        key="phone:5511987654321",
        phone="5511987654321",
        name="Joana",
        score=0,
        stage="new",
        created_at=events[0].occurred_at,
        conversations=[
            ConversationFacts(
                id=talk.id,
                channel="cloud",
                contact="5511987654321",
                started_at=events[1].occurred_at,
                last_event_at=events[-1].occurred_at,
                events=len(events) - 1,
                messages=2,
            )
        ],
        message_refs=[],
        erased=False,
    )
    return SubjectExport(
        subject=subject,
        events=events,
        exported_at=datetime(2026, 12, 2, 3, 0, tzinfo=UTC),
        exported_by="user-1",
        role="auditor",
        purpose="Ticket <9>",
        rendering="html",
    )


def test_the_transcript_is_portuguese_escaped_and_in_order() -> None:
    page = TranscriptRenderer().html(an_export())
    assert '<html lang="pt-BR">' in page
    assert "Exportação dos dados do titular" in page
    assert "Joana" in page
    assert "5511987654321" in page
    assert "&lt;b&gt;Olá&lt;/b&gt;" in page
    assert "<b>Olá</b>" not in page
    assert "Ticket &lt;9&gt;" in page
    assert page.index("Cliente") < page.index("Assistente virtual")
    assert page.index("&lt;b&gt;Olá") < page.index("Como posso ajudar?")
    assert "01/12/2026 12:00:00 UTC" in page  # when the lead wrote
    assert "WhatsApp (Cloud API)" in page


def test_the_json_export_holds_every_event_with_type_time_stream_and_version() -> None:
    document = orjson.loads(export_json(an_export()))
    assert document["export_version"] == 1
    assert document["purpose"] == "Ticket <9>"
    assert [e["type"] for e in document["events"]] == [
        "LeadCreated",
        "ConversationStarted",
        "MessageReceived",
        "AIReplyGenerated",
        "OutboundMessageQueued",
    ]
    first = document["events"][0]
    assert set(first) == {
        "position",
        "stream_id",
        "aggregate",
        "type",
        "schema_version",
        "stream_version",
        "occurred_at",
        "data",
    }


def test_the_purpose_is_the_query_parameter_else_the_header() -> None:
    assert purpose_of("Ticket 1", "Ticket 2") == "Ticket 1"
    assert purpose_of(None, "Ticket 2") == "Ticket 2"
    assert purpose_of("  ", None) is None
    assert purpose_of(None, None) is None


def test_opened_records_read_as_the_public_envelope_with_the_personal_fields_added() -> None:
    cipher = InMemoryCipher()
    mapper = PiiMapper(OrjsonTranscoder(), cipher)
    stored = [mapper.to_stored_event(e) for e in history()]  # every event type
    rows = [
        StoredRecord(i, str(s.originator_id), s.originator_version, s.topic, s.state)
        for i, s in enumerate(stored, 1)
    ]
    for row, opened in zip(rows, open_records(cipher, rows), strict=True):
        envelope = envelope_from_stored(
            row.position, str(row.stream_id), row.version, row.topic, row.state
        )
        expected = dict(envelope.data)
        if envelope.encrypted is not None:
            sealed = envelope.encrypted
            personal = open_sealed(
                cipher, {"k": sealed["key_id"], "f": sealed["fields"], "c": sealed["ciphertext"]}
            )
            expected |= orjson.loads(orjson.dumps(personal))
        assert opened.data == expected, envelope.type
        assert (opened.type, opened.occurred_at) == (envelope.type, envelope.occurred_at)
        assert opened.schema_version == envelope.schema_version

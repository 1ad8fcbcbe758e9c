"""Replay's fast decoder builds exactly the public envelopes `envelope_from_stored` builds."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from uuid import UUID, uuid4

from urbana.application.envelope import envelope_from_stored, event_names
from urbana.application.store import OrjsonTranscoder, PiiMapper
from urbana.domain.conversation import Conversation
from urbana.domain.lead import Lead
from urbana.domain.message_ref import MessageRef
from urbana.domain.tenant import Tenant
from urbana.projections.replay import decode


class ClearCipher:
    """A SubjectCipher that does not encrypt (the decoder never opens anything)."""

    def seal(self, subject_id: UUID, plaintext: bytes) -> bytes:
        return plaintext

    def open(self, subject_id: UUID, sealed: bytes) -> bytes | None:
        return sealed

    def prepare(self, subject_ids: Iterable[UUID]) -> None:
        return None

    def shred(self, subject_id: UUID) -> None:
        return None


def domain_events() -> list[object]:
    tenant = Tenant.register("Loja")
    lead = Lead.create(tenant.id, "phone:5511999990000", phone="5511999990000", name="Ana")
    conv = Conversation.start(tenant.id, "cloud", "5511999990000", lead.id)
    now = datetime.now(UTC)
    conv.receive(provider_message_id="w1", kind="text", sent_at=now, text="oi", extra={"a": [1]})
    conv.record_ai_reply(
        outbound_id="o1",
        reply_to_seq=1,
        text="olá",
        intent="x",
        confidence=0.5,
        usage={"tokens_in": 3, "cost_usd": 0.1},
    )
    conv.mark_sent(outbound_id="o1", provider_message_id="wo1")
    conv.mark_read(outbound_id="o1", at=now)
    conv.request_handoff(reason="r", summary="s")
    lead.score_by(30, reason="x")
    ref = MessageRef(tenant.id, "cloud", "w1", conv.id, None)
    return [
        *tenant.collect_events(),
        *lead.collect_events(),
        *conv.collect_events(),
        *ref.collect_events(),
    ]


def test_decode_equals_envelope_from_stored() -> None:
    mapper = PiiMapper(transcoder=OrjsonTranscoder(), cipher=ClearCipher())
    events = domain_events()
    assert len(events) > 10
    for position, event in enumerate(events, start=1):
        stored = mapper.to_stored_event(event)  # type: ignore[arg-type]
        tenant = str(uuid4()) if position % 2 else None
        expected = envelope_from_stored(
            position=position,
            stream_id=stored.originator_id,
            stream_version=stored.originator_version,
            topic=stored.topic,
            state=stored.state,
            tenant_id=tenant,
        )
        aggregate, name = event_names(stored.topic)
        got = decode(
            position,
            str(stored.originator_id),
            stored.originator_version,
            aggregate,
            name,
            stored.state,
            tenant,
        )
        assert got == expected
        without_id = decode(
            position,
            str(stored.originator_id),
            stored.originator_version,
            aggregate,
            name,
            stored.state,
            tenant,
            event_id=False,
        )
        assert without_id.event_id == ""
        assert without_id.data == expected.data

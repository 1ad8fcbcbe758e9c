"""Every `personal(...)` declaration names fields its events really carry.

The mapper encrypts exactly the declared fields; a renamed field or event would
silently go to the store in clear, so each declaration is checked against events
produced through the aggregates themselves.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from urbana.domain.conversation import Conversation
from urbana.domain.lead import Lead
from urbana.domain.pii import _SPECS, pii_spec
from urbana.domain.tenant import ChannelRoute, Tenant
from urbana.domain.user import Role, User, UserEmail


def produced_events() -> dict[str, object]:
    """One event of every type the aggregates can record, by qualified name."""
    now = datetime.now(UTC)
    conv = Conversation.start(
        tenant_id=uuid4(), channel="cloud", contact="5511988887777", lead_id=uuid4()
    )
    conv.receive(
        provider_message_id="wamid.1",
        kind="image",
        sent_at=now,
        text="foto da sala",
        contact_name="Maria",
        media_url="https://media/1",
        media_mime="image/jpeg",
        extra={"location": "-23.5,-46.6"},
        contact="123456789@lid",
    )
    conv.record_ai_reply(
        outbound_id="ai-1", reply_to_seq=1, text="Linda sala!", intent="chat", confidence=0.9
    )
    conv.receive(provider_message_id="wamid.2", kind="text", sent_at=now, text="e o preço?")
    conv.reject_ai_reply(reply_to_seq=2, text="R$ 1", reason="guard: price")
    conv.request_handoff(reason="guard", summary="Maria quer saber o preço")
    conv.accept_handoff(attendant="ana")
    conv.add_note(note_id="n-1", author="ana", text="Maria prefere ligação")
    conv.return_to_ai()
    conv.close(by="ana")

    lead = Lead.create(tenant_id=uuid4(), key="phone:5511988887777", phone="5511988887777")
    lead.update_profile(name="Maria")

    tenant = Tenant.register(f"tenant-{uuid4().hex}")
    tenant.connect_channel(channel="cloud", route_key="1", public={}, secrets={"token": "t"})
    tenant.configure_telegram(chat_id="-100123", bot_token="123:abc")

    user = User.invite(
        tenant_id=tenant.id, email="ana@example.com", role=Role.ADMIN, password_hash="h"
    )
    user.change_password("h2")
    index = UserEmail(email="ana@example.com", user_id=user.id, tenant_id=tenant.id)
    route = ChannelRoute(channel="evolution", route_key="loja", tenant_id=tenant.id)
    route.change_state(state="waiting_qr", at=now, qr_code="data:image/png;base64,iVBOR")

    events = [
        *conv.collect_events(),
        *lead.collect_events(),
        *tenant.collect_events(),
        *user.collect_events(),
        *index.collect_events(),
        *route.collect_events(),
    ]
    return {type(e).__qualname__: e for e in events}


EVENTS = produced_events()


def test_every_declaration_names_an_event_the_aggregates_record() -> None:
    assert set(_SPECS) <= set(EVENTS)


@pytest.mark.parametrize("qualname", sorted(_SPECS))
def test_declared_personal_fields_exist_on_the_event(qualname: str) -> None:
    event = EVENTS[qualname]
    spec = pii_spec(type(event))
    assert spec is not None
    missing = [f for f in spec.fields if f not in vars(event)]
    assert missing == []


@pytest.mark.parametrize("qualname", sorted(_SPECS))
def test_declared_subject_is_a_uuid_on_the_event(qualname: str) -> None:
    event = EVENTS[qualname]
    spec = pii_spec(type(event))
    assert spec is not None
    assert isinstance(getattr(event, spec.subject_field), UUID)


def test_events_without_a_declaration_have_no_spec() -> None:
    assert pii_spec(type(EVENTS["Conversation.ConversationClosed"])) is None

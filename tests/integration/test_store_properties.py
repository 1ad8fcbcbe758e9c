"""Property: an aggregate loaded from the store equals the instance whose events were saved."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from urbana.adapters.postgres.store import Store, open_store
from urbana.domain.conversation import Conversation
from urbana.domain.errors import DomainError
from urbana.domain.lead import Lead

pytestmark = pytest.mark.integration

texts = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "")
steps = st.lists(
    st.one_of(
        st.tuples(st.just("receive"), texts),
        st.tuples(st.just("ai_reply"), texts),
        st.tuples(st.just("handoff"), texts),
        st.tuples(st.just("accept"), st.sampled_from(["ana", "bruno"])),
        st.tuples(st.just("attendant"), texts),
        st.tuples(st.just("return"), st.none()),
        st.tuples(st.just("close"), st.none()),
        st.tuples(st.just("assign"), st.sampled_from(["ana", "bruno"])),
        st.tuples(st.just("transfer"), st.sampled_from(["ana", "bruno", None])),
        st.tuples(st.just("note"), texts),
        st.tuples(st.just("labels"), texts),
        st.tuples(st.just("release"), st.integers(0, 30)),
        st.tuples(st.just("reopen"), st.none()),
        st.tuples(st.just("sent"), st.integers(0, 5)),
        st.tuples(st.just("delivered"), st.integers(0, 5)),
        st.tuples(st.just("read"), st.integers(0, 5)),
    ),
    max_size=25,
)


def apply(conv: Conversation, step: tuple[str, object], n: int) -> None:
    kind, arg = step
    now = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=n)
    outbound = list(conv.outbound)
    try:
        if kind == "receive":
            conv.receive(provider_message_id=f"p{n}", kind="text", sent_at=now, text=str(arg))
        elif kind == "ai_reply":
            conv.record_ai_reply(
                outbound_id=f"o{n}",
                reply_to_seq=conv.inbound_seq,
                text=str(arg),
                intent="faq",
                confidence=0.7,
                usage={"tokens": n},
            )
        elif kind == "handoff":
            conv.request_handoff(reason="explicit_request", summary=str(arg))
        elif kind == "accept":
            conv.accept_handoff(attendant=str(arg))
        elif kind == "attendant":
            conv.attendant_reply(
                now=now, outbound_id=f"o{n}", attendant=conv.assignee or "ana", text=str(arg)
            )
        elif kind == "return":
            conv.return_to_ai()
        elif kind == "close":
            conv.close(by="ana")
        elif kind == "assign":
            conv.assign(assignee=str(arg), by="sup")
        elif kind == "transfer":
            conv.transfer(
                by="sup",
                to_user=None if arg is None else str(arg),
                to_queue="q-geral" if arg is None else None,
                note_id=f"n{n}",
                note="transferido",
                as_supervisor=True,
            )
        elif kind == "note":
            conv.add_note(note_id=f"n{n}", author="ana", text=str(arg))
        elif kind == "labels":
            conv.change_labels(by="ana", add=[str(arg)[:50]])
        elif kind == "release":
            conv.release_inactive(
                now=now + timedelta(hours=1), limit=timedelta(minutes=int(str(arg)))
            )
        elif kind == "reopen":
            conv.reopen(by="sup")
        elif outbound:
            target = outbound[int(str(arg)) % len(outbound)]
            if kind == "sent":
                conv.mark_sent(outbound_id=target, provider_message_id=f"w{n}")
            elif kind == "delivered":
                conv.mark_delivered(outbound_id=target, at=now)
            else:
                conv.mark_read(outbound_id=target, at=now)
    except DomainError:
        pass


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=steps, score=st.lists(st.integers(-30, 30), max_size=6))
def test_loaded_aggregates_equal_saved_ones(
    store: Store, master_key: bytes, script: list[tuple[str, object]], score: list[int]
) -> None:
    tenant_id = uuid4()
    lead = Lead.create(
        tenant_id, f"phone:5511{uuid4().int % 10**9:09d}", phone="5511900000000", name="Ana Lúcia"
    )
    conv = Conversation.start(tenant_id, "cloud", lead.key.removeprefix("phone:"), lead.id)
    for n, step in enumerate(script):
        apply(conv, step, n)
    for delta in score:
        with contextlib.suppress(DomainError):
            lead.score_by(delta, reason="test")
    store.app.save(conv, lead)
    fresh = open_store(store.url, master_key, schema=store.schema, pool_size=1)
    try:
        assert fresh.app.repository.get(conv.id) == conv
        assert fresh.app.repository.get(lead.id) == lead
    finally:
        fresh.close()

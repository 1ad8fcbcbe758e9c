"""The outbound dispatcher on in-memory fakes of its ports: the send-time checks and
what it records around each gateway call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from tests.fakes import FakeClock, FakeSender, RecordingRateLimiter, in_memory_app
from tests.helpers import ai_reply

from urbana.application.app import ReceiveMessage, UrbanaApp, parse_callback_data
from urbana.application.channels import InboundMessage, SendFailed
from urbana.application.dispatcher import Dispatcher, DispatchPolicy
from urbana.application.gateways import gateway_config
from urbana.application.ports import Sender
from urbana.domain.contacts import message_ref_id_for
from urbana.domain.conversation import Conversation
from urbana.domain.message_ref import MessageRef
from urbana.domain.outbound import Delivery

QUICK = DispatchPolicy(
    horizon_s=2.0,
    backoff_initial_s=0.01,
    backoff_max_s=0.02,
    reconcile_wait_s=0.1,
    breaker_failures=100,
    breaker_open_s=0.05,
    breaker_max_open_s=0.1,
)
CONTACT = "5511988887777"


def queued(app: UrbanaApp, *, at: datetime | None = None, connect: bool = True) -> tuple[UUID, str]:
    """A tenant with a Cloud API number, and an AI answer queued to a lead; (conversation, id)."""
    tid, _ = app.register_tenant(f"Loja {uuid4().hex[:8]}")
    if connect:
        app.connect_channel(
            tid,
            gateway_config(
                "cloud",
                {
                    "phone_number_id": f"pnid{uuid4().hex[:8]}",
                    "app_secret": "appsecret",
                    "verify_token": "verify",
                    "access_token": "token-1",
                },
            ),
        )
    got = app.receive_message(
        ReceiveMessage(
            tid,
            "cloud",
            InboundMessage(
                provider_message_id=f"wamid.{uuid4().hex}",
                contact=CONTACT,
                phone=CONTACT,
                sent_at=at or datetime.now(UTC),
                kind="text",
                text="oi",
            ),
        )
    )
    out = ai_reply(
        app, got.conversation_id, reply_to_seq=1, text="Olá!", intent="greeting", confidence=0.9
    )
    return got.conversation_id, out


def names(app: UrbanaApp, stream: UUID) -> list[str]:
    return [type(e).__name__ for e in app.stream(stream)]


def dispatcher(app: UrbanaApp, senders: dict[str, Sender], **kw: Any) -> Dispatcher:
    return Dispatcher(app, senders, policy=QUICK, **kw)


async def test_a_queued_answer_is_sent_to_the_lead_and_recorded_with_its_provider_id() -> None:
    app = in_memory_app()
    cid, out = queued(app)
    gateway = FakeSender()

    assert await dispatcher(app, {"cloud": gateway}).dispatch(cid, out) == "sent"

    (request,) = gateway.requests
    assert (request.to, request.text) == (CONTACT, "Olá!")
    assert parse_callback_data(request.callback_data) == (cid, out)
    assert gateway.configs[0]["access_token"] == "token-1"
    conv = app.get(Conversation, cid)
    assert conv.delivery(out) is Delivery.SENT
    assert names(app, cid)[-2:] == ["OutboundSendAttempted", "OutboundMessageSent"]
    # Recorded as its keyed digest, not as the gateway answered it.
    key = app.provider_key(conv.tenant_id, "cloud", "wamid.fake.1")
    assert app.stream(cid)[-1].provider_message_id == key != "wamid.fake.1"
    ref = app.get(MessageRef, message_ref_id_for(conv.tenant_id, "cloud", key))
    assert (ref.conversation_id, ref.outbound_id) == (cid, out)


async def test_an_answer_is_cancelled_not_sent_when_a_human_took_over_meanwhile() -> None:
    app = in_memory_app()
    cid, out = queued(app)
    app.accept_handoff(cid, attendant="ana")
    gateway = FakeSender()
    assert await dispatcher(app, {"cloud": gateway}).dispatch(cid, out) == "cancelled"
    assert gateway.requests == []
    cancelled = app.stream(cid)[-1]
    assert (type(cancelled).__name__, cancelled.reason) == (
        "OutboundMessageCancelled",
        "human_took_over",
    )


async def test_an_answer_queued_before_its_subject_was_erased_is_cancelled_not_sent() -> None:
    app = in_memory_app()
    cid, out = queued(app)
    lead_id = app.get(Conversation, cid).lead_id
    app.cipher.shred(lead_id)
    app.record_erasure(lead_id, "subject_request", [cid])
    gateway = FakeSender()

    assert await dispatcher(app, {"cloud": gateway}).dispatch(cid, out) == "cancelled"

    assert gateway.requests == []
    cancelled = app.stream(cid)[-1]
    assert (type(cancelled).__name__, cancelled.reason) == (
        "OutboundMessageCancelled",
        "subject_erased",
    )


async def test_outside_the_24_hour_window_the_message_fails_without_a_call() -> None:
    app = in_memory_app()
    wrote = datetime.now(UTC)
    cid, out = queued(app, at=wrote)
    clock = FakeClock(wrote + timedelta(hours=24, seconds=1))
    gateway = FakeSender()
    assert await dispatcher(app, {"cloud": gateway}, clock=clock).dispatch(cid, out) == "failed"
    assert gateway.requests == []
    assert app.get(Conversation, cid).message(out).failure is not None
    assert app.stream(cid)[-1].reason == "outside_window"


async def test_a_permanent_refusal_fails_at_once_with_the_gateway_reason_and_code() -> None:
    app = in_memory_app()
    cid, out = queued(app)
    refused = SendFailed(False, "cloud: (#131026) undeliverable", status=400, code="131026")
    gateway = FakeSender(refused)
    assert await dispatcher(app, {"cloud": gateway}).dispatch(cid, out) == "failed"
    assert len(gateway.requests) == 1
    failure = app.get(Conversation, cid).message(out).failure
    assert failure is not None
    assert (failure.reason, failure.code) == ("cloud: (#131026) undeliverable", "131026")


async def test_a_transient_fault_delays_the_message_it_never_drops_it() -> None:
    app = in_memory_app()
    cid, out = queued(app)
    gateway = FakeSender(SendFailed(True, "cloud: HTTP 503", status=503))
    assert await dispatcher(app, {"cloud": gateway}).dispatch(cid, out) == "sent"
    assert len(gateway.requests) == 2
    message = app.get(Conversation, cid).message(out)
    assert (message.delivery, message.attempts) == (Delivery.SENT, 0)  # settled: attempts go
    assert names(app, cid).count("OutboundSendAttempted") == 2


async def test_the_tenant_rate_limit_is_taken_before_each_call() -> None:
    app = in_memory_app()
    cid, out = queued(app)
    tenant_id = app.get(Conversation, cid).tenant_id
    app.change_settings(tenant_id, rate_limit_per_s=7)
    limiter = RecordingRateLimiter()
    sent = await dispatcher(app, {"cloud": FakeSender()}, rate_limiter=limiter).dispatch(cid, out)
    assert sent == "sent"
    assert limiter.calls == [(tenant_id, 7)]


async def test_a_tenant_set_to_the_console_replies_there_not_through_its_gateway() -> None:
    app = in_memory_app()
    cid, out = queued(app, connect=False)
    app.change_settings(app.get(Conversation, cid).tenant_id, outbound="console")
    cloud, console = FakeSender(), FakeSender(reconciles=False)
    done = await dispatcher(app, {"cloud": cloud, "console": console}).dispatch(cid, out)
    assert done == "sent"
    assert (len(cloud.requests), len(console.requests)) == (0, 1)


async def test_a_channel_the_tenant_never_connected_fails_the_message() -> None:
    app = in_memory_app()
    cid, out = queued(app, connect=False)
    assert await dispatcher(app, {"cloud": FakeSender()}).dispatch(cid, out) == "failed"
    assert app.stream(cid)[-1].reason == "channel_not_connected:cloud"


async def test_a_message_no_longer_queued_is_skipped() -> None:
    app = in_memory_app()
    cid, out = queued(app)
    gateway = FakeSender()
    assert await dispatcher(app, {"cloud": gateway}).dispatch(cid, out) == "sent"
    assert await dispatcher(app, {"cloud": gateway}).dispatch(cid, out) == "skipped"
    assert len(gateway.requests) == 1

"""The dispatcher's retry rules on the real store, with a scripted gateway behind the
`Sender` port: horizon, permanent refusals, unknown outcomes with and without
reconciliation."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from tests.helpers import ai_reply

from urbana.adapters.postgres.store import Store
from urbana.application.app import ReceiveMessage, RecordStatus
from urbana.application.channels import (
    DeliveryStatus,
    InboundMessage,
    OutboundRequest,
    SendFailed,
    StatusUpdate,
)
from urbana.application.dispatcher import Dispatcher, DispatchPolicy
from urbana.application.gateways import gateway_config
from urbana.domain.conversation import Conversation
from urbana.domain.outbound import Delivery

pytestmark = pytest.mark.integration

QUICK = DispatchPolicy(
    horizon_s=1.5,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    reconcile_wait_s=1.0,
    breaker_failures=100,
    breaker_open_s=0.1,
    breaker_max_open_s=0.2,
)


class ScriptedGateway:
    """Raises the scripted failures in turn, then accepts."""

    def __init__(self, failures: list[SendFailed], *, reconciles: bool, forever: bool = False):
        self.reconciles = reconciles
        self._failures = failures
        self._forever = forever
        self.calls: list[OutboundRequest] = []
        self.called = asyncio.Event()

    async def send(self, config: Mapping[str, str], request: OutboundRequest) -> str:
        self.calls.append(request)
        self.called.set()
        if self._forever:
            raise self._failures[0]
        if self._failures:
            raise self._failures.pop(0)
        return f"wamid.{len(self.calls)}"


def _queued(store: Store) -> tuple[UUID, UUID, str]:
    app = store.app
    tid, _ = app.register_tenant(f"Dispatch {uuid4().hex[:8]}")
    app.connect_channel(
        tid,
        gateway_config(
            "cloud",
            {
                "phone_number_id": f"pnid{uuid4().hex[:8]}",
                "app_secret": f"appsecret{uuid4().hex}",
                "verify_token": f"verify{uuid4().hex}",
                "access_token": f"token{uuid4().hex}",
            },
        ),
    )
    phone = f"55119{uuid4().int % 10**8:08d}"
    got = app.receive_message(
        ReceiveMessage(
            tid,
            "cloud",
            InboundMessage(
                provider_message_id=f"wamid.{uuid4().hex}",
                contact=phone,
                phone=phone,
                sent_at=datetime.now(UTC),
                kind="text",
                text="oi",
            ),
        )
    )
    out = ai_reply(
        app, got.conversation_id, reply_to_seq=1, text="Olá!", intent="greeting", confidence=0.9
    )
    return tid, got.conversation_id, out


def _events(store: Store, cid: UUID, name: str) -> list[Any]:
    return [e for e in store.app.stream(cid) if type(e).__name__ == name]


async def test_transient_faults_until_the_horizon_end_in_failed_with_the_reason(
    store: Store,
) -> None:
    _, cid, out = _queued(store)
    gateway = ScriptedGateway(
        [SendFailed(True, "cloud: HTTP 500: down", status=500)], reconciles=True, forever=True
    )
    result = await Dispatcher(store.app, {"cloud": gateway}, policy=QUICK).dispatch(cid, out)
    assert result == "failed"
    assert len(gateway.calls) >= 3
    (failed,) = _events(store, cid, "OutboundMessageFailed")
    assert failed.reason.startswith(f"gave up after {len(gateway.calls)} attempt(s)")
    assert failed.reason.endswith("cloud: HTTP 500: down")
    assert failed.code == "500"
    assert len(_events(store, cid, "OutboundSendAttempted")) == len(gateway.calls)


async def test_a_permanent_refusal_fails_at_once_with_the_gateway_code(store: Store) -> None:
    _, cid, out = _queued(store)
    gateway = ScriptedGateway(
        [SendFailed(False, "cloud: HTTP 400: not allowed", status=400, code="131030")],
        reconciles=True,
    )
    result = await Dispatcher(store.app, {"cloud": gateway}, policy=QUICK).dispatch(cid, out)
    assert (result, len(gateway.calls)) == ("failed", 1)
    (failed,) = _events(store, cid, "OutboundMessageFailed")
    assert (failed.reason, failed.code) == ("cloud: HTTP 400: not allowed", "131030")


async def test_throttling_is_retried_until_the_gateway_takes_it(store: Store) -> None:
    _, cid, out = _queued(store)
    gateway = ScriptedGateway(
        [
            SendFailed(True, "cloud: HTTP 429", status=429, code="130429", retry_after=0.1),
            SendFailed(True, "cloud: unreachable"),
        ],
        reconciles=True,
    )
    result = await Dispatcher(store.app, {"cloud": gateway}, policy=QUICK).dispatch(cid, out)
    assert (result, len(gateway.calls)) == ("sent", 3)
    assert store.app.get(Conversation, cid).delivery(out) is Delivery.SENT
    assert {c.callback_data for c in gateway.calls} == {f"{cid}:{out}"}


async def test_an_unknown_outcome_waits_for_the_status_instead_of_sending_again(
    store: Store,
) -> None:
    tid, cid, out = _queued(store)
    gateway = ScriptedGateway(
        [SendFailed(True, "cloud: request timed out", outcome_unknown=True)], reconciles=True
    )
    dispatching = asyncio.create_task(
        Dispatcher(store.app, {"cloud": gateway}, policy=QUICK).dispatch(cid, out)
    )
    await asyncio.wait_for(gateway.called.wait(), timeout=10)
    # Meta's status webhook for the message it did take, echoing our callback data.
    status = StatusUpdate(
        "wamid.TAKEN", DeliveryStatus.SENT, datetime.now(UTC), callback_data=f"{cid}:{out}"
    )
    await asyncio.to_thread(store.app.record_statuses, [RecordStatus(tid, "cloud", status)])
    assert await asyncio.wait_for(dispatching, timeout=10) == "reconciled"
    assert len(gateway.calls) == 1
    (sent,) = _events(store, cid, "OutboundMessageSent")
    assert sent.provider_message_id == store.app.provider_key(tid, "cloud", "wamid.TAKEN")


async def test_an_unknown_outcome_is_sent_again_after_the_wait_when_nothing_confirms_it(
    store: Store,
) -> None:
    _, cid, out = _queued(store)
    gateway = ScriptedGateway(
        [SendFailed(True, "cloud: request timed out", outcome_unknown=True)], reconciles=True
    )
    result = await Dispatcher(store.app, {"cloud": gateway}, policy=QUICK).dispatch(cid, out)
    assert (result, len(gateway.calls)) == ("sent", 2)
    attempts = _events(store, cid, "OutboundSendAttempted")
    # Not before the reconciliation wait had passed since the first attempt.
    assert (attempts[1].at - attempts[0].at).total_seconds() >= QUICK.reconcile_wait_s


async def test_a_gateway_that_echoes_nothing_is_sent_again_at_once(store: Store) -> None:
    _, cid, out = _queued(store)
    gateway = ScriptedGateway(
        [SendFailed(True, "evolution: request timed out", outcome_unknown=True)],
        reconciles=False,
    )
    result = await Dispatcher(store.app, {"cloud": gateway}, policy=QUICK).dispatch(cid, out)
    attempts = _events(store, cid, "OutboundSendAttempted")
    assert (result, len(gateway.calls)) == ("sent", 2)
    assert (attempts[1].at - attempts[0].at).total_seconds() < QUICK.reconcile_wait_s


async def test_a_restarted_dispatcher_waits_for_an_attempt_it_did_not_make(
    store: Store,
) -> None:
    _, cid, out = _queued(store)
    # A dispatcher recorded an attempt and died before learning how it went.
    first = await asyncio.to_thread(store.app.record_send_attempt, cid, out, datetime.now(UTC))
    gateway = ScriptedGateway([], reconciles=False)
    result = await Dispatcher(store.app, {"cloud": gateway}, policy=QUICK).dispatch(cid, out)
    attempts = _events(store, cid, "OutboundSendAttempted")
    assert (first, result, len(gateway.calls)) == (1, "sent", 1)
    assert (attempts[1].at - attempts[0].at).total_seconds() >= QUICK.reconcile_wait_s

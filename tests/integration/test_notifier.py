"""The handoff notifier on the real store and broker, against a local fake of the
Telegram Bot API: one notice per handoff under redelivery, Telegram down then up, and
one tenant's outage never holding another's notices."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from uuid import UUID, uuid4

import httpx
import pytest
from tests.fake_telegram import FakeTelegram, fake_telegram

from urbana.adapters.kafka.relay import Relay
from urbana.adapters.kafka.role_workers import notifier_worker
from urbana.adapters.kafka.workers import EventWorker, Subscription
from urbana.adapters.notifier import HandoffNotifier, NotificationBusy
from urbana.adapters.postgres.notifications import PgNotificationLedger
from urbana.adapters.postgres.store import Store
from urbana.adapters.telegram import TelegramBot
from urbana.application.notifications import Claim
from urbana.domain.conversation import Conversation
from urbana.domain.lead import Lead

pytestmark = pytest.mark.integration

PANEL = "https://painel.example.com/panel"
GUARD_S = 60.0  # only against a hang


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with fake_telegram() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def notifier_for(store: Store, telegram: FakeTelegram, http: httpx.AsyncClient) -> HandoffNotifier:
    return HandoffNotifier(
        store.app,
        PgNotificationLedger(store.pool, store.schema),
        TelegramBot(http, base_url=telegram.url, timeout=5.0),
        panel_url=PANEL,
        backoff_start_s=0.01,
        backoff_cap_s=0.05,
    )


def tenant_with_telegram(store: Store, token: str | None) -> UUID:
    tenant_id, _ = store.app.register_tenant(f"Loja {uuid4().hex[:8]}")
    if token is not None:
        store.app.configure_telegram(tenant_id, chat_id="-100555", bot_token=token)
    return tenant_id


def handoff(store: Store, tenant_id: UUID, name: str = "Maria Souza") -> tuple[UUID, int]:
    """A lead writes, then asks for a person: (conversation id, the handoff's version)."""
    phone = f"5511{uuid4().int % 10**9:09d}"
    lead = Lead.create(tenant_id, f"phone:{phone}", phone=phone, name=name)
    conv = Conversation.start(tenant_id, "cloud", phone, lead.id)
    conv.receive(
        provider_message_id=f"wamid.{uuid4().hex}",
        kind="text",
        sent_at=datetime.now(UTC),
        text="quero falar com um atendente",
    )
    conv.request_handoff(
        reason="explicit_request", summary="Cliente quer negociar o preço do plano anual"
    )
    store.app.save(lead, conv)
    return conv.id, conv.version


async def test_a_handoff_is_notified_once_with_the_lead_reason_summary_and_a_button(
    store: Store, telegram: FakeTelegram, http: httpx.AsyncClient
) -> None:
    tenant_id = tenant_with_telegram(store, "111:aaa")
    conv_id, version = handoff(store, tenant_id)
    notifier = notifier_for(store, telegram, http)

    # Delivered three times, two of them at once.
    outcomes = await asyncio.gather(
        notifier.handoff_requested(tenant_id, conv_id, version),
        notifier.handoff_requested(tenant_id, conv_id, version),
        return_exceptions=True,
    )
    again = await notifier.handoff_requested(tenant_id, conv_id, version)

    sent = telegram.to("111:aaa")
    assert len(sent) == 1
    assert again == "duplicate"
    # The one delivered alongside found the notice held (the worker would retry it) or done.
    assert outcomes.count("sent") == 1
    other = next(o for o in outcomes if o != "sent")
    assert other == "duplicate" or isinstance(other, NotificationBusy)
    message = sent[0]
    assert message["chat"]["id"] == "-100555"
    assert "Cliente: Maria Souza" in message["text"]
    assert "Motivo: o cliente pediu para falar com uma pessoa" in message["text"]
    assert "Resumo: Cliente quer negociar o preço do plano anual" in message["text"]
    assert message["reply_markup"] == {
        "inline_keyboard": [[{"text": "Abrir conversa", "url": f"{PANEL}/conversations/{conv_id}"}]]
    }
    ledger = PgNotificationLedger(store.pool, store.schema)
    row = await ledger.row(f"handoff:{conv_id}:{version}")
    assert row == ("sent", 1, str(message["message_id"]))


async def test_telegram_down_then_up_is_retried_until_sent_once(
    store: Store, telegram: FakeTelegram, http: httpx.AsyncClient
) -> None:
    tenant_id = tenant_with_telegram(store, "222:bbb")
    conv_id, version = handoff(store, tenant_id)
    notifier = notifier_for(store, telegram, http)
    telegram.set_down("222:bbb", 502)
    task = asyncio.create_task(notifier.handoff_requested(tenant_id, conv_id, version))
    await telegram.until(lambda t: t.attempts.get("222:bbb", 0) >= 3)
    telegram.set_down("222:bbb", 429)  # throttled for a while, too
    await telegram.until(lambda t: t.attempts.get("222:bbb", 0) >= 4)
    assert telegram.to("222:bbb") == []
    telegram.set_down("222:bbb", None)
    async with asyncio.timeout(GUARD_S):
        outcome = await task
    assert outcome == "sent"
    assert len(telegram.to("222:bbb")) == 1
    assert notifier.failed_attempts >= 4
    row = await PgNotificationLedger(store.pool, store.schema).row(f"handoff:{conv_id}:{version}")
    assert row is not None
    assert row[0] == "sent"
    assert row[1] == telegram.attempts["222:bbb"]


async def test_a_refused_notice_is_not_retried_nor_sent_again(
    store: Store, telegram: FakeTelegram, http: httpx.AsyncClient
) -> None:
    tenant_id = tenant_with_telegram(store, "333:ccc")
    telegram.refuse["333:ccc"] = "Bad Request: chat not found"
    conv_id, version = handoff(store, tenant_id)
    notifier = notifier_for(store, telegram, http)
    assert await notifier.handoff_requested(tenant_id, conv_id, version) == "refused"
    assert await notifier.handoff_requested(tenant_id, conv_id, version) == "duplicate"
    assert telegram.attempts["333:ccc"] == 1
    row = await PgNotificationLedger(store.pool, store.schema).row(f"handoff:{conv_id}:{version}")
    assert row == ("refused", 1, "telegram 400: Bad Request: chat not found")


async def test_a_notifier_that_died_between_attempts_is_taken_over_but_not_one_mid_request(
    store: Store, telegram: FakeTelegram, http: httpx.AsyncClient
) -> None:
    tenant_id = tenant_with_telegram(store, "444:ddd")
    ledger = PgNotificationLedger(store.pool, store.schema)
    notifier = notifier_for(store, telegram, http)
    waiting, version_w = handoff(store, tenant_id, "Ana")
    in_flight, version_f = handoff(store, tenant_id, "Bia")
    dead = uuid4()
    # Both claimed by a notifier that is gone (a lease that already ran out)...
    for conv_id, version in ((waiting, version_w), (in_flight, version_f)):
        key = f"handoff:{conv_id}:{version}"
        assert await ledger.claim(key, tenant_id, dead, 0.0) is Claim.OURS
    # ...one had its request out when it died, the other was waiting to retry.
    assert await ledger.sending(f"handoff:{in_flight}:{version_f}", dead, 0.0)

    assert await notifier.handoff_requested(tenant_id, waiting, version_w) == "sent"
    assert await notifier.handoff_requested(tenant_id, in_flight, version_f) == "duplicate"
    texts = [m["text"] for m in telegram.to("444:ddd")]
    assert len(texts) == 1
    assert "Cliente: Ana" in texts[0]


async def test_a_local_panel_url_telegram_refuses_in_a_button_goes_in_the_text(
    store: Store, telegram: FakeTelegram, http: httpx.AsyncClient
) -> None:
    tenant_id = tenant_with_telegram(store, "777:eee")
    conv_id, version = handoff(store, tenant_id)
    notifier = HandoffNotifier(
        store.app,
        PgNotificationLedger(store.pool, store.schema),
        TelegramBot(http, base_url=telegram.url),
        panel_url="http://127.0.0.1:8000/panel",  # `urbana dev` without URBANA_PANEL_URL
    )
    assert await notifier.handoff_requested(tenant_id, conv_id, version) == "sent"
    sent = telegram.to("777:eee")
    assert len(sent) == 1
    assert sent[0]["reply_markup"] is None
    assert sent[0]["text"].endswith(f"\nhttp://127.0.0.1:8000/panel/conversations/{conv_id}")
    assert telegram.attempts["777:eee"] == 2  # the refused one sent nothing


async def test_a_tenant_without_telegram_is_not_notified(
    store: Store, telegram: FakeTelegram, http: httpx.AsyncClient
) -> None:
    tenant_id = tenant_with_telegram(store, None)
    conv_id, version = handoff(store, tenant_id)
    notifier = notifier_for(store, telegram, http)
    assert await notifier.handoff_requested(tenant_id, conv_id, version) == "not_configured"
    assert telegram.attempts == {}
    assert (
        await PgNotificationLedger(store.pool, store.schema).row(f"handoff:{conv_id}:{version}")
        is None
    )


# ------------------------------------------------------------------ through Kafka


@contextlib.asynccontextmanager
async def running(worker: EventWorker) -> AsyncIterator[EventWorker]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await task


async def publish(store: Store, bootstrap: str, topic: str, name: str = "relay") -> None:
    async with Relay(
        database_url=store.url, schema=store.schema, bootstrap=bootstrap, topic=topic, name=name
    ) as relay:
        await relay.run_once()


async def handled(worker: EventWorker, count: int) -> None:
    async with asyncio.timeout(GUARD_S):
        # The worker has no event for this; its metrics are what a test can watch.
        while worker.metrics.handled < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_through_kafka_a_redelivered_handoff_is_notified_once_and_an_outage_of_one_tenant_holds_no_other(  # noqa: E501
    services: object, store: Store, telegram: FakeTelegram, http: httpx.AsyncClient
) -> None:
    bootstrap: str = services.kafka  # type: ignore[attr-defined]
    topic = f"notifier-{uuid4().hex[:8]}"
    down, up = tenant_with_telegram(store, "555:down"), tenant_with_telegram(store, "666:up")
    telegram.set_down("555:down", 502)
    handoff(store, down, "Carla")  # first in the log, and its Telegram is down
    handoff(store, up, "Davi")
    worker = notifier_worker(
        notifier=notifier_for(store, telegram, http),
        subscription=Subscription(bootstrap, topic, f"g-{topic}"),
    )
    async with running(worker):
        await publish(store, bootstrap, topic)
        # The other tenant is told while the first one's notice is still being retried.
        await telegram.until(lambda t: len(t.to("666:up")) == 1)
        await telegram.until(lambda t: t.attempts.get("555:down", 0) >= 2)
        assert telegram.to("555:down") == []
        telegram.set_down("555:down", None)
        await telegram.until(lambda t: len(t.to("555:down")) == 1)
        await handled(worker, 2)

        # Redelivery: the whole log published again (a relay that lost its position).
        await publish(store, bootstrap, topic, name="relay-again")
        await handled(worker, 4)

    assert len(telegram.to("555:down")) == 1
    assert len(telegram.to("666:up")) == 1
    assert "Cliente: Carla" in telegram.to("555:down")[0]["text"]
    assert "Cliente: Davi" in telegram.to("666:up")[0]["text"]

"""The event workers of the roles that act on events: the AI responder, the outbound
dispatcher, the knowledge indexer and the handoff notifier.

Each is an `EventWorker` (`urbana.adapters.kafka.workers`: its consumer group, ordering,
offset commits and retries) around a handler that turns the envelopes it cares about
into one application call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from uuid import UUID

from urbana.adapters.kafka.workers import EventWorker, Subscription
from urbana.adapters.metrics import SENDS
from urbana.adapters.notifier import HandoffNotifier
from urbana.application.app import UrbanaApp
from urbana.application.dispatcher import Dispatcher
from urbana.application.envelope import Envelope
from urbana.application.ports import Coordination, KnowledgeStore
from urbana.application.responder import BurstTrigger, Responder, TenantSettingsCache

log = logging.getLogger(__name__)


def responder_worker(
    *,
    app: UrbanaApp,
    responder: Responder,
    coordinator: Coordination,
    default_debounce_ms: int,
    subscription: Subscription,
) -> EventWorker:
    """On MessageReceived: the responder's `BurstTrigger` (debounce, lock, answer).

    While the coordinator (Redis) is down each trigger fails and is retried (backoff
    capped at `RETRY_CAP_S`), so the responder answers within seconds of its return.
    """
    trigger = BurstTrigger(
        responder,
        coordinator,
        TenantSettingsCache(app),
        default_debounce_ms=default_debounce_ms,
    )

    async def handle(envelope: Envelope) -> None:
        if envelope.type == "SubjectErased":
            # What the responder holds of the subject (cached vectors of its bursts, its
            # decrypted aggregates) goes; see docs/architecture.md, Privacy.
            conversations = [UUID(str(c)) for c in envelope.data.get("conversation_ids") or ()]
            await responder.subject_erased(UUID(envelope.stream_id), conversations)
            return
        conversation_id = UUID(envelope.stream_id)
        tenant_id = UUID(envelope.tenant_id) if envelope.tenant_id else None
        outcome = await trigger.message_received(
            conversation_id, int(envelope.data["seq"]), tenant_id
        )
        if outcome is not None:
            log.info("responder %s: %s %s", conversation_id, outcome.action, outcome.detail)

    async def arrived(envelopes: Sequence[Envelope]) -> None:
        latest: dict[UUID, int] = {}
        for envelope in envelopes:
            if envelope.type != "MessageReceived":
                continue
            conversation_id = UUID(envelope.stream_id)
            latest[conversation_id] = max(latest.get(conversation_id, 0), int(envelope.data["seq"]))
        await trigger.messages_arrived(latest)

    return EventWorker(
        name="responder",
        subscription=subscription,
        handle=handle,
        types=["MessageReceived", "SubjectErased"],
        ordered=False,  # the per-conversation lock serialises answers
        on_arrival=arrived,
    )


def dispatcher_worker(
    *,
    dispatcher: Dispatcher,
    subscription: Subscription,
) -> EventWorker:
    """On OutboundMessageQueued (ours, not the business phone's) or OutboundMessageRetried:
    send it.

    No conversation lock is held: a send may wait minutes for a gateway to come back,
    and the attempt record (an append under the stream's optimistic concurrency) is
    what keeps two dispatchers from sending the same message at once. Tasks of one
    conversation still run in order (the worker chains them), so replies go out in the
    order they were queued.
    """

    async def handle(envelope: Envelope) -> None:
        if envelope.data.get("external_provider_id"):
            return
        conversation_id = UUID(envelope.stream_id)
        outbound_id = str(envelope.data["outbound_id"])
        result = await dispatcher.dispatch(conversation_id, outbound_id)
        SENDS.labels(result).inc()
        log.info("dispatch %s/%s: %s", conversation_id, outbound_id, result)

    return EventWorker(
        name="dispatcher",
        subscription=subscription,
        handle=handle,
        types=["OutboundMessageQueued", "OutboundMessageRetried"],
    )


def knowledge_worker(
    *,
    knowledge: KnowledgeStore,
    subscription: Subscription,
) -> EventWorker:
    """On KnowledgeDocumentAdded: chunk and embed the document into pgvector.

    The embeddings projection: a document is stored with the tenant stream version of
    its event, so a redelivered or older event never replaces newer text.
    """

    async def handle(envelope: Envelope) -> None:
        document_id = await knowledge.add_document(
            UUID(envelope.stream_id),
            str(envelope.data["name"]),
            str(envelope.data["text"]),
            version=envelope.stream_version,
        )
        log.info("knowledge %s: document %s indexed", envelope.stream_id, document_id)

    return EventWorker(
        name="knowledge",
        subscription=subscription,
        handle=handle,
        types=["KnowledgeDocumentAdded"],
        background=True,
    )


def notifier_worker(
    *,
    notifier: HandoffNotifier,
    subscription: Subscription,
) -> EventWorker:
    """On HandoffRequested: the tenant's Telegram chat gets one notice.

    Each handoff is a task of its own, so a tenant whose Telegram is down holds only
    its own notices while they are retried; the ledger makes redelivery harmless.
    """

    async def handle(envelope: Envelope) -> None:
        if envelope.tenant_id is None:
            return
        outcome = await notifier.handoff_requested(
            UUID(envelope.tenant_id), UUID(envelope.stream_id), envelope.stream_version
        )
        log.info("notifier %s/%d: %s", envelope.stream_id, envelope.stream_version, outcome)

    return EventWorker(
        name="notifier",
        subscription=subscription,
        handle=handle,
        types=["HandoffRequested"],
        ordered=False,  # handoffs are independent; the ledger keys each one
        background=True,
    )

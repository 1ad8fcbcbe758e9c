"""The outbound dispatcher: send what was queued, unless it should no longer go out.

Checks at send time, in order: still queued; the send-time gate (an AI answer is
cancelled when a human took over since it was queued); WhatsApp's 24-hour window
(free-form text only within 24 h of the lead's last message, otherwise
`OutboundMessageFailed` with reason `outside_window`); the tenant's rate limit.
Then the gateway's send, retried with jittered backoff on transient faults, and
`OutboundMessageSent` with the provider id, or `OutboundMessageFailed`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from urbana.application.app import UrbanaApp
from urbana.application.channels import OutboundRequest, Sender, SendFailed
from urbana.domain.conversation import Conversation, Delivery, Status

log = logging.getLogger(__name__)


class RateLimiter(Protocol):
    async def acquire(self, tenant_id: UUID, per_second: int) -> None:
        """Wait until the tenant may send one more message."""
        ...


def _now() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    def __init__(
        self,
        app: UrbanaApp,
        senders: Mapping[str, Sender],
        *,
        rate_limiter: RateLimiter | None = None,
        attempts: int = 4,
        backoff_max: float = 5.0,
        clock: Any = _now,
    ) -> None:
        self._app = app
        self._senders = senders
        self._limiter = rate_limiter
        self._attempts = attempts
        self._backoff_max = backoff_max
        self._clock = clock

    async def dispatch(self, conversation_id: UUID, outbound_id: str) -> str:
        """Send one queued message; returns sent | cancelled | failed | skipped."""
        conv: Conversation = await asyncio.to_thread(self._app.get_conversation, conversation_id)
        if conv.outbound.get(outbound_id) != Delivery.QUEUED.value:
            return "skipped"
        if not conv.may_send(outbound_id):
            reason = "conversation_closed" if conv.status is Status.CLOSED else "human_took_over"
            await asyncio.to_thread(self._app.cancel_outbound, conversation_id, outbound_id, reason)
            return "cancelled"
        if not conv.within_service_window(self._clock()):
            await asyncio.to_thread(
                self._app.mark_failed, conversation_id, outbound_id, "outside_window"
            )
            return "failed"
        tenant = await asyncio.to_thread(self._app.get_tenant, conv.tenant_id)
        route = tenant.settings.get("outbound") or conv.channel
        sender = self._senders.get(route)
        channel = tenant.channels.get(conv.channel)
        if sender is None or (channel is None and route == conv.channel):
            await asyncio.to_thread(
                self._app.mark_failed,
                conversation_id,
                outbound_id,
                f"channel_not_connected:{route}",
            )
            return "failed"
        config = {**(channel or {}).get("public", {}), **(channel or {}).get("secrets", {})}
        if self._limiter is not None:
            await self._limiter.acquire(
                conv.tenant_id, int(tenant.settings.get("rate_limit_per_s", 80))
            )
        request = OutboundRequest(to=conv.contact, text=conv.pending_text[outbound_id])
        try:
            provider_id = await self._send(sender, config, request)
        except SendFailed as exc:
            log.warning("send of %s failed: %s", outbound_id, exc.reason)
            await asyncio.to_thread(
                self._app.mark_failed,
                conversation_id,
                outbound_id,
                exc.reason[:200],
                str(exc.status) if exc.status else None,
            )
            return "failed"
        await asyncio.to_thread(self._app.mark_sent, conversation_id, outbound_id, provider_id)
        return "sent"

    async def _send(self, sender: Sender, config: dict[str, str], request: OutboundRequest) -> str:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_random_exponential(multiplier=0.2, max=self._backoff_max),
            retry=retry_if_exception(lambda e: isinstance(e, SendFailed) and e.retryable),
            reraise=True,
        ):
            with attempt:
                return await sender.send(config, request)
        raise AssertionError("unreachable")

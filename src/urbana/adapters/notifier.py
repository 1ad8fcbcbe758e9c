"""The notifier: one Telegram message per handoff, to the tenant's chat.

On each `HandoffRequested` (the `notifier` worker role consumes them from Kafka, see
`urbana.adapters.kafka.role_workers.notifier_worker`) it reads the tenant's Telegram target
and, when there is one, claims the notice in the ledger, reads the handoff (decrypted)
and sends it, retrying while Telegram is down or throttling, with backoff (tenacity)
honouring `retry_after`, for at most `horizon_s` (then the notice ends `expired`).

At most once. The ledger row is keyed by the handoff (conversation and stream
version), so a redelivered event, a second notifier or a restart find it: sent,
refused, or possibly sent (a request that got no answer, or a notifier that died with
its request out) are never sent again. Only attempts that surely did not reach
Telegram are retried.

Other tenants never wait: the worker runs each handoff as a task of its own, so one
tenant's retries hold only that handoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from uuid import UUID, uuid4

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from urbana.application.app import UrbanaApp
from urbana.application.notifications import (
    BUTTON_TEXT,
    Claim,
    Messenger,
    NotificationLedger,
    NotifyFailed,
    NotifyOutcomeUnknown,
    handoff_notice,
    notice_text,
)
from urbana.domain.tenant import TelegramTarget, Tenant

log = logging.getLogger(__name__)

LEASE_S = 120.0  # longer than the longest wait between attempts plus a request


class NotificationBusy(Exception):
    """Another notifier holds this notice right now; the event is retried after it."""


class ClaimLost(Exception):
    """This notifier's lease ran out and another one took the notice over."""


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, NotifyFailed) and exc.retryable


class HandoffNotifier:
    """Sends each handoff's notice at most once (see module docstring)."""

    def __init__(
        self,
        app: UrbanaApp,
        ledger: NotificationLedger,
        messenger: Messenger,
        *,
        panel_url: str,
        backoff_start_s: float = 1.0,
        backoff_cap_s: float = 30.0,
        horizon_s: float = 3_600.0,
        lease_s: float = LEASE_S,
        targets: Callable[[UUID], TelegramTarget | None] | None = None,
    ) -> None:
        self._app = app
        self._ledger = ledger
        self._messenger = messenger
        self._panel_url = panel_url
        self._backoff_start_s = backoff_start_s
        self._backoff_cap_s = backoff_cap_s
        self._horizon_s = horizon_s
        self._lease_s = max(lease_s, backoff_cap_s * 2)
        self._targets = targets or self._target_of
        self.sent = 0
        self.failed_attempts = 0

    def _target_of(self, tenant_id: UUID) -> TelegramTarget | None:
        tenant: Tenant = self._app.get(Tenant, tenant_id)
        return tenant.telegram

    async def handoff_requested(self, tenant_id: UUID, conversation_id: UUID, version: int) -> str:
        """Notify the handoff at `version` of the conversation; how it ended, in a word."""
        target = await asyncio.to_thread(self._targets, tenant_id)
        if target is None:
            return "not_configured"
        key = f"handoff:{conversation_id}:{version}"
        owner = uuid4()
        claim = await self._ledger.claim(key, tenant_id, owner, self._lease_s)
        if claim is Claim.BUSY:
            raise NotificationBusy(key)
        if claim is Claim.DONE:
            return "duplicate"
        notice = await asyncio.to_thread(
            handoff_notice, self._app, conversation_id, version, self._panel_url
        )
        if notice is None:
            await self._ledger.finish(key, owner, "refused", "no handoff at that version")
            return "not_a_handoff"
        text = notice_text(notice)
        try:
            message_id = await self._send(key, owner, target, text, notice.url)
        except NotifyOutcomeUnknown as exc:
            await self._ledger.finish(key, owner, "unknown", str(exc))
            log.warning("notifier %s: %s; not sent again", key, exc)
            return "unknown"
        except NotifyFailed as exc:
            state = "expired" if exc.retryable else "refused"
            await self._ledger.finish(key, owner, state, exc.reason)
            log.warning("notifier %s: %s (%s)", key, state, exc.reason)
            return state
        await self._ledger.finish(key, owner, "sent", message_id)
        self.sent += 1
        return "sent"

    async def _send(
        self, key: str, owner: UUID, target: TelegramTarget, text: str, url: str
    ) -> str:
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=self._wait,
            stop=stop_after_delay(self._horizon_s),
            before_sleep=lambda state: self._failed(key, state),
            reraise=True,
        )
        message_id = ""
        async for attempt in retrying:
            with attempt:
                if not await self._ledger.sending(key, owner, self._lease_s):
                    raise ClaimLost(key)
                try:
                    message_id = await self._send_once(target, text, url)
                except NotifyFailed as exc:
                    if exc.retryable:
                        await self._ledger.failed(key, owner, self._lease_s, exc.reason)
                    raise
        return message_id

    async def _send_once(self, target: TelegramTarget, text: str, url: str) -> str:
        try:
            return await self._messenger.send(target, text, BUTTON_TEXT, url)
        except NotifyFailed as exc:
            if not exc.button_refused:
                raise
        # Telegram takes no local URLs in buttons (`urbana dev` without URBANA_PANEL_URL);
        # the refusal sent nothing, so the link goes in the text instead.
        log.warning("notifier: telegram refused the button URL %s; sending it as text", url)
        return await self._messenger.send(target, f"{text}\n{url}", None, None)

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff, but never shorter than what Telegram asked for."""
        backoff = wait_exponential(multiplier=self._backoff_start_s, max=self._backoff_cap_s)
        seconds = float(backoff(state))
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, NotifyFailed) and exc.retry_after is not None:
            seconds = max(seconds, min(exc.retry_after, self._backoff_cap_s))
        return seconds

    def _failed(self, key: str, state: RetryCallState) -> None:
        self.failed_attempts += 1
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("notifier %s: %s; retrying in %.1f s", key, exc, wait)

"""The outbound dispatcher: send what was queued, unless it should no longer go out.

Checks at send time, in order: still queued; the send-time gate (an AI answer is
cancelled when a human took over since it was queued); WhatsApp's 24-hour window
(free-form text only within 24 h of the lead's last message, otherwise
`OutboundMessageFailed` with reason `outside_window`); the tenant channel's circuit
breaker; the tenant's rate limit. Then `OutboundSendAttempted`, the gateway call, and
`OutboundMessageSent` with the provider id. The gateways, the rate limiter and the
clock are ports (`urbana.application.ports`).

A transient fault (5xx, 429 and Meta's rate-limit codes, timeouts, connection errors)
delays a message, it never drops it: the send is retried with jittered exponential
backoff, never sooner than the gateway's `Retry-After`, for up to `horizon_s` from the
first attempt and never past the 24-hour window. Each tenant channel has a circuit
breaker: after a run of transient faults (or a Retry-After) the messages of that
channel wait instead of each calling a gateway that is down, and the first one to go
after the open period is the probe. `OutboundMessageFailed` is recorded only for a
permanent refusal or when the horizon ran out, with the reason; the domain then lets
an operator queue it again (`OutboundMessageRetried`, `urbana dlq retry`).

A send whose outcome is unknown (a timeout after the request was written, a crash
between the call and `OutboundMessageSent`) is not blindly repeated. The attempt is
recorded before the call, and the request carries `<conversation id>:<outbound id>` as
callback data (the Cloud API's `biz_opaque_callback_data`, echoed in that message's
status webhooks): a status carrying it for a provider id we never learnt marks the
message sent (`urbana.application.inbound`). Before sending again after such an
attempt the dispatcher waits up to `reconcile_wait_s` from it for that to happen. Gateways that
echo nothing (Evolution, Z-API) are at-least-once: after that wait for another
dispatcher's attempt (or at once after a timeout of our own) the message is sent again.

How this fits the consumer (`urbana.adapters.kafka.workers`): each envelope is a task,
chained behind the previous one of its conversation, and offsets are committed only
below the oldest unfinished task of a partition. A message retried for minutes keeps
only its own conversation waiting; the others on its partition go on. What it holds
back is the committed offset, so a restart redelivers what came after it: every
delivery re-reads the conversation, skips what is no longer queued, and resumes a
queued one from its durable attempt record (horizon counted from the first recorded
attempt, reconciliation wait from the last). Two dispatchers working the same message
(a rebalance) cannot record the same attempt twice: the attempt is an append under
the stream's optimistic concurrency, and the second one reloads and waits as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar
from uuid import UUID

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from urbana.application.app import UrbanaApp, callback_data_for
from urbana.application.breaker import ChannelBreaker
from urbana.application.channels import OutboundRequest, SendFailed
from urbana.application.ports import Clock, RateLimiter, Sender, SystemClock
from urbana.domain.channels import CONSOLE
from urbana.domain.conversation import Conversation, Status
from urbana.domain.errors import InvalidTransition, StaleStatus
from urbana.domain.outbound import OUT
from urbana.domain.pii import ERASED
from urbana.domain.templates import window_applies
from urbana.domain.tenant import Tenant

log = logging.getLogger(__name__)

RECONCILE_POLL_S = 0.5
_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class DispatchPolicy:
    """How long and how often the dispatcher keeps trying (settings `URBANA_DISPATCH_*`)."""

    horizon_s: float = 900.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    reconcile_wait_s: float = 20.0
    breaker_failures: int = 5
    breaker_open_s: float = 5.0
    breaker_max_open_s: float = 120.0


class _Transient(Exception):
    """One try did not send the message, and a later one may."""

    def __init__(self, failure: SendFailed) -> None:
        super().__init__(failure.reason)
        self.failure = failure


@dataclass
class _Progress:
    """What one dispatch call learnt about its message across tries (in memory only)."""

    started: datetime
    deadline: datetime
    mine: set[int] = field(default_factory=set)  # attempts this process made
    not_sent: set[int] = field(default_factory=set)  # attempts known not to have gone out
    waited_for: int = 0  # last attempt whose reconciliation we already waited for


class Dispatcher:
    def __init__(
        self,
        app: UrbanaApp,
        senders: Mapping[str, Sender],
        *,
        rate_limiter: RateLimiter | None = None,
        policy: DispatchPolicy | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._app = app
        self._senders = senders
        self._limiter = rate_limiter
        self._policy = policy or DispatchPolicy()
        self._clock = (clock or SystemClock()).now
        self._breakers: dict[tuple[UUID, str], ChannelBreaker] = {}

    def breaker(self, tenant_id: UUID, route: str) -> ChannelBreaker:
        """The circuit breaker of one tenant's channel (made on first use)."""
        key = (tenant_id, route)
        if key not in self._breakers:
            p = self._policy
            self._breakers[key] = ChannelBreaker(
                failures=p.breaker_failures,
                open_s=p.breaker_open_s,
                max_open_s=p.breaker_max_open_s,
            )
        return self._breakers[key]

    def breaker_states(self) -> dict[str, int]:
        """How many tenant channels' breakers are in each state (closed, half_open, open)."""
        counts: dict[str, int] = {}
        for breaker in self._breakers.values():
            counts[breaker.state] = counts.get(breaker.state, 0) + 1
        return counts

    async def dispatch(self, conversation_id: UUID, outbound_id: str) -> str:
        """Send one queued message; returns sent | reconciled | cancelled | failed | skipped."""
        now = self._clock()
        progress = _Progress(started=now, deadline=now + timedelta(seconds=self._policy.horizon_s))
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Transient),
            stop=lambda _: self._clock() >= progress.deadline,
            wait=lambda state: self._wait(state, progress),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._try(conversation_id, outbound_id, progress)
        except _Transient as exc:
            return await self._give_up(conversation_id, outbound_id, progress, exc.failure)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ one try

    async def _try(self, conversation_id: UUID, outbound_id: str, progress: _Progress) -> str:
        while True:
            conv = await self._load(conversation_id)
            early = await self._send_time_checks(conv, outbound_id, progress)
            if early == "skipped" and progress.mine and _went_out(conv, outbound_id):
                return "reconciled"  # confirmed by the gateway's status, not by our call
            if early is not None:
                return early
            if await self._reconciled(conv, outbound_id, progress):
                continue  # look again: sent meanwhile, or safe to send again
            return await self._attempt(conv, outbound_id, progress)

    async def _send_time_checks(
        self, conv: Conversation, outbound_id: str, progress: _Progress
    ) -> str | None:
        """The outcome when the message must not (or need not) be sent now; else None."""
        if not conv.is_queued(outbound_id):
            return "skipped"
        if conv.message(outbound_id).text == ERASED:
            # Its subject was erased after it was queued: the text and the address are
            # gone, and so is the reason to write to them.
            await self._call(self._app.cancel_outbound, conv.id, outbound_id, "subject_erased")
            return "cancelled"
        if not conv.may_send(outbound_id):
            reason = "conversation_closed" if conv.status is Status.CLOSED else "human_took_over"
            await self._call(self._app.cancel_outbound, conv.id, outbound_id, reason)
            return "cancelled"
        now = self._clock()
        if not await self._window_allows(conv, outbound_id, now):
            await self._fail(conv.id, outbound_id, "outside_window")
            return "failed"
        message = conv.message(outbound_id)
        first = message.first_attempt_at or progress.started
        horizon_end = min(first, progress.started) + timedelta(seconds=self._policy.horizon_s)
        free_form = message.template is None and conv.within_service_window(now)
        window_end = (conv.service_window_ends() if free_form else None) or horizon_end
        progress.deadline = min(horizon_end, window_end)
        return None

    async def _window_allows(self, conv: Conversation, outbound_id: str, now: datetime) -> bool:
        """The 24-hour window lets the message go (the tenant is read only when it is shut)."""
        if conv.window_allows(outbound_id, now, window_applies=True):
            return True
        tenant = await self._call(self._app.get, Tenant, conv.tenant_id)
        return not window_applies(conv.channel, tenant.settings.window_exempt_channels)

    async def _reconciled(self, conv: Conversation, outbound_id: str, progress: _Progress) -> bool:
        """After an attempt that may have gone out, wait (bounded) for its confirmation.

        True when we waited (the caller looks at the conversation again).
        """
        message = conv.message(outbound_id)
        attempt = message.attempts
        if attempt == 0 or attempt in progress.not_sent or attempt <= progress.waited_for:
            return False
        sender = self._senders.get(conv.channel)
        reconciles = sender is not None and sender.reconciles
        if attempt in progress.mine and not reconciles:
            return False  # our own timeout, and nothing will confirm it: at-least-once
        progress.waited_for = attempt
        assert message.last_attempt_at is not None  # it made an attempt
        until = message.last_attempt_at + timedelta(seconds=self._policy.reconcile_wait_s)
        log.info("outbound %s: attempt %d may have gone out; waiting", outbound_id, attempt)
        while self._clock() < until:
            await asyncio.sleep(min(RECONCILE_POLL_S, (until - self._clock()).total_seconds()))
            latest = await self._load(conv.id)
            if not latest.is_queued(outbound_id):
                break
        return True

    async def _attempt(self, conv: Conversation, outbound_id: str, progress: _Progress) -> str:
        tenant = await self._call(self._app.get, Tenant, conv.tenant_id)
        # A console conversation (the tenant testing its bot) never reaches a gateway,
        # whatever the tenant's outbound setting; it needs no connected channel.
        route = CONSOLE if conv.is_console else (tenant.settings.outbound or conv.channel)
        sender = self._senders.get(route)
        channel = tenant.channels.get(conv.channel)
        if sender is None or (channel is None and route == conv.channel and route != CONSOLE):
            await self._fail(conv.id, outbound_id, f"channel_not_connected:{route}")
            return "failed"
        config = {**(channel or {}).get("public", {}), **(channel or {}).get("secrets", {})}
        breaker = self.breaker(conv.tenant_id, route)
        remaining = (progress.deadline - self._clock()).total_seconds()
        if not await breaker.admit(remaining):
            raise _Transient(SendFailed(True, f"{route}: circuit open, gateway unavailable"))
        told = False  # whether the breaker heard how the call went
        try:
            try:
                number = await self._call(
                    self._app.record_send_attempt, conv.id, outbound_id, self._clock()
                )
            except (StaleStatus, InvalidTransition):
                return await self._try(conv.id, outbound_id, progress)  # it changed meanwhile
            progress.mine.add(number)
            message = conv.message(outbound_id)
            assert message.text is not None  # a queued message always has its text
            template = message.template
            request = OutboundRequest(
                to=conv.contact,
                text=message.text,
                template=template.name if template else None,
                template_language=template.language if template else None,
                template_values=template.values if template else (),
                callback_data=callback_data_for(conv.id, outbound_id),
            )
            if self._limiter is not None:
                # Last thing before the call, so the gateway sees the pace the limiter set.
                await self._limiter.acquire(conv.tenant_id, tenant.settings.rate_limit_per_s)
            try:
                provider_id = await sender.send(config, request)
            except SendFailed as exc:
                if not exc.outcome_unknown:
                    progress.not_sent.add(number)
                if not exc.retryable:
                    breaker.success()  # it answered: the gateway is up, the request was wrong
                    told = True
                    log.warning("send of %s refused: %s", outbound_id, exc.reason)
                    await self._fail(conv.id, outbound_id, exc.reason, exc.code or _code(exc))
                    return "failed"
                if exc.channel_wide:
                    breaker.failure(exc.retry_after)
                    told = True
                log.info("send of %s (attempt %d) failed: %s", outbound_id, number, exc.reason)
                raise _Transient(exc) from exc
            breaker.success()
            told = True
        finally:
            if not told:
                breaker.release()
        await self._call(self._app.mark_sent, conv.id, outbound_id, provider_id)
        return "sent"

    # ------------------------------------------------------------------ helpers

    def _wait(self, state: RetryCallState, progress: _Progress) -> float:
        """Jittered exponential backoff, at least the gateway's Retry-After, within the deadline."""
        p = self._policy
        ceiling = min(p.backoff_max_s, p.backoff_initial_s * 2 ** (state.attempt_number - 1))
        delay = random.uniform(p.backoff_initial_s / 2, ceiling)  # noqa: S311
        outcome = state.outcome.exception() if state.outcome is not None else None
        if isinstance(outcome, _Transient) and outcome.failure.retry_after is not None:
            delay = max(delay, outcome.failure.retry_after)
        remaining = (progress.deadline - self._clock()).total_seconds()
        return max(0.0, min(delay, remaining))

    async def _give_up(
        self, conversation_id: UUID, outbound_id: str, progress: _Progress, last: SendFailed
    ) -> str:
        conv = await self._load(conversation_id)
        if not conv.is_queued(outbound_id):
            return "skipped"
        if not await self._window_allows(conv, outbound_id, self._clock()):
            reason = "outside_window"
        else:
            attempts = conv.message(outbound_id).attempts
            reason = (
                f"gave up after {attempts} attempt(s) within {self._policy.horizon_s:.0f} s: "
                f"{last.reason}"
            )
        await self._fail(conversation_id, outbound_id, reason, last.code or _code(last))
        return "failed"

    async def _fail(
        self, conversation_id: UUID, outbound_id: str, reason: str, code: str | None = None
    ) -> None:
        # StaleStatus: confirmed (or cancelled) meanwhile, so nothing failed.
        with contextlib.suppress(StaleStatus):
            await self._call(
                self._app.mark_failed, conversation_id, outbound_id, reason[:300], code
            )

    async def _load(self, conversation_id: UUID) -> Conversation:
        return await self._call(self._app.get, Conversation, conversation_id)

    @staticmethod
    async def _call(function: Callable[..., _R], *args: object) -> _R:
        # The event store is synchronous: never on the event loop.
        return await asyncio.to_thread(function, *args)


def _went_out(conv: Conversation, outbound_id: str) -> bool:
    found = conv.outbound.get(outbound_id)
    return found is not None and found.delivery in OUT


def _code(failure: SendFailed) -> str | None:
    return str(failure.status) if failure.status else None

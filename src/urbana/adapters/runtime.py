"""Background roles of a process: relay, projector, responder, dispatcher, knowledge.

`urbana dev` runs them all inside the API process; `urbana worker --role ROLE`
runs one per process against external services. Each role is a task that stops
when the shared stop event is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from urbana.adapters.bootstrap import Container
from urbana.adapters.kafka.consumer import GroupTimeouts
from urbana.adapters.kafka.projector import ProjectionRunner
from urbana.adapters.kafka.relay import Relay
from urbana.adapters.kafka.workers import (
    EventWorker,
    dispatcher_worker,
    knowledge_worker,
    responder_worker,
)
from urbana.adapters.rate_limit import RedisRateLimiter
from urbana.adapters.redis_coord import RedisCoordinator
from urbana.application.dispatcher import Dispatcher, DispatchPolicy
from urbana.application.responder import Responder

log = logging.getLogger(__name__)

ROLES = ("relay", "projector", "responder", "dispatcher", "knowledge")

# A role that ran this long before it crashed restarts after the shortest pause again.
HEALTHY_RUN_S = 60.0


class RoleError(ValueError):
    """An unknown role, or a role whose services are not configured."""


@dataclass
class Runtime:
    container: Container
    roles: tuple[str, ...]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    relay: Relay | None = None
    projector: ProjectionRunner | None = None
    workers: dict[str, EventWorker] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        """This process's roles: relay position and lag, projections, workers."""
        out: dict[str, Any] = {}
        if self.relay is not None:
            out["relay"] = self.relay.metrics()
        if self.projector is not None:
            out["projections"] = {
                name: dataclasses.asdict(m) for name, m in self.projector.metrics.items()
            }
        for role, worker in self.workers.items():
            out[role] = dataclasses.asdict(worker.metrics)
        return out

    async def start(self) -> None:
        for role in self.roles:
            self.tasks.append(asyncio.create_task(self._supervise(role), name=f"role:{role}"))

    async def aclose(self) -> None:
        self.stop.set()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _supervise(self, role: str) -> None:
        """Run a role; an unexpected crash is logged and the role restarted after a pause."""
        delay = 1.0
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                await self._run(role)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                if time.monotonic() - began > HEALTHY_RUN_S:
                    delay = 1.0  # a crash after a good run is not a crash loop
                log.exception("role %s crashed; restarting in %.0f s", role, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=delay)
                delay = min(delay * 2, 30.0)

    async def _run(self, role: str) -> None:
        c = self.container
        s = c.settings
        if not s.kafka_bootstrap:
            raise RoleError(f"role {role} needs URBANA_KAFKA_BOOTSTRAP")
        if role == "relay":
            self.relay = Relay(
                database_url=s.database_url or "",
                schema=s.database_schema,
                bootstrap=s.kafka_bootstrap,
                topic=s.events_topic,
            )
            try:
                await self.relay.run(self.stop)
            finally:
                await self.relay.close()
        elif role == "projector":
            self.projector = ProjectionRunner(
                database_url=s.database_url or "",
                schema=s.database_schema,
                bootstrap=s.kafka_bootstrap,
                topic=s.events_topic,
                group_prefix=f"{s.consumer_group_prefix}.projection",
                timeouts=self._timeouts(),
            )
            await self.projector.run(self.stop)
        elif role in ("responder", "dispatcher", "knowledge"):
            worker = self._worker(role)
            self.workers[role] = worker
            await worker.run(self.stop)
        else:
            raise RoleError(f"unknown role {role!r} ({', '.join(ROLES)})")

    def _worker(self, role: str) -> EventWorker:
        """The consumer group of an event-driven role (responder, dispatcher, knowledge)."""
        c = self.container
        s = c.settings
        assert s.kafka_bootstrap is not None
        group_id = f"{s.consumer_group_prefix}.worker.{role}"
        timeouts = self._timeouts()
        if role == "knowledge":
            return knowledge_worker(
                knowledge=c.ai.knowledge,
                bootstrap=s.kafka_bootstrap,
                topic=s.events_topic,
                group_id=group_id,
                timeouts=timeouts,
            )
        if c.redis is None:
            raise RoleError(f"role {role} needs URBANA_REDIS_URL")
        if role == "responder":
            coordinator = RedisCoordinator(c.redis)
            responder = Responder(
                c.store.app, c.ai.llm, knowledge=c.ai.knowledge, embeddings=c.ai.embeddings
            )
            return responder_worker(
                app=c.store.app,
                responder=responder,
                coordinator=coordinator,
                bootstrap=s.kafka_bootstrap,
                default_debounce_ms=s.debounce_ms,
                topic=s.events_topic,
                group_id=group_id,
                timeouts=timeouts,
            )
        dispatcher = Dispatcher(
            c.store.app,
            c.channels.senders(),
            rate_limiter=RedisRateLimiter(c.redis),
            policy=DispatchPolicy(
                horizon_s=s.dispatch_horizon_s,
                backoff_initial_s=s.dispatch_backoff_initial_s,
                backoff_max_s=s.dispatch_backoff_max_s,
                reconcile_wait_s=s.dispatch_reconcile_wait_s,
                breaker_failures=s.dispatch_breaker_failures,
                breaker_open_s=s.dispatch_breaker_open_s,
                breaker_max_open_s=max(s.dispatch_breaker_max_open_s, s.dispatch_breaker_open_s),
            ),
        )
        return dispatcher_worker(
            dispatcher=dispatcher,
            bootstrap=s.kafka_bootstrap,
            topic=s.events_topic,
            group_id=group_id,
            timeouts=timeouts,
        )

    def _timeouts(self) -> GroupTimeouts:
        """One set of consumer-group settings for every role that consumes."""
        return GroupTimeouts(session_timeout_ms=self.container.settings.kafka_session_timeout_ms)


def parse_roles(values: Iterable[str]) -> tuple[str, ...]:
    roles = tuple(dict.fromkeys(v.strip() for v in values if v.strip()))
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise RoleError(f"unknown role(s): {', '.join(unknown)} ({', '.join(ROLES)})")
    return roles


RuntimeFactory = Callable[[Container], Awaitable[Runtime]]

"""The background roles, built from the composition root's container.

`build_role` makes one role (relay, projector, responder, dispatcher, knowledge,
notifier, assigner, scheduler) from what `bootstrap.build` made; `build_runtime` supervises the
roles a process runs. Like the composition root, each builder imports the client
libraries it needs when it runs, so a process imports only what its roles use.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from urbana.adapters.bootstrap import Container
from urbana.adapters.runtime import ROLES, Role, Runtime
from urbana.config import Settings
from urbana.errors import ConfigurationError

if TYPE_CHECKING:
    from urbana.adapters.kafka.consumer import GroupTimeouts
    from urbana.adapters.kafka.workers import EventWorker, Subscription
    from urbana.adapters.notifier import HandoffNotifier
    from urbana.adapters.postgres.jobs import PgJobLedger, PgJobSources
    from urbana.adapters.postgres.store import Store
    from urbana.application.ports import LLM, Embeddings, KnowledgeSearch


def build_runtime(
    container: Container, roles: tuple[str, ...], *, stop: asyncio.Event | None = None
) -> Runtime:
    """The background roles of a process, each built from the container when it starts."""
    return Runtime(lambda name: build_role(container, name), roles, stop or asyncio.Event())


def build_role(container: Container, name: str) -> Role:
    """One background role (relay, projector, responder, dispatcher, knowledge, notifier,
    assigner, scheduler)."""
    s = container.settings
    if name == "scheduler":  # the one role that needs no broker
        return _scheduler(container)
    if not s.kafka_bootstrap:
        raise ConfigurationError(f"role {name} needs URBANA_KAFKA_BOOTSTRAP")
    if name == "relay":
        return _relay(s, s.kafka_bootstrap)
    if name == "projector":
        return _projector(s, s.kafka_bootstrap)
    if name == "assigner":
        return _assigner(container, s.kafka_bootstrap)
    if name in ("responder", "dispatcher", "knowledge", "notifier"):
        worker, extra = _worker(container, name, s.kafka_bootstrap)

        def figures() -> dict[str, Any]:
            return {name: {**_asdict(worker.metrics), **extra()}}

        return Role(run=worker.run, metrics=figures)
    raise ConfigurationError(f"unknown role {name!r} ({', '.join(ROLES)})")


def _relay(s: Settings, bootstrap: str) -> Role:
    from urbana.adapters.kafka.relay import Relay

    relay = Relay(
        database_url=s.database_url or "",
        schema=s.database_schema,
        bootstrap=bootstrap,
        topic=s.events_topic,
    )

    async def run(stop: asyncio.Event) -> None:
        try:
            await relay.run(stop)
        finally:
            await relay.aclose()

    return Role(run=run, metrics=lambda: {"relay": relay.metrics()})


def _projector(s: Settings, bootstrap: str) -> Role:
    from urbana.adapters.kafka.projector import ProjectionRunner

    projector = ProjectionRunner(
        database_url=s.database_url or "",
        schema=s.database_schema,
        bootstrap=bootstrap,
        topic=s.events_topic,
        group_prefix=f"{s.consumer_group_prefix}.projection",
        timeouts=_timeouts(s),
    )
    return Role(
        run=projector.run,
        metrics=lambda: {
            "projections": {name: _asdict(m) for name, m in projector.metrics.items()}
        },
    )


def _assigner(c: Container, bootstrap: str) -> Role:
    """The automatic assignment (on handoffs and attendants coming online) and the
    periodic inactivity sweep, in one role."""
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager
    from uuid import UUID

    from psycopg import AsyncConnection

    from urbana.adapters.kafka.assignment import assignment_worker
    from urbana.adapters.postgres.roster import StoreRoster
    from urbana.application.assignment import AutoAssigner, run_inactivity_sweeps
    from urbana.config import conninfo
    from urbana.projections.attendant_queries import ReadModelFinder

    s = c.settings
    info = conninfo(s.database_url or "", s.database_schema, wait_s=s.store_wait_s)

    @asynccontextmanager
    async def connect(_: UUID) -> AsyncIterator[AsyncConnection[Any]]:
        # The finder reads with WHERE tenant_id; one short connection per question.
        async with await AsyncConnection.connect(info) as conn:
            yield conn

    roster = StoreRoster(c.store, c.access)
    assigner = AutoAssigner(c.store.app, roster, ReadModelFinder(connect), clock=c.clock)
    subscription = _subscription(s, "assigner", bootstrap)
    worker = assignment_worker(assigner=assigner, subscription=subscription)

    async def run(stop: asyncio.Event) -> None:
        # A task group: if the consumer crashes, the sweep ends with it (the runtime
        # restarts the role whole).
        async with asyncio.TaskGroup() as group:
            group.create_task(worker.run(stop))
            group.create_task(
                run_inactivity_sweeps(
                    assigner, roster.tenants_holding, every_s=s.inactivity_sweep_s, stop=stop
                )
            )

    return Role(run=run, metrics=lambda: {"assigner": _asdict(worker.metrics)})


def _scheduler(c: Container) -> Role:
    """The jobs on a clock, while this process holds the scheduler's lead."""
    from urbana.adapters.bootstrap import build_erasure
    from urbana.adapters.metrics import observe_job
    from urbana.adapters.postgres.jobs import PgLeadership
    from urbana.application.jobs import catalogue
    from urbana.application.scheduler import Scheduler
    from urbana.config import conninfo

    s = c.settings
    sources, ledger = job_ports(c.store)
    scheduler = Scheduler(
        c.store.app,
        sources,
        ledger,
        PgLeadership(
            conninfo(s.database_url or "", s.database_schema, wait_s=s.store_wait_s),
            s.database_schema,
            poll_s=s.scheduler_takeover_s,
        ),
        jobs=catalogue(c.store.app, sources, build_erasure(c)),
        tick_s=s.scheduler_tick_s,
        clock=c.clock,
        on_run=observe_job,
    )
    return Role(run=scheduler.run, metrics=lambda: {"scheduler": _asdict(scheduler.metrics)})


def job_ports(store: Store) -> tuple[PgJobSources, PgJobLedger]:
    """The jobs' candidates and runs ledger on the store (the scheduler's and the CLI's)."""
    from urbana.adapters.postgres.jobs import PgJobLedger, PgJobSources

    return PgJobSources(store.pool), PgJobLedger(store.pool, store.schema)


def _worker(
    c: Container, role: str, bootstrap: str
) -> tuple[EventWorker, Callable[[], dict[str, Any]]]:
    """The consumer group of an event-driven role (responder, dispatcher, knowledge,
    notifier), and the figures of its own it reports beside the worker's: its circuit
    breakers by state, and the responder's query-vector cache."""
    from urbana.adapters.kafka.role_workers import (
        dispatcher_worker,
        knowledge_worker,
        notifier_worker,
        responder_worker,
    )
    from urbana.adapters.rate_limit import RedisRateLimiter
    from urbana.adapters.redis_coord import RedisCoordinator
    from urbana.adapters.traced import traced_senders
    from urbana.application.dispatcher import Dispatcher, DispatchPolicy
    from urbana.application.responder import Responder

    s = c.settings
    subscription = _subscription(s, role, bootstrap)
    if role == "knowledge":
        return knowledge_worker(knowledge=c.ai.knowledge, subscription=subscription), dict
    if role == "notifier":
        return notifier_worker(notifier=build_notifier(c), subscription=subscription), dict
    if c.redis is None:
        raise ConfigurationError(f"role {role} needs URBANA_REDIS_URL")
    if role == "responder":
        llm, knowledge, embeddings = _responder_ports(c)
        responder = Responder(
            c.store.app,
            llm,
            knowledge=knowledge,
            embeddings=embeddings,
            summarizer=c.ai.summarizer,
        )
        worker = responder_worker(
            app=c.store.app,
            responder=responder,
            coordinator=RedisCoordinator(c.redis),
            default_debounce_ms=s.debounce_ms,
            subscription=subscription,
        )
        # The OpenAI adapter keeps a breaker per model; a test's LLM double keeps none.
        llm_breakers: Callable[[], dict[str, int]] | None = getattr(
            c.ai.llm, "breaker_states", None
        )
        vectors = responder.vectors

        def responder_figures() -> dict[str, Any]:
            own: dict[str, Any] = {
                "query_vectors": {
                    "hits": vectors.hits,
                    "misses": vectors.misses,
                    "entries": len(vectors),
                }
            }
            if llm_breakers is not None:
                own["breakers"] = llm_breakers()
            return own

        return worker, responder_figures
    dispatcher = Dispatcher(
        c.store.app,
        traced_senders(c.senders),
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
        clock=c.clock,
    )
    return dispatcher_worker(dispatcher=dispatcher, subscription=subscription), lambda: {
        "breakers": dispatcher.breaker_states()
    }


def _responder_ports(c: Container) -> tuple[LLM, KnowledgeSearch, Embeddings]:
    """The LLM, knowledge and embeddings of the responder; with spans while tracing is on."""
    from urbana.adapters import tracing

    ai = c.ai
    if not tracing.enabled():
        return ai.llm, ai.knowledge, ai.embeddings
    from urbana.adapters.traced import TracedEmbeddings, TracedKnowledge, TracedLLM

    return TracedLLM(ai.llm), TracedKnowledge(ai.knowledge), TracedEmbeddings(ai.embeddings)


def build_notifier(c: Container) -> HandoffNotifier:
    """The handoff notifier: Telegram through the shared HTTP client, the ledger in the store."""
    from urbana.adapters.notifier import HandoffNotifier
    from urbana.adapters.postgres.notifications import PgNotificationLedger
    from urbana.adapters.telegram import TelegramBot

    s = c.settings
    return HandoffNotifier(
        c.store.app,
        PgNotificationLedger(c.store.pool, c.store.schema),
        TelegramBot(c.http, base_url=s.telegram_api_url, timeout=s.send_timeout_s),
        panel_url=s.panel_url or f"http://{s.host}:{s.port}/panel",
        backoff_start_s=s.notify_backoff_initial_s,
        backoff_cap_s=s.notify_backoff_max_s,
        horizon_s=s.notify_horizon_s,
    )


def _timeouts(s: Settings) -> GroupTimeouts:
    """One set of consumer-group settings for every role that consumes."""
    from urbana.adapters.kafka.consumer import GroupTimeouts

    return GroupTimeouts(
        session_timeout_ms=s.kafka_session_timeout_ms,
        fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
    )


def _subscription(s: Settings, role: str, bootstrap: str) -> Subscription:
    """Where the worker of `role` reads: the events topic, in its own consumer group."""
    from urbana.adapters.kafka.workers import Subscription

    return Subscription(
        bootstrap,
        topic=s.events_topic,
        group_id=f"{s.consumer_group_prefix}.worker.{role}",
        timeouts=_timeouts(s),
    )


def _asdict(figures: Any) -> dict[str, Any]:
    return dataclasses.asdict(figures)

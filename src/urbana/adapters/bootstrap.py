"""The composition root: settings in, every part of a process wired, each closed once.

`build(settings, **overrides)` makes what a running process uses (the event store, the
HTTP client, the gateway channels, the tenant directory, the ingest writer, the AI's
collaborators, Redis); `adapters.roles` builds its background roles from it. FastAPI's
lifespan, the CLI, `urbana dev`, the demo and the tests come through here, and nothing is
built at import time. Overrides stand in for what we do not own (the LLM, embeddings,
gateway senders, the HTTP client, the clock, Redis); the container does not close what it
was given.

Commands that only need the event store (`build_store`: `tenant create`, `dlq`, ...)
import this module too, so the client libraries (OpenAI, Redis, Kafka, httpx) are
imported by the builders that use them, not when this module is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from urbana.adapters.keys import jwt_secret_for, master_key_for
from urbana.adapters.postgres.schema import ensure_schema
from urbana.adapters.postgres.store import Store, open_store
from urbana.application.login_throttle import LoginLimits, LoginThrottle
from urbana.config import Settings, conninfo
from urbana.domain.channels import CHANNELS
from urbana.errors import ConfigurationError

if TYPE_CHECKING:
    import httpx
    import redis.asyncio as aioredis
    from psycopg_pool import AsyncConnectionPool

    from urbana.adapters.channels.cloud import CloudChannel
    from urbana.adapters.channels.console import ConsoleChannel
    from urbana.adapters.channels.evolution import EvolutionChannel
    from urbana.adapters.channels.zapi import ZapiChannel
    from urbana.adapters.http.directory import TenantDirectory
    from urbana.adapters.ingest import Ingestor
    from urbana.adapters.live import LiveFeed
    from urbana.adapters.postgres.knowledge import PgKnowledgeStore
    from urbana.adapters.tokens import JwtTokens
    from urbana.application.access import Access
    from urbana.application.app import UrbanaApp
    from urbana.application.erasure import Erasure
    from urbana.application.ports import LLM, Clock, Embeddings, Sender, Summarizer

log = logging.getLogger(__name__)


class Overrides(TypedDict, total=False):
    """What a caller may give `build` instead of what the settings would make."""

    llm: LLM
    embeddings: Embeddings
    senders: Mapping[str, Sender]  # by channel kind, over the gateway channels
    http: httpx.AsyncClient
    clock: Clock
    redis: aioredis.Redis


@dataclass
class Channels:
    """One adapter per gateway kind, sharing one HTTP client."""

    cloud: CloudChannel
    evolution: EvolutionChannel
    zapi: ZapiChannel
    console: ConsoleChannel

    def senders(self) -> dict[str, Sender]:
        return {kind: getattr(self, kind) for kind in CHANNELS}


@dataclass
class AIComponents:
    """The responder's collaborators: LLM (or the offline retrieval responder), knowledge,
    and the handoff summarizer (None: the template summary)."""

    llm: LLM
    embeddings: Embeddings
    knowledge: PgKnowledgeStore
    summarizer: Summarizer | None = None


@dataclass
class Container:
    """Everything a running process uses, made once and closed once."""

    settings: Settings
    store: Store
    http: httpx.AsyncClient
    channels: Channels
    senders: dict[str, Sender]  # what the dispatcher sends through
    directory: TenantDirectory
    ingestor: Ingestor
    ai: AIComponents
    clock: Clock
    access: Access  # users' and API keys' credentials, checked against current state
    tokens: JwtTokens
    redis: aioredis.Redis | None = None
    login_throttle: LoginThrottle | None = None  # None without Redis (nothing to count in)
    # What the container made (not what it was given), closed in reverse order.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def aclose(self) -> None:
        await self.ingestor.aclose()
        for closer in reversed(self.closers):
            await closer()
        await asyncio.to_thread(self.store.close)


def build_store(settings: Settings) -> Store:
    """The event store alone (no LLM, Kafka or Redis client), on a schema made sure of."""
    if not settings.database_url:
        raise ConfigurationError("URBANA_DATABASE_URL is not set")
    ensure_schema(settings.database_url, settings.database_schema)
    return open_store(
        settings.database_url,
        master_key_for(settings),
        schema=settings.database_schema,
        pool_size=settings.pool_size,
        wait_s=settings.store_wait_s,
    )


async def build(settings: Settings, **overrides: Unpack[Overrides]) -> Container:
    """Open pools and clients; start the ingest writer."""
    import httpx

    from urbana.adapters.channels.cloud import CloudChannel
    from urbana.adapters.channels.console import ConsoleChannel
    from urbana.adapters.channels.evolution import EvolutionChannel
    from urbana.adapters.channels.zapi import ZapiChannel
    from urbana.adapters.http.directory import TenantDirectory
    from urbana.adapters.ingest import Ingestor
    from urbana.adapters.passwords import Argon2Hasher
    from urbana.adapters.redis_coord import redis_client
    from urbana.adapters.tokens import JwtTokens
    from urbana.application.access import Access
    from urbana.application.ingest import StoreGate
    from urbana.application.ports import SystemClock

    jwt_secret = await asyncio.to_thread(jwt_secret_for, settings)
    store = await asyncio.to_thread(build_store, settings)
    closers: list[Callable[[], Awaitable[None]]] = []
    redis = overrides.get("redis")
    if redis is None and settings.redis_url:
        redis = redis_client(settings.redis_url)
        closers.append(redis.aclose)
    http = overrides.get("http")
    if http is None:
        http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))
        closers.append(http.aclose)
    send_timeout = settings.send_timeout_s
    channels = Channels(
        cloud=CloudChannel(http, timeout=send_timeout),
        evolution=EvolutionChannel(http, timeout=send_timeout),
        zapi=ZapiChannel(http, timeout=send_timeout),
        console=ConsoleChannel(),
    )
    # One gate for the webhook path: its tenant lookups and its commits.
    gate = StoreGate(settings.store_wait_s)
    ingestor = Ingestor(store.app, redis, gate=gate)
    ingestor.start()
    ai = await asyncio.to_thread(
        build_ai,
        settings,
        store,
        http,
        llm=overrides.get("llm"),
        embeddings=overrides.get("embeddings"),
    )
    return Container(
        settings=settings,
        store=store,
        http=http,
        channels=channels,
        senders={**channels.senders(), **overrides.get("senders", {})},
        directory=TenantDirectory(store.app, gate=gate),
        ingestor=ingestor,
        ai=ai,
        clock=overrides.get("clock") or SystemClock(),
        access=Access(store.app, Argon2Hasher()),
        tokens=JwtTokens(jwt_secret, settings.token_ttl_s),
        redis=redis,
        login_throttle=build_login_throttle(settings, redis),
        closers=closers,
    )


def build_login_throttle(s: Settings, redis: aioredis.Redis | None) -> LoginThrottle | None:
    """The failed sign-in limits of the settings, counted in Redis."""
    from urbana.adapters.rate_limit import RedisAttemptLimiter

    if redis is None:
        return None
    limits = LoginLimits(
        per_email=s.login_attempts_per_email,
        per_address=s.login_attempts_per_address,
        window_s=s.login_window_s,
    )
    # Per schema, so deployments (or test runs) sharing one Redis count apart.
    limiter = RedisAttemptLimiter(redis, prefix=f"urbana:{s.database_schema}")
    return LoginThrottle(limiter, limits)


def build_ai(
    settings: Settings,
    store: Store,
    http: httpx.AsyncClient,
    *,
    llm: LLM | None = None,
    embeddings: Embeddings | None = None,
) -> AIComponents:
    """OpenAI when a key is configured, else the offline retrieval responder."""
    from urbana.adapters.postgres.knowledge import PgKnowledgeStore

    if embeddings is None:
        embeddings = _embeddings(settings, http)
    if llm is None:
        llm = _llm(settings, http)
    return AIComponents(
        llm=llm,
        embeddings=embeddings,
        knowledge=PgKnowledgeStore(store.pool, embeddings),
        summarizer=_summarizer(settings, http),
    )


def _embeddings(settings: Settings, http: httpx.AsyncClient) -> Embeddings:
    from urbana.adapters.embeddings import LocalE5Embeddings, OpenAIEmbeddings

    if settings.embeddings != "openai":
        return LocalE5Embeddings()
    if settings.openai_api_key is None:
        raise ConfigurationError("URBANA_EMBEDDINGS=openai needs URBANA_OPENAI_API_KEY")
    return OpenAIEmbeddings(
        http,
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url or "https://api.openai.com/v1",
    )


def _summarizer(settings: Settings, http: httpx.AsyncClient) -> Summarizer | None:
    """The LLM writes handoff summaries when there is a key; the template does otherwise."""
    if settings.openai_api_key is None:
        return None
    from urbana.adapters.llm.summary import OpenAISummarizer

    return OpenAISummarizer(
        http,
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        model=settings.llm_model,
        timeout=min(settings.llm_timeout_s, 10.0),
    )


def _llm(settings: Settings, http: httpx.AsyncClient) -> LLM:
    if settings.openai_api_key is None:
        from urbana.adapters.llm.retrieval import RetrievalResponder

        return RetrievalResponder()
    from urbana.adapters.llm.openai_llm import OpenAILLM

    return OpenAILLM(
        http,
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        model=settings.llm_model,
        fallback_model=settings.llm_fallback_model,
        timeout=settings.llm_timeout_s,
    )


def build_live_feed(s: Settings, app: UrbanaApp | None = None) -> LiveFeed:
    """The API process's live feed (start it in the lifespan: `await feed.start()`).

    Given the process's application, the feed makes it forget each erased subject.
    """
    from urbana.adapters.live import LiveFeed
    from urbana.application.erasure import forget_erased

    if not s.database_url:
        raise ConfigurationError("URBANA_DATABASE_URL is not set")
    return LiveFeed(
        database_url=s.database_url,
        schema=s.database_schema,
        heartbeat_s=s.live_heartbeat_s,
        queue_size=s.live_queue_size,
        on_erased=forget_erased(app) if app is not None else None,
    )


def build_erasure(c: Container, *, gated: bool = False) -> Erasure:
    """Erasure and retention on the container's store, read models and Redis.

    `gated`: store calls go through the ingest's store gate (the API's bounded wait).
    """
    from urbana.adapters.postgres.erasure import PostgresSubjectRows
    from urbana.adapters.redis_erasure import RedisSubjectCache
    from urbana.application.erasure import Erasure

    cache = RedisSubjectCache(c.redis) if c.redis is not None else None
    rows = PostgresSubjectRows(c.store.pool)
    if not gated:
        return Erasure(c.store.app, rows, cache, c.clock)
    return Erasure(c.store.app, rows, cache, c.clock, run=c.ingestor.committer.gate.call)


def build_read_pool(s: Settings) -> AsyncConnectionPool[Any]:
    """The API process's pool for read-model queries (open it in the lifespan)."""
    from psycopg_pool import AsyncConnectionPool

    from urbana.projections.access import prepare_read_connection

    if not s.database_url:
        raise ConfigurationError("URBANA_DATABASE_URL is not set")
    return AsyncConnectionPool(
        conninfo(
            s.database_url,
            s.database_schema,
            wait_s=s.store_wait_s,
            statement_timeout_s=s.read_timeout_s,
        ),
        min_size=1,
        max_size=max(2, s.pool_size),
        timeout=s.store_wait_s,
        configure=prepare_read_connection,
        open=False,
    )

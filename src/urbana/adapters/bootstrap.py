"""The composition root: settings in, a wired `Container` out.

Called from FastAPI's lifespan and from the CLI; nothing is built at import time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import psycopg
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from urbana.adapters.channels.cloud import CloudChannel
from urbana.adapters.channels.console import ConsoleChannel
from urbana.adapters.channels.evolution import EvolutionChannel
from urbana.adapters.channels.zapi import ZapiChannel
from urbana.adapters.embeddings import LocalE5Embeddings, OpenAIEmbeddings
from urbana.adapters.http.directory import TenantDirectory
from urbana.adapters.ingest import Ingestor
from urbana.adapters.keys import master_key_for
from urbana.adapters.llm.openai_llm import OpenAILLM
from urbana.adapters.llm.retrieval import RetrievalResponder
from urbana.adapters.postgres.knowledge import PgKnowledgeStore
from urbana.adapters.postgres.store import Store, conninfo, is_store_fault, open_store
from urbana.adapters.redis_coord import redis_client
from urbana.application.ingest import StoreGate
from urbana.application.ports import LLM, Embeddings, Sender
from urbana.config import ConfigurationError, Settings

log = logging.getLogger(__name__)


@dataclass
class Channels:
    """One adapter per gateway kind, sharing one HTTP client."""

    cloud: CloudChannel
    evolution: EvolutionChannel
    zapi: ZapiChannel
    console: ConsoleChannel

    def senders(self) -> dict[str, Sender]:
        return {
            "cloud": self.cloud,
            "evolution": self.evolution,
            "zapi": self.zapi,
            "console": self.console,
        }


@dataclass
class AIComponents:
    """The responder's collaborators: LLM (or the offline retrieval responder), knowledge."""

    llm: LLM
    embeddings: Embeddings
    knowledge: PgKnowledgeStore


@dataclass
class Container:
    """Everything a running process uses, made once and closed once."""

    settings: Settings
    store: Store
    http: httpx.AsyncClient
    channels: Channels
    directory: TenantDirectory
    ingestor: Ingestor
    ai: AIComponents
    redis: aioredis.Redis | None = None
    extra_closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def aclose(self) -> None:
        for closer in reversed(self.extra_closers):
            await closer()
        await self.ingestor.aclose()
        await self.http.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await asyncio.to_thread(self.store.close)


def build_store(settings: Settings) -> Store:
    if not settings.database_url:
        raise ConfigurationError("URBANA_DATABASE_URL is not set")
    return open_store(
        settings.database_url,
        master_key_for(settings),
        schema=settings.database_schema,
        pool_size=settings.pool_size,
        wait_s=settings.store_wait_s,
    )


async def build(settings: Settings) -> Container:
    """Open pools and clients; start the ingest writer."""
    store = await asyncio.to_thread(build_store, settings)
    redis = redis_client(settings.redis_url) if settings.redis_url else None
    http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))
    send_timeout = settings.send_timeout_s
    channels = Channels(
        cloud=CloudChannel(http, timeout=send_timeout),
        evolution=EvolutionChannel(http, timeout=send_timeout),
        zapi=ZapiChannel(http, timeout=send_timeout),
        console=ConsoleChannel(),
    )
    # One gate for the webhook path: its tenant lookups and its commits.
    gate = StoreGate(settings.store_wait_s, is_fault=is_store_fault)
    ingestor = Ingestor(store.app, redis, gate=gate)
    ingestor.start()
    ai = await asyncio.to_thread(build_ai, settings, store, http)
    return Container(
        settings=settings,
        store=store,
        http=http,
        channels=channels,
        directory=TenantDirectory(store.app, gate=gate),
        ingestor=ingestor,
        ai=ai,
        redis=redis,
    )


def build_ai(settings: Settings, store: Store, http: httpx.AsyncClient) -> AIComponents:
    """OpenAI when a key is configured, else the offline retrieval responder."""
    embeddings: Embeddings
    if settings.embeddings == "openai":
        if settings.openai_api_key is None:
            raise ConfigurationError("URBANA_EMBEDDINGS=openai needs URBANA_OPENAI_API_KEY")
        embeddings = OpenAIEmbeddings(
            http,
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url or "https://api.openai.com/v1",
        )
    else:
        embeddings = LocalE5Embeddings()
    knowledge = PgKnowledgeStore(store.pool, embeddings)
    knowledge.create_tables()
    llm: LLM
    if settings.openai_api_key is not None:
        llm = OpenAILLM(
            http,
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            model=settings.llm_model,
            fallback_model=settings.llm_fallback_model,
            timeout=settings.llm_timeout_s,
        )
    else:
        llm = RetrievalResponder()
    return AIComponents(llm=llm, embeddings=embeddings, knowledge=knowledge)


async def check_postgres(settings: Settings) -> None:
    """Raise if PostgreSQL does not answer."""
    if not settings.database_url:
        raise ConfigurationError("no database configured")

    def ping() -> None:
        with psycopg.connect(conninfo(settings.database_url or ""), connect_timeout=2) as conn:
            conn.execute("SELECT 1")

    await asyncio.to_thread(ping)


async def check_kafka(settings: Settings) -> None:
    """Raise if the Kafka bootstrap server does not answer a metadata request."""
    if not settings.kafka_bootstrap:
        raise ConfigurationError("no Kafka bootstrap configured")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=2000)
    try:
        await asyncio.wait_for(admin.start(), timeout=3)
        await asyncio.wait_for(admin.list_topics(), timeout=3)
    finally:
        await admin.close()


async def check_redis(client: aioredis.Redis | None) -> None:
    """Raise if Redis does not answer PING."""
    if client is None:
        raise ConfigurationError("no Redis configured")
    await asyncio.wait_for(client.ping(), timeout=2)

"""The composition root owns what it makes, and only that."""

from __future__ import annotations

import base64
import dataclasses
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from urbana.adapters.bootstrap import build, build_live_feed
from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.kafka.workers import WorkerMetrics
from urbana.adapters.llm.summary import OpenAISummarizer
from urbana.adapters.redis_coord import redis_client
from urbana.adapters.roles import build_role
from urbana.application.ai import LLMResult, Prompt, Usage
from urbana.config import Settings
from urbana.domain.reply import AIDecision

pytestmark = pytest.mark.integration


class ConstantEmbeddings:
    model = "constant"
    dim = 384

    async def embed_query(self, text: str) -> list[float]:
        return [1.0] + [0.0] * (self.dim - 1)

    async def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        return [await self.embed_query(t) for t in texts]


class SilentLLM:
    async def complete(self, prompt: Prompt) -> LLMResult:
        decision = AIDecision(reply="", intent="none", confidence=0.0, should_handoff=True)
        return LLMResult(decision=decision, usage=Usage(model="silent"))


def settings(services: ServiceUrls, schema: str, master_key: bytes) -> Settings:
    return Settings(
        env="test",
        database_url=services.postgres,
        database_schema=schema,
        redis_url=services.redis,
        master_key=SecretStr(base64.urlsafe_b64encode(master_key).decode()),
        jwt_secret=SecretStr("bootstrap-test-jwt-secret-" + "j" * 32),
        pool_size=2,
    )


async def test_what_it_is_given_it_uses_and_leaves_open(
    services: ServiceUrls, schema: str, master_key: bytes
) -> None:
    http = httpx.AsyncClient()
    redis = redis_client(services.redis)
    llm, embeddings = SilentLLM(), ConstantEmbeddings()
    container = await build(
        settings(services, schema, master_key),
        llm=llm,
        embeddings=embeddings,
        http=http,
        redis=redis,
    )
    try:
        assert container.ai.llm is llm
        assert container.ai.embeddings is embeddings
        assert container.http is http
        assert container.redis is redis
        # The gateway channels send through the given client.
        assert container.senders["cloud"] is container.channels.cloud
    finally:
        await container.aclose()
    try:
        assert not http.is_closed
        assert await redis.ping()
    finally:
        await http.aclose()
        await redis.aclose()


async def test_what_it_makes_it_closes(
    services: ServiceUrls, schema: str, master_key: bytes
) -> None:
    container = await build(settings(services, schema, master_key), embeddings=ConstantEmbeddings())
    assert not container.http.is_closed
    await container.aclose()
    assert container.http.is_closed


def test_processes_starting_at_once_share_one_jwt_secret(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from urbana.adapters.keys import jwt_secret_for;"
        "from urbana.config import Settings;"
        "sys.stdout.write(jwt_secret_for(Settings(data_dir=Path(sys.argv[1]))).decode())"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    secrets = {proc.communicate(timeout=60)[0] for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert secrets == {(tmp_path / "jwt.key").read_text().strip()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jwt.key"]


async def test_the_notifier_role_the_summarizer_and_the_live_feed_are_built_from_settings(
    services: ServiceUrls, schema: str, master_key: bytes
) -> None:
    base = settings(services, schema, master_key)
    offline = await build(base, embeddings=ConstantEmbeddings(), llm=SilentLLM())
    try:
        assert offline.ai.summarizer is None  # no key: the template summary
    finally:
        await offline.aclose()
    keyed = base.model_copy(
        update={
            "openai_api_key": SecretStr("sk-test"),
            "kafka_bootstrap": services.kafka,
            "panel_url": "https://painel.example.com/panel",
        }
    )
    container = await build(keyed, embeddings=ConstantEmbeddings(), llm=SilentLLM())
    try:
        assert isinstance(container.ai.summarizer, OpenAISummarizer)
        role = build_role(container, "notifier")
        assert role.metrics() == {"notifier": dataclasses.asdict(WorkerMetrics())}
    finally:
        await container.aclose()
    feed = build_live_feed(base)
    async with feed:
        assert feed.metrics()["subscribers"] == 0

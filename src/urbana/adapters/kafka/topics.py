"""Kafka topic definitions (infra/kafka/topics.yaml) and their idempotent creation.

`init_topics` creates the topics that are missing and leaves existing ones alone: it
never changes partitions or configs of a live topic. A broker that refuses a config
(the dev broker may not know every Kafka setting) gets the topic without it, and the
refusal is logged, so `urbana kafka init` works against Apache Kafka and Tansu alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from urbana.errors import ConfigurationError, Unavailable

log = logging.getLogger(__name__)

EVENTS_TOPIC = "urbana.events.v1"
DLQ_TOPIC = "urbana.events.dlq"
TOPICS_FILE = Path("infra") / "kafka" / "topics.yaml"

_ALREADY_EXISTS = 36  # TOPIC_ALREADY_EXISTS
# What says the broker (or the way to it) is down or slow.
BROKER_FAULTS = (KafkaError, OSError, TimeoutError)


@dataclass(frozen=True)
class TopicSpec:
    """One topic: name, partitions, replication factor and topic configs."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)
    production: Mapping[str, Any] = field(default_factory=dict)

    def for_profile(self, profile: str) -> TopicSpec:
        """The spec with the `production` overrides applied when `profile` asks for them."""
        if profile != "production" or not self.production:
            return self
        return replace(
            self,
            partitions=int(self.production.get("partitions", self.partitions)),
            replication_factor=int(
                self.production.get("replication_factor", self.replication_factor)
            ),
            config={**self.config, **_str_map(self.production.get("config", {}))},
        )

    def renamed(self, name: str) -> TopicSpec:
        return replace(self, name=name)


# The same topics as infra/kafka/topics.yaml, for an installed package without the repo
# (a test keeps the two equal). Both are kept forever: the events are a replayable
# public log, and a dead letter waits until someone retries it.
_KEEP_FOREVER = {
    "cleanup.policy": "delete",
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "max.message.bytes": "8388608",
}
_REPLICATED = {
    "replication_factor": 3,
    "config": {"min.insync.replicas": "2", "unclean.leader.election.enable": "false"},
}
BUILTIN_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(EVENTS_TOPIC, 12, 1, config=_KEEP_FOREVER, production=_REPLICATED),
    TopicSpec(DLQ_TOPIC, 3, 1, config=_KEEP_FOREVER, production=_REPLICATED),
)


def _str_map(raw: object) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"expected a mapping, got {raw!r}")
    return {str(k): str(v) for k, v in raw.items()}


def load_topics(topics_file: Path | str | None = None) -> list[TopicSpec]:
    """The topic specs in `topics_file` (default: found by `find_topics_file`, else builtin)."""
    path = Path(topics_file) if topics_file is not None else find_topics_file()
    if path is None:
        return list(BUILTIN_TOPICS)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, Mapping) or not isinstance(doc.get("topics"), list):
        raise ConfigurationError(f"{path}: expected a `topics:` list")
    specs = []
    for entry in doc["topics"]:
        try:
            specs.append(
                TopicSpec(
                    name=str(entry["name"]),
                    partitions=int(entry["partitions"]),
                    replication_factor=int(entry.get("replication_factor", 1)),
                    config=_str_map(entry.get("config", {})),
                    production=dict(entry.get("production") or {}),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"{path}: bad topic entry {entry!r}: {exc}") from exc
    return specs


def find_topics_file(start: Path | None = None) -> Path | None:
    """infra/kafka/topics.yaml in the working directory or one of its parents."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / TOPICS_FILE
        if candidate.is_file():
            return candidate
    return None


def spec_for(topic: str, specs: Iterable[TopicSpec]) -> TopicSpec:
    """The spec of `topic`; a topic not in the file is shaped like the events topic."""
    specs = list(specs)
    for spec in specs:
        if spec.name == topic:
            return spec
    template = next((s for s in specs if s.name == EVENTS_TOPIC), BUILTIN_TOPICS[0])
    return template.renamed(topic)


async def create_topics(bootstrap: str, specs: Iterable[TopicSpec]) -> list[str]:
    """Create the missing topics among `specs`; returns the names created."""
    wanted = list(specs)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        created = []
        for spec in wanted:
            if spec.name in existing:
                continue
            if await _create_one(admin, spec):
                created.append(spec.name)
        return created
    except BROKER_FAULTS as exc:
        raise Unavailable(f"creating topics on {bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()


async def _create_one(admin: AIOKafkaAdminClient, spec: TopicSpec) -> bool:
    code, message = await _send_create(admin, spec, dict(spec.config))
    if code != 0 and code != _ALREADY_EXISTS and spec.config:
        # Not every broker knows every topic config (Tansu ignores some, may refuse
        # others): create the topic anyway and say which settings were not applied.
        log.warning(
            "broker refused configs %s for %s (error %d: %s); creating it without them",
            dict(spec.config),
            spec.name,
            code,
            message,
        )
        code, message = await _send_create(admin, spec, {})
    if code == _ALREADY_EXISTS:
        return False  # someone (another process, broker auto-creation) was first
    if code != 0:
        raise Unavailable(f"cannot create topic {spec.name}: error {code}: {message}")
    log.info("created topic %s (%d partitions)", spec.name, spec.partitions)
    return True


async def _send_create(
    admin: AIOKafkaAdminClient, spec: TopicSpec, config: dict[str, str]
) -> tuple[int, str | None]:
    response = await admin.create_topics(
        [NewTopic(spec.name, spec.partitions, spec.replication_factor, topic_configs=config)]
    )
    for error in response.topic_errors:
        name, code = error[0], int(error[1])
        if name == spec.name:
            return code, (str(error[2]) if len(error) > 2 and error[2] else None)
    raise Unavailable(f"no answer for topic {spec.name} in {response!r}")


async def ensure_topic(
    bootstrap: str, topic: str, topics_file: Path | str | None = None
) -> tuple[bool, int]:
    """Create `topic` if it is missing (shaped by `topics_file`); (created, its partitions)."""
    spec = spec_for(topic, load_topics(topics_file))
    created = await create_topics(bootstrap, [spec])
    counts = await partition_counts(bootstrap)
    partitions = counts.get(topic, spec.partitions)
    if partitions != spec.partitions:
        log.warning(
            "topic %s has %d partitions, topics.yaml says %d (auto-created by the broker?)",
            topic,
            partitions,
            spec.partitions,
        )
    return bool(created), partitions


async def init_topics(
    bootstrap: str, topics_file: Path | str | None = None, *, profile: str = "dev"
) -> list[str]:
    """Create every topic of `topics_file` that is missing (idempotent); returns those created."""
    specs = [spec.for_profile(profile) for spec in load_topics(topics_file)]
    return await create_topics(bootstrap, specs)


async def partition_counts(bootstrap: str) -> dict[str, int]:
    """Partitions per existing topic (a metadata request for all topics creates none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
        topics = await admin.describe_topics()
    except BROKER_FAULTS as exc:
        raise Unavailable(f"describing topics on {bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in topics}

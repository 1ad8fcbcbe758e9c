"""The one way we produce to Kafka: the relay, the republisher and the dead-letter path.

Every record is sent with `acks=all` and waited for; a batch is acknowledged only when
every record of it is. Producers are idempotent where the broker allows it; the dev
broker (Tansu) refuses, and then the producer runs without idempotence (see
`Producer.start`). An envelope becomes its record with `to_record`: key = stream id,
the envelope's JSON, and headers for type, schema version, position, tenant and a W3C
`traceparent`. The broker's faults reach callers as `urbana.errors.Unavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from aiokafka import AIOKafkaProducer
from aiokafka.errors import UnknownError, UnsupportedVersionError

from urbana.adapters.kafka.topics import BROKER_FAULTS
from urbana.application.envelope import Envelope
from urbana.errors import Unavailable

log = logging.getLogger(__name__)

Idempotence = Literal["auto", "on", "off"]

# Knowledge documents travel inside their events (up to 2 MB of text): allow records
# well above Kafka's 1 MB default (topics.yaml raises the topic's max.message.bytes).
MAX_RECORD_BYTES = 8 * 1024 * 1024

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record: key, value, headers."""

    key: bytes | None
    value: bytes | None
    headers: Headers


def traceparent(event_id: str) -> str:
    """A W3C traceparent for an event stored without one (appended while tracing was
    off): the trace id is the event id, so a republished event keeps it."""
    span_id = os.urandom(8).hex()
    return f"00-{UUID(event_id).hex}-{span_id}-01"


def to_record(envelope: Envelope, trace: str | None = None) -> Record:
    """The Kafka record of an envelope: key = stream id, JSON value, headers.

    `trace` is the traceparent the consumers continue (the relay's span, or the one
    stored with the event; see `urbana.adapters.tracing`).
    """
    headers = [
        ("event_type", envelope.type.encode()),
        ("schema_version", str(envelope.schema_version).encode()),
        ("position", str(envelope.position).encode()),
        ("tenant_id", (envelope.tenant_id or "").encode()),
        ("traceparent", (trace or traceparent(envelope.event_id)).encode()),
        ("event_id", envelope.event_id.encode()),
        ("content-type", b"application/json"),
    ]
    return Record(envelope.stream_id.encode(), envelope.to_json(), headers)


class Producer:
    """An `acks=all` producer, started on first use; `reset()` makes the next use start anew."""

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str,
        idempotence: Idempotence = "auto",
        request_timeout_ms: int = 15_000,
        linger_ms: int = 0,
    ) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.idempotence: Idempotence = idempotence
        self.request_timeout_ms = request_timeout_ms
        self.linger_ms = linger_ms
        self.idempotent: bool | None = None  # whether it runs idempotent, once started
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> AIOKafkaProducer:
        """The started producer (idempotent when the broker allows it and we asked)."""
        if self._producer is not None:
            return self._producer
        try:
            return await self._start()
        except BROKER_FAULTS as exc:
            raise Unavailable(f"starting a producer on {self.bootstrap}: {exc!r}") from exc

    async def _start(self) -> AIOKafkaProducer:
        modes = {"auto": (True, False), "on": (True,), "off": (False,)}[self.idempotence]
        if self.idempotent is False:
            modes = (False,)  # this broker refused once already
        for idempotent in modes:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id=self.client_id,
                acks="all",
                enable_idempotence=idempotent,
                request_timeout_ms=self.request_timeout_ms,
                retry_backoff_ms=200,
                linger_ms=self.linger_ms,
                max_request_size=MAX_RECORD_BYTES,
            )
            try:
                await producer.start()
            except (UnknownError, UnsupportedVersionError) as exc:
                await producer.stop()
                if not idempotent or self.idempotence == "on":
                    raise
                # Tansu 0.6 answers InitProducerId v0 (the only version aiokafka speaks)
                # with an error. Without idempotence aiokafka still keeps one request in
                # flight per partition, so order holds; a retry may duplicate, which the
                # at-least-once contract allows.
                log.warning(
                    "broker %s refuses idempotent producers (%r); "
                    "publishing with acks=all without idempotence",
                    self.bootstrap,
                    exc,
                )
                continue
            except BaseException:
                await producer.stop()
                raise
            self.idempotent = idempotent
            self._producer = producer
            return producer
        raise AssertionError("unreachable")

    async def send_all(self, topic: str, records: Sequence[Record]) -> list[tuple[int, int]]:
        """Send every record and wait for all acknowledgements; (partition, offset) each."""
        producer = await self.start()
        try:
            return await _send_all(producer, topic, records)
        except BROKER_FAULTS as exc:
            raise Unavailable(f"publishing to {topic}: {exc!r}") from exc

    async def reset(self) -> None:
        """Stop the producer; the next send starts a fresh one (which re-reads the topics)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def close(self) -> None:
        """Stop the producer (after what it holds is sent)."""
        await self.reset()


async def _send_all(
    producer: AIOKafkaProducer, topic: str, records: Sequence[Record]
) -> list[tuple[int, int]]:
    futures: list[asyncio.Future[Any]] = []
    try:
        for record in records:
            futures.append(
                await producer.send(topic, record.value, key=record.key, headers=record.headers)
            )
    finally:
        # Even when a send() failed, wait for those already queued: none is left unawaited.
        results = await asyncio.gather(*futures, return_exceptions=True)
    acks: list[tuple[int, int]] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        acks.append((result.partition, result.offset))
    return acks

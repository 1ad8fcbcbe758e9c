"""The public event envelope: what Kafka consumers, projectors and replay all see.

Built from a stored event (notification) without decrypting anything: personal
fields stay sealed under `encrypted`, with the subject key id and field names in
clear. Documented as JSON Schema in infra/kafka/schemas/ (envelope version 1).

`envelope_from_stored` is the only way a stored record becomes an envelope: the relay,
the replay and the republisher all get theirs from it (through
`urbana.adapters.postgres.log`). It runs once per event in replay's hot loop, hence
the hand-unrolled code: no UUID objects, no isinstance chains.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from hashlib import sha1
from typing import Any
from uuid import UUID

import orjson

ENVELOPE_VERSION = 1
# Event ids are uuid5(EVENT_ID_NAMESPACE, "<stream id>:<stream version>"): stable, so a
# republished event keeps its id.
EVENT_ID_NAMESPACE = UUID("0b8c1d2e-7f6a-4e5d-9c3b-2a1f0e9d8c7b")
_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes
_NESTED = (dict, list)


@dataclass(frozen=True, slots=True)
class Envelope:
    event_id: str
    type: str  # e.g. "MessageReceived"
    aggregate: str  # e.g. "Conversation"
    schema_version: int
    stream_id: str
    stream_version: int
    position: int  # global position (notification id) in the event store
    tenant_id: str | None
    occurred_at: str  # ISO 8601, UTC
    data: dict[str, Any]
    encrypted: dict[str, Any] | None  # {"key_id", "fields", "ciphertext"} or None
    # The W3C traceparent stored with the event (urbana.application.store), for the relay;
    # not part of the JSON: on Kafka it travels in the record's headers.
    traceparent: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "envelope_version": ENVELOPE_VERSION,
                "event_id": self.event_id,
                "type": self.type,
                "aggregate": self.aggregate,
                "schema_version": self.schema_version,
                "stream_id": self.stream_id,
                "stream_version": self.stream_version,
                "position": self.position,
                "tenant_id": self.tenant_id,
                "occurred_at": self.occurred_at,
                "data": self.data,
                "encrypted": self.encrypted,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Envelope:
        doc = orjson.loads(raw)
        doc.pop("envelope_version", None)
        return cls(**doc)

    @property
    def occurred(self) -> datetime:
        return datetime.fromisoformat(self.occurred_at)


@lru_cache(maxsize=1024)
def event_names(topic: str) -> tuple[str, str]:
    """(aggregate, event type) from a stored topic like 'pkg.mod:Conversation.MessageReceived'."""
    qualname = topic.split(":", 1)[-1]
    aggregate, _, name = qualname.rpartition(".")
    return aggregate, name


def envelope_from_stored(
    position: int,
    stream_id: str,
    stream_version: int,
    topic: str,
    state: bytes,
    tenant_id: str | None = None,
    *,
    event_id: bool = True,
) -> Envelope:
    """The public envelope of one stored event (personal fields stay sealed).

    The tenant is the one the event records; `tenant_id` (the stream's) stands in for
    records that do not carry one. `event_id=False` leaves the event id empty:
    projections never read it, and hashing it is a fifth of the decoding cost.
    """
    raw = orjson.loads(state)
    sealed = raw.pop("_pii_", None)
    trace = raw.pop("_trace_", None)
    timestamp = raw.pop("timestamp", None)
    schema_version = raw.pop("class_version", 1)
    raw.pop("originator_topic", None)
    data = {k: (_plain(v) if type(v) in _NESTED else v) for k, v in raw.items()}
    tenant = data.get("tenant_id")
    if tenant is None:
        tenant = tenant_id
    aggregate, name = event_names(topic)
    return Envelope(
        event_id=_event_id(stream_id, stream_version) if event_id else "",
        type=name,
        aggregate=aggregate,
        schema_version=int(schema_version),
        stream_id=stream_id,
        stream_version=stream_version,
        position=position,
        tenant_id=str(tenant) if tenant is not None else None,
        occurred_at=str(_plain(timestamp)),
        data=data,
        encrypted=(
            {"key_id": sealed["k"], "fields": sealed["f"], "ciphertext": sealed["c"]}
            if sealed
            else None
        ),
        traceparent=trace,
    )


def _plain(value: Any) -> Any:
    """Tagged store values to plain JSON (uuid, datetime and decimal as strings)."""
    kind = type(value)
    if kind is dict:
        if len(value) == 2 and "_type_" in value and "_data_" in value:
            data = value["_data_"]
            return _stored_uuid_text(data) if value["_type_"] == "uuid" else data
        return {k: _plain(v) for k, v in value.items()}
    if kind is list:
        return [_plain(v) for v in value]
    return value


# Since every event names its tenant, most uuids in a page repeat (tenant, stream, lead).
@lru_cache(maxsize=65_536)
def _stored_uuid_text(data: str) -> str:
    """A stored uuid (hex) as canonical text."""
    return _uuid_text(data.lower())


def _uuid_text(hex32: str) -> str:
    if len(hex32) != 32:
        return str(UUID(hex32))
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


def _event_id(stream_id: str, version: int) -> str:
    """uuid5(EVENT_ID_NAMESPACE, "<stream>:<version>") as text, without building UUIDs."""
    digest = bytearray(sha1(_NAMESPACE_BYTES + f"{stream_id}:{version}".encode()).digest()[:16])  # noqa: S324
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return _uuid_text(digest.hex())

"""The public event envelope: what Kafka consumers, projectors and replay all see.

Built from a stored event (notification) without decrypting anything: personal
fields stay sealed under `encrypted`, with the subject key id and field names in
clear. Documented as JSON Schema in infra/kafka/schemas/ (schema version 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

import orjson

ENVELOPE_VERSION = 1
_EVENT_ID_NS = UUID("0b8c1d2e-7f6a-4e5d-9c3b-2a1f0e9d8c7b")
_META = ("timestamp", "originator_topic", "class_version")


def _plain(value: Any) -> Any:
    """Tagged store values to plain JSON (uuid and datetime as strings)."""
    if isinstance(value, dict):
        if len(value) == 2 and "_type_" in value and "_data_" in value:
            return value["_data_"] if value["_type_"] != "uuid" else str(UUID(value["_data_"]))
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


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


def event_names(topic: str) -> tuple[str, str]:
    """(aggregate, event type) from a stored topic like 'pkg.mod:Conversation.MessageReceived'."""
    qualname = topic.split(":", 1)[-1]
    aggregate, _, name = qualname.rpartition(".")
    return aggregate, name


def envelope_from_stored(
    *,
    position: int,
    stream_id: UUID,
    stream_version: int,
    topic: str,
    state: bytes,
    tenant_id: UUID | str | None,
) -> Envelope:
    """The public envelope of one stored event (personal fields stay sealed)."""
    raw = orjson.loads(state)
    aggregate, name = event_names(topic)
    timestamp = _plain(raw.get("timestamp"))
    schema_version = int(raw.get("class_version", 1))
    sealed = raw.pop("_pii_", None)
    data = {k: _plain(v) for k, v in raw.items() if k not in _META}
    if tenant_id is None and "tenant_id" in data:
        tenant_id = data["tenant_id"]
    encrypted = (
        {"key_id": sealed["k"], "fields": sealed["f"], "ciphertext": sealed["c"]}
        if sealed
        else None
    )
    return Envelope(
        event_id=str(uuid5(_EVENT_ID_NS, f"{stream_id}:{stream_version}")),
        type=name,
        aggregate=aggregate,
        schema_version=schema_version,
        stream_id=str(stream_id),
        stream_version=stream_version,
        position=position,
        tenant_id=str(tenant_id) if tenant_id is not None else None,
        occurred_at=str(timestamp),
        data=data,
        encrypted=encrypted,
    )

"""A data subject's records: the values of a lookup and an export, and how stored records
are opened into them (see urbana.application.privacy, which uses them)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import orjson

from urbana.application.envelope import event_names
from urbana.application.ports import StoredRecord, SubjectCipher
from urbana.application.store import PII_KEY, TRACE_KEY
from urbana.domain.channels import CHANNELS
from urbana.domain.contacts import (
    contact_key,
    conversation_id_for,
    lead_id_for,
    message_ref_id_for,
    phone_lookup_forms,
)
from urbana.domain.errors import InvalidInput
from urbana.domain.pii import ERASED

Rendering = Literal["json", "html"]
EXPORT_VERSION = 1

# ------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class SubjectQuery:
    """How the caller names the subject: exactly one of phone, lead id, contact id."""

    phone: str | None = None
    lead_id: UUID | None = None
    contact_id: str | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.phone, self.lead_id, self.contact_id) if v is not None]
        if len(given) != 1:
            raise InvalidInput("name the subject by exactly one of phone, lead_id, contact_id")

    def candidates(self, tenant_id: UUID) -> tuple[list[UUID], list[UUID]]:
        """(lead ids, conversation ids) the subject's streams may have; InvalidInput if bad."""
        if self.lead_id is not None:
            return [self.lead_id], []
        if self.phone is not None:
            forms = phone_lookup_forms(self.phone)
            return [lead_id_for(tenant_id, "phone:" + form) for form in forms], []
        assert self.contact_id is not None
        key = contact_key(self.contact_id)
        return [lead_id_for(tenant_id, key)], [
            conversation_id_for(tenant_id, channel, key) for channel in CHANNELS
        ]


@dataclass(frozen=True, slots=True)
class ExportedEvent:
    """One event of the subject, its personal fields opened (or `ERASED`)."""

    position: int
    stream_id: str
    aggregate: str
    type: str
    schema_version: int
    stream_version: int
    occurred_at: str
    data: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "stream_id": self.stream_id,
            "aggregate": self.aggregate,
            "type": self.type,
            "schema_version": self.schema_version,
            "stream_version": self.stream_version,
            "occurred_at": self.occurred_at,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class ConversationFacts:
    id: UUID
    channel: str
    contact: Any  # the address on the channel (personal: `ERASED` once erased)
    started_at: str
    last_event_at: str
    events: int
    messages: int  # inbound and outbound


@dataclass(frozen=True, slots=True)
class Subject:
    """A lead and every conversation of it, as the store holds them now."""

    tenant_id: UUID
    lead_id: UUID
    key: Any
    phone: Any
    name: Any
    score: int
    stage: str
    created_at: str
    conversations: list[ConversationFacts]
    message_refs: list[str]  # the MessageRef stream ids
    erased: bool  # its key is gone: every personal field reads `ERASED`

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant_id": str(self.tenant_id),
            "lead_id": str(self.lead_id),
            "key": self.key,
            "phone": self.phone,
            "name": self.name,
            "score": self.score,
            "stage": self.stage,
            "created_at": self.created_at,
            "erased": self.erased,
            "conversations": [
                {
                    "id": str(c.id),
                    "channel": c.channel,
                    "contact": c.contact,
                    "started_at": c.started_at,
                    "last_event_at": c.last_event_at,
                    "events": c.events,
                    "messages": c.messages,
                }
                for c in self.conversations
            ],
            "message_refs": len(self.message_refs),
        }


@dataclass(frozen=True, slots=True)
class SubjectExport:
    subject: Subject
    events: list[ExportedEvent]
    exported_at: datetime
    exported_by: str
    role: str
    purpose: str | None
    rendering: Rendering = "json"

    def as_dict(self) -> dict[str, Any]:
        """The portable document (what `format=json` answers)."""
        return {
            "export_version": EXPORT_VERSION,
            "tenant_id": str(self.subject.tenant_id),
            "lead_id": str(self.subject.lead_id),
            "exported_at": self.exported_at.isoformat(),
            "exported_by": self.exported_by,
            "role": self.role,
            "purpose": self.purpose,
            "subject": self.subject.as_dict(),
            "events": [e.as_dict() for e in self.events],
        }


# ------------------------------------------------------------------ decoding

_MESSAGES = frozenset({"MessageReceived", "OutboundMessageQueued"})
# Where a conversation's events name the provider ids that key its MessageRef streams.
_PROVIDER_IDS = {
    "MessageReceived": "provider_message_id",
    "OutboundMessageSent": "provider_message_id",
    "OutboundMessageQueued": "external_provider_id",
}


# The transcoder writes UUIDs, datetimes and decimals as tagged objects, always spelt the
# same way (orjson, keys in insertion order); they are turned into plain strings on the
# raw bytes, in C, before parsing. That keeps an export of 10,000 events off a Python-level
# walk of every value (see bench/export.py).
_TAGGED_UUID = re.compile(rb'\{"_type_":"uuid","_data_":"([0-9a-fA-F]{32})"\}')
_TAGGED_TEXT = re.compile(rb'\{"_type_":"(?:datetime|decimal)","_data_":("[^"\\]*")\}')


def _dashed(match: re.Match[bytes]) -> bytes:
    h = match.group(1).lower()
    return b'"%s-%s-%s-%s-%s"' % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def _quoted(match: re.Match[bytes]) -> bytes:
    return match.group(1)  # a function: `re` expands a template in Python, slower


def _plain_json(raw: bytes) -> Any:
    if b'"_type_"' in raw:
        raw = _TAGGED_UUID.sub(_dashed, _TAGGED_TEXT.sub(_quoted, raw))
    return orjson.loads(raw)


def _opened(cipher: SubjectCipher, subject: UUID, sealed: dict[str, Any]) -> dict[str, Any]:
    """The personal fields of a sealed record as plain JSON values, or `ERASED` each."""
    plaintext = cipher.open(subject, base64.b64decode(sealed["c"]))
    if plaintext is None:
        return dict.fromkeys(sealed["f"], ERASED)
    opened: dict[str, Any] = _plain_json(plaintext)
    return opened


def open_records(cipher: SubjectCipher, records: Iterable[StoredRecord]) -> list[ExportedEvent]:
    """The records as exported events, in the order given, personal fields opened."""
    out = []
    subjects: dict[str, UUID] = {}
    for r in records:
        data: dict[str, Any] = _plain_json(r.state)
        sealed = data.pop(PII_KEY, None)
        data.pop(TRACE_KEY, None)  # how it was traced is not the subject's data
        occurred = data.pop("timestamp", None)
        version = data.pop("class_version", 1)
        data.pop("originator_topic", None)
        if sealed is not None:
            key = sealed["k"]
            subject = subjects.get(key) or subjects.setdefault(key, UUID(key))
            data.update(_opened(cipher, subject, sealed))
        aggregate, name = event_names(r.topic)
        out.append(
            ExportedEvent(
                position=r.position,
                stream_id=r.stream_id,
                aggregate=aggregate,
                type=name,
                schema_version=int(version),
                stream_version=r.version,
                occurred_at=str(occurred),
                data=data,
            )
        )
    return out


def by_stream(events: Iterable[ExportedEvent]) -> dict[str, list[ExportedEvent]]:
    streams: dict[str, list[ExportedEvent]] = {}
    for e in events:
        streams.setdefault(e.stream_id, []).append(e)
    return streams


def lead_facts(events: list[ExportedEvent], tenant_id: UUID) -> dict[str, Any] | None:
    """The lead folded from its events; None unless its stream is this tenant's lead."""
    if not events or events[0].type != "LeadCreated" or events[0].aggregate != "Lead":
        return None
    first = events[0]
    if first.data.get("tenant_id") != str(tenant_id):
        return None
    facts: dict[str, Any] = {
        "key": first.data.get("key"),
        "phone": first.data.get("phone"),
        "name": first.data.get("name"),
        "score": 0,
        "stage": "new",
        "created_at": first.occurred_at,
    }
    for e in events[1:]:
        if e.type == "LeadScored":
            facts["score"] = e.data.get("score", facts["score"])
        elif e.type == "LeadStageChanged":
            facts["stage"] = e.data.get("to_stage", facts["stage"])
        elif e.type == "LeadProfileUpdated" and e.data.get("name"):
            facts["name"] = e.data["name"]
        elif e.type == "SubjectErased":
            # Once erased, neither the key nor the view names its conversations: this does.
            facts["erased_conversations"] = [UUID(str(c)) for c in e.data["conversation_ids"]]
    return facts


def conversation_facts(
    events: list[ExportedEvent], tenant_id: UUID, lead_id: UUID
) -> ConversationFacts | None:
    """The conversation if its stream is one of this lead's, in this tenant."""
    if not events or events[0].type != "ConversationStarted":
        return None
    data = events[0].data
    if data.get("tenant_id") != str(tenant_id) or data.get("lead_id") != str(lead_id):
        return None
    return ConversationFacts(
        id=UUID(events[0].stream_id),
        channel=str(data.get("channel")),
        contact=data.get("contact"),
        started_at=events[0].occurred_at,
        last_event_at=events[-1].occurred_at,
        events=len(events),
        messages=sum(1 for e in events if e.type in _MESSAGES),
    )


def message_ref_ids(tenant_id: UUID, channel: str, events: Iterable[ExportedEvent]) -> set[UUID]:
    """The MessageRef streams of the provider ids a conversation's events name."""
    found: set[UUID] = set()
    for e in events:
        name = _PROVIDER_IDS.get(e.type)
        provider_id = e.data.get(name) if name else None
        if isinstance(provider_id, str) and provider_id:
            found.add(message_ref_id_for(tenant_id, channel, provider_id))
    return found


# --------------------------------------------------------------- commands

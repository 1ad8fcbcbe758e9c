"""Data subject requests (LGPD Art. 18/19): find a subject, export all of it, record the export.

A subject is a lead. Its streams are found from natural keys, as their ids were made
(`urbana.domain.contacts`): the lead from the normalised phone or the contact key, its
conversations from the lead's key on every channel, its message refs from the provider
message ids its conversations name. A conversation whose contact is not the lead's key
(a `@lid` contact of a lead known by phone) cannot be derived, so the conversation view
is asked too (`SubjectStreams.conversations_of`); every candidate is checked against
the store, which decides. Everything is read from the event store through one port, so
an export does not depend on the read models being up to date.

Personal fields are opened with the subject's key on the way out; once the key is
destroyed they read `ERASED`. See docs/architecture.md, Privacy.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol
from uuid import UUID

import orjson

from urbana.application.envelope import event_names
from urbana.application.ports import Clock, SubjectCipher
from urbana.application.store import PII_KEY
from urbana.application.unit_of_work import StoreApp
from urbana.domain.channels import CHANNELS
from urbana.domain.contacts import (
    contact_key,
    conversation_id_for,
    lead_id_for,
    message_ref_id_for,
    normalise_phone,
)
from urbana.domain.errors import InvalidInput, NotFound
from urbana.domain.lead import MAX_PURPOSE, Lead
from urbana.domain.pii import ERASED

Rendering = Literal["json", "html"]
EXPORT_VERSION = 1

# -------------------------------------------------------------------- ports


class StoredRecord(NamedTuple):
    """One stored event as the store holds it (personal fields sealed)."""

    position: int
    stream_id: str  # as text: that is how the export writes it
    version: int
    topic: str
    state: bytes


class SubjectStreams(Protocol):
    """Reads a subject's streams whole, and where the read models put its conversations."""

    def records(self, stream_ids: Collection[UUID]) -> list[StoredRecord]:
        """Every stored event of these streams, in global (commit) order."""
        ...

    def conversations_of(self, tenant_id: UUID, lead_id: UUID) -> list[UUID]:
        """The conversations the conversation view attributes to the lead (may lag)."""
        ...


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
            return [lead_id_for(tenant_id, "phone:" + normalise_phone(self.phone))], []
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


def _by_stream(events: Iterable[ExportedEvent]) -> dict[str, list[ExportedEvent]]:
    streams: dict[str, list[ExportedEvent]] = {}
    for e in events:
        streams.setdefault(e.stream_id, []).append(e)
    return streams


def _lead_facts(events: list[ExportedEvent], tenant_id: UUID) -> dict[str, Any] | None:
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
    return facts


def _conversation_facts(
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


class PrivacyCommands(StoreApp):
    """The commands of data subject requests that append to the subject's stream."""

    def record_export(
        self, lead_id: UUID, *, by: str, role: str, purpose: str | None, rendering: str
    ) -> None:
        """Append `SubjectDataExported` to the lead (who, role, why; no personal data)."""
        self._on(
            Lead,
            lead_id,
            lambda lead: lead.record_export(by=by, role=role, purpose=purpose, rendering=rendering),
        )


class SubjectRequests:
    """Lookup and export of a data subject, over the store (`streams`) and its keys."""

    def __init__(
        self, app: PrivacyCommands, streams: SubjectStreams, cipher: SubjectCipher, clock: Clock
    ) -> None:
        self.app = app
        self.streams = streams
        self.cipher = cipher
        self.clock = clock

    def find(self, tenant_id: UUID, query: SubjectQuery) -> Subject:
        """The subject and its conversations; NotFound (also for another tenant's)."""
        return self._read(tenant_id, query)[0]

    def export(
        self,
        tenant_id: UUID,
        query: SubjectQuery,
        *,
        by: str,
        role: str,
        purpose: str | None,
        rendering: Rendering,
    ) -> SubjectExport:
        """Every event of the subject's streams in commit order, then `SubjectDataExported`.

        The export is recorded only after it was read in full, and handed out only after
        the record is durable: no export leaves without its record.
        """
        if purpose is not None and len(purpose) > MAX_PURPOSE:
            raise InvalidInput(f"the purpose has at most {MAX_PURPOSE} characters")
        subject, events = self._read(tenant_id, query)
        self.app.record_export(
            subject.lead_id, by=by, role=role, purpose=purpose, rendering=rendering
        )
        return SubjectExport(
            subject=subject,
            events=events,
            exported_at=self.clock.now(),
            exported_by=by,
            role=role,
            purpose=purpose,
            rendering=rendering,
        )

    def _read(self, tenant_id: UUID, query: SubjectQuery) -> tuple[Subject, list[ExportedEvent]]:
        lead_ids, conversation_ids = query.candidates(tenant_id)
        first = open_records(self.cipher, self.streams.records([*lead_ids, *conversation_ids]))
        streams = _by_stream(first)
        lead_id, facts = self._lead(tenant_id, lead_ids, conversation_ids, streams)
        if facts is None:
            raise NotFound("no such data subject")
        lead_events = streams.get(str(lead_id), [])
        if str(lead_id) not in streams:
            lead_events = open_records(self.cipher, self.streams.records([lead_id]))
        derived = set(conversation_ids)
        if isinstance(facts["key"], str) and facts["key"] != ERASED:
            derived |= {conversation_id_for(tenant_id, c, facts["key"]) for c in CHANNELS}
        derived |= set(self.streams.conversations_of(tenant_id, lead_id))
        missing = [c for c in derived if str(c) not in streams]
        if missing:
            streams.update(_by_stream(open_records(self.cipher, self.streams.records(missing))))
        conversations: list[ConversationFacts] = []
        ref_ids: set[UUID] = set()
        kept = list(lead_events)
        for conversation_id in derived:
            events = streams.get(str(conversation_id), [])
            found = _conversation_facts(events, tenant_id, lead_id)
            if found is not None:
                conversations.append(found)
                ref_ids |= message_ref_ids(tenant_id, found.channel, events)
                kept.extend(events)
        refs = open_records(self.cipher, self.streams.records(list(ref_ids))) if ref_ids else []
        kept.extend(e for e in refs if e.data.get("tenant_id") in (None, str(tenant_id)))
        kept.sort(key=lambda e: e.position)
        conversations.sort(key=lambda c: (c.started_at, str(c.id)))
        subject = Subject(
            tenant_id=tenant_id,
            lead_id=lead_id,
            key=facts["key"],
            phone=facts["phone"],
            name=facts["name"],
            score=int(facts["score"]),
            stage=str(facts["stage"]),
            created_at=str(facts["created_at"]),
            conversations=conversations,
            message_refs=list({e.stream_id for e in refs}),
            erased=facts["key"] == ERASED,
        )
        return subject, kept

    def _lead(
        self,
        tenant_id: UUID,
        lead_ids: list[UUID],
        conversation_ids: list[UUID],
        streams: dict[str, list[ExportedEvent]],
    ) -> tuple[UUID, dict[str, Any] | None]:
        """The subject's lead: a candidate lead stream, else the lead of a candidate
        conversation (a contact id whose lead is known by phone)."""
        for lead_id in lead_ids:
            facts = _lead_facts(streams.get(str(lead_id), []), tenant_id)
            if facts is not None:
                return lead_id, facts
        for conversation_id in conversation_ids:
            events = streams.get(str(conversation_id), [])
            if not events or events[0].type != "ConversationStarted":
                continue
            data = events[0].data
            if data.get("tenant_id") != str(tenant_id) or not data.get("lead_id"):
                continue
            lead_id = UUID(str(data["lead_id"]))
            lead_events = open_records(self.cipher, self.streams.records([lead_id]))
            facts = _lead_facts(lead_events, tenant_id)
            if facts is not None:
                streams[str(lead_id)] = lead_events
                return lead_id, facts
        return lead_ids[0], None

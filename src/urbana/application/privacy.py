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

from typing import Any
from uuid import UUID

from urbana.application.ports import Clock, StoredRecord, SubjectCipher, SubjectStreams
from urbana.application.subjects import (
    EXPORT_VERSION,
    ConversationFacts,
    ExportedEvent,
    Rendering,
    Subject,
    SubjectExport,
    SubjectQuery,
    by_stream,
    conversation_facts,
    lead_facts,
    message_ref_ids,
    open_records,
)
from urbana.application.unit_of_work import StoreApp
from urbana.domain.channels import CHANNELS
from urbana.domain.contacts import (
    conversation_id_for,
)
from urbana.domain.errors import InvalidInput, NotFound
from urbana.domain.lead import MAX_PURPOSE, Lead
from urbana.domain.pii import ERASED

__all__ = [
    "EXPORT_VERSION",
    "ConversationFacts",
    "ExportedEvent",
    "PrivacyCommands",
    "Rendering",
    "StoredRecord",
    "Subject",
    "SubjectExport",
    "SubjectQuery",
    "SubjectRequests",
    "SubjectStreams",
    "message_ref_ids",
    "open_records",
]


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
        streams = by_stream(first)
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
        derived |= set(facts.get("erased_conversations", ()))
        # The ones the lead's stream names (an `@lid` contact), projected or not.
        derived |= {
            UUID(str(e.data["conversation_id"]))
            for e in lead_events
            if e.type == "ConversationLinked"
        }
        missing = [c for c in derived if str(c) not in streams]
        if missing:
            streams.update(by_stream(open_records(self.cipher, self.streams.records(missing))))
        conversations: list[ConversationFacts] = []
        ref_ids: set[UUID] = set()
        kept = list(lead_events)
        for conversation_id in derived:
            events = streams.get(str(conversation_id), [])
            found = conversation_facts(events, tenant_id, lead_id)
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
            facts = lead_facts(streams.get(str(lead_id), []), tenant_id)
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
            facts = lead_facts(lead_events, tenant_id)
            if facts is not None:
                streams[str(lead_id)] = lead_events
                return lead_id, facts
        return lead_ids[0], None

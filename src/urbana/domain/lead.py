"""The Lead aggregate: one person per tenant, scored and staged as they talk."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from urbana.domain.contacts import lead_id_for
from urbana.domain.errors import InvalidInput, InvalidTransition
from urbana.domain.events import (
    TenantScoped,
    added_in_v3,
    defaults,
    nobody_acted,
    tenant_added_in_v2,
)
from urbana.domain.pii import ERASED, personal

# Why a subject was erased: a category, never free text, so the event that proves the
# erasure cannot itself carry personal data (an auditor's note would be the place for a
# name, and the event store is not). Free-text details belong in the auditor's own
# ticketing system, referenced from outside Urbana.
ERASURE_REASONS = frozenset(
    {
        "subject_request",  # the data subject asked (LGPD Art. 18 VI)
        "consent_withdrawn",  # consent revoked (Art. 8 §5)
        "purpose_fulfilled",  # the processing ended (Art. 16)
        "legal_order",  # a court or the ANPD ordered it
        "retention",  # the tenant's retention period ran out (the retention job)
    }
)


class AlreadyErased(InvalidTransition):
    """The subject's data was already erased."""

    code = "already_erased"


class ErasedSubject(InvalidTransition):
    """Nothing personal can be recorded for an erased subject: its key is gone for good."""

    code = "erased_subject"


class Stage(StrEnum):
    NEW = "new"
    ENGAGED = "engaged"
    QUALIFIED = "qualified"
    HOT = "hot"


STAGE_ORDER = (Stage.NEW, Stage.ENGAGED, Stage.QUALIFIED, Stage.HOT)
DEFAULT_THRESHOLDS: dict[str, int] = {"engaged": 10, "qualified": 40, "hot": 70}
MAX_DELTA = 100


def stage_for(score: int, thresholds: Mapping[str, int]) -> Stage:
    """The highest stage whose threshold the score reaches."""
    stage = Stage.NEW
    for candidate in STAGE_ORDER[1:]:
        if score >= thresholds.get(candidate.value, DEFAULT_THRESHOLDS[candidate.value]):
            stage = candidate
    return stage


class Lead(TenantScoped):
    @staticmethod
    def create_id(tenant_id: UUID, key: str, **_: Any) -> UUID:
        return lead_id_for(tenant_id, key)

    @classmethod
    def create(
        cls,
        tenant_id: UUID,
        key: str,
        phone: str | None,
        name: str | None = None,
        *,
        generation: int = 0,
    ) -> Lead:
        """A new lead; `generation` counts the erased subjects of this key before it."""
        if not key:
            raise InvalidInput("lead key is required")
        if not generation:
            return cls(tenant_id=tenant_id, key=key, phone=phone, name=name)
        # The library derives ids from `create_id`'s arguments, which are the event's;
        # the generation is not a fact of the event, so the id is given instead.
        return cls._create(
            cls.LeadCreated,  # type: ignore[attr-defined]
            id=lead_id_for(tenant_id, key, generation),
            tenant_id=tenant_id,
            key=key,
            phone=phone,
            name=name,
        )

    @event("LeadCreated")
    def __init__(self, tenant_id: UUID, key: str, phone: str | None, name: str | None) -> None:
        self.tenant_id = tenant_id
        self.key = key
        self.phone = phone
        self.name = name
        self.score = 0
        self.stage = Stage.NEW
        # The decay steps already applied to the lead's current silence ("<since>/<hours>h").
        self.decays: frozenset[str] = frozenset()

    def score_by(
        self, delta: int, reason: str, thresholds: Mapping[str, int] | None = None
    ) -> None:
        """Apply a score change (clamped to 0..100) and move the stage forward if due."""
        if not -MAX_DELTA <= delta <= MAX_DELTA:
            raise InvalidInput(f"score delta {delta} out of range")
        if delta == 0:
            return
        new_score = max(0, min(100, self.score + delta))
        if new_score == self.score:
            return
        self._scored(delta=delta, score=new_score, reason=reason, decay=None)
        target = stage_for(new_score, thresholds or DEFAULT_THRESHOLDS)
        if STAGE_ORDER.index(target) > STAGE_ORDER.index(self.stage):
            self._stage_changed(
                from_stage=self.stage.value, to_stage=target.value, reason=reason, by=None
            )

    def decay(self, *, silent_since: datetime, after_hours: int, delta: int, reason: str) -> bool:
        """Cool the score once for this step of this silence; False when it was done before.

        A silence is named by the time of the lead's last message, so a lead who writes
        again starts a new one, and a job that runs twice in the same hour finds the
        step recorded on the lead and appends nothing.
        """
        if delta >= 0:
            raise InvalidInput("a decay lowers the score")
        key = f"{silent_since.isoformat()}/{after_hours}h"
        if key in self.decays:
            return False
        new_score = max(0, self.score + max(delta, -MAX_DELTA))
        if new_score == self.score:
            return False
        self._scored(delta=new_score - self.score, score=new_score, reason=reason, decay=key)
        return True

    def move_to(self, stage: Stage, reason: str, *, by: str | None = None) -> None:
        """A user (`by`) sets the stage by hand (forward or back)."""
        if stage is self.stage:
            raise InvalidTransition(f"lead is already {stage.value}")
        self._stage_changed(
            from_stage=self.stage.value, to_stage=stage.value, reason=reason, by=by or None
        )

    def link_conversation(self, conversation_id: UUID) -> None:
        """Name on the lead a conversation its key does not give (an `@lid` contact of a
        lead known by phone), so an erasure finds it in the store even before the read
        models have seen it. Once per conversation."""
        if conversation_id not in self.linked_conversations:
            self._conversation_linked(conversation_id=conversation_id)

    @property
    def linked_conversations(self) -> list[UUID]:
        # Leads restored from a snapshot taken before this event existed have none.
        return list(getattr(self, "_linked", ()))

    @event("ConversationLinked")
    def _conversation_linked(self, conversation_id: UUID) -> None:
        self._linked = [*self.linked_conversations, conversation_id]

    @property
    def over_plan_limit(self) -> bool:
        """Whether the lead came past its tenant's monthly limit (the AI does not answer it)."""
        return getattr(self, "_over_plan_limit", False)

    def mark_over_plan_limit(self, *, month: str, limit: int) -> None:
        """Record that the lead was counted past the plan's limit of its month."""
        if not self.over_plan_limit:
            self._over_plan_limit_recorded(month=month, limit=limit)

    @event("LeadOverPlanLimit")
    def _over_plan_limit_recorded(self, month: str, limit: int) -> None:
        self._over_plan_limit = True

    def update_profile(self, *, name: str | None) -> None:
        if name and name != self.name:
            self._profile_updated(name=name)

    @event("LeadScored")
    def _scored(self, delta: int, score: int, reason: str, decay: str | None) -> None:
        self.score = score
        if decay is not None:
            since = decay.rpartition("/")[0]
            same_silence = {k for k in self.decays if k.rpartition("/")[0] == since}
            self.decays = frozenset({*same_silence, decay})

    @event("LeadStageChanged")
    def _stage_changed(self, from_stage: str, to_stage: str, reason: str, by: str | None) -> None:
        self.stage = Stage(to_stage)

    @event("LeadProfileUpdated")
    def _profile_updated(self, name: str | None) -> None:
        self.name = name

    # -- data subject requests (LGPD) -------------------------------------------

    def record_export(self, *, by: str, role: str, purpose: str | None, rendering: str) -> None:
        """Record that the subject's data was handed out: who, in what role, why.

        The purpose is kept in clear so that the record outlives an erasure; it names a
        legal ground or a ticket, never personal data (hence its short limit).
        """
        if not by:
            raise InvalidInput("who exported is required")
        if purpose is not None and len(purpose) > MAX_PURPOSE:
            raise InvalidInput(f"the purpose has at most {MAX_PURPOSE} characters")
        self._data_exported(by=by, role=role, purpose=purpose or None, rendering=rendering)

    @event("SubjectDataExported")
    def _data_exported(self, by: str, role: str, purpose: str | None, rendering: str) -> None:
        """Nothing on the lead changes: the event is the record."""

    # -- erasure (LGPD Art. 18 VI) ----------------------------------------------------
    # The subject's data key is destroyed by the application; this records that it was,
    # with no personal data: ids, a reason category and who asked. Once erased, the
    # stream is closed: the same key (phone) writing again starts the next generation's
    # lead and conversations (see docs/architecture.md, Privacy).

    @property
    def erased(self) -> bool:
        return getattr(self, "_erased", False)

    @staticmethod
    def erase_reason(reason: str) -> str:
        """The reason if it is one of `ERASURE_REASONS`; InvalidInput otherwise."""
        if reason not in ERASURE_REASONS:
            raise InvalidInput(f"erasure reason must be one of {sorted(ERASURE_REASONS)}")
        return reason

    def erase(self, reason: str, *, conversation_ids: list[UUID], by: str | None = None) -> None:
        """Record that the subject's key was destroyed; refused when it already was."""
        self.erase_reason(reason)
        if self.erased:
            raise AlreadyErased(f"lead {self.id} is already erased")
        self._subject_erased(
            reason=reason, conversation_ids=sorted(conversation_ids, key=str), by=by or None
        )

    @event("SubjectErased")
    def _subject_erased(self, reason: str, conversation_ids: list[UUID], by: str | None) -> None:
        self._erased = True
        self.erased_reason = reason
        self.erased_conversations = list(conversation_ids)
        # What this process still held in clear goes with the key.
        self.key = self.phone = self.name = ERASED


# Event types added after version 2 (they carried `tenant_id` from their first version).
PRIVACY_EVENTS = ("SubjectDataExported", "SubjectErased", "ConversationLinked")
MAX_PURPOSE = 200

tenant_added_in_v2(Lead, born_with_it=(*PRIVACY_EVENTS, "LeadOverPlanLimit"))
# Version 3: who moved the lead; which decay step of a silence a scheduled job applied.
added_in_v3(Lead, {"LeadStageChanged": nobody_acted, "LeadScored": defaults(decay=None)})

personal("Lead.LeadCreated", "key", "phone", "name", subject="originator_id")
personal("Lead.LeadProfileUpdated", "name", subject="originator_id")

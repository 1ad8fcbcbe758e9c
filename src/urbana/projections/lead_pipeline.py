"""Lead pipeline: leads with score, stage and last activity.

See docs/architecture.md, "Read models and replay".

The lead's own columns (score, stage, profile) come from its own stream. Its
activity (last inbound message, conversations and messages counted) comes from its
conversations' streams, which Kafka may deliver on other partitions in any order
relative to the lead's; those columns are merged with `GREATEST` and `+`, so the row
is the same whatever the interleaving. A lead's activity can arrive before its
`LeadCreated`: the row then exists with only activity until the lead's own events fill it.

Name and phone stay sealed (`profile_sealed` from `LeadCreated`, `name_sealed` from
the latest `LeadProfileUpdated`) and are decrypted by the queries; erasure reaches
them by crypto-shredding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import orjson

from urbana.application.envelope import Envelope
from urbana.projections.base import Load, Row, Write, upsert_sql

OWN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "uuid"),
    ("tenant_id", "uuid"),
    ("score", "int"),
    ("stage", "text"),
    ("created_at", "timestamptz"),
    ("profile_sealed", "jsonb"),
    ("name_sealed", "jsonb"),
    ("last_activity_at", "timestamptz"),
    ("updated_at", "timestamptz"),
    ("last_position", "bigint"),
    ("over_plan_limit", "boolean"),
)
ACTIVITY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "uuid"),
    ("tenant_id", "uuid"),
    ("last_activity_at", "timestamptz"),
    ("conversations", "int"),
    ("messages_in", "int"),
)

_OWN_UPSERT = upsert_sql(
    "leads",
    OWN_COLUMNS,
    ("id",),
    {
        "tenant_id": "COALESCE(EXCLUDED.tenant_id, t.tenant_id)",
        "score": "COALESCE(EXCLUDED.score, t.score)",
        "stage": "COALESCE(EXCLUDED.stage, t.stage)",
        "created_at": "COALESCE(EXCLUDED.created_at, t.created_at)",
        "profile_sealed": "COALESCE(EXCLUDED.profile_sealed, t.profile_sealed)",
        "name_sealed": "COALESCE(EXCLUDED.name_sealed, t.name_sealed)",
        "last_activity_at": "GREATEST(t.last_activity_at, EXCLUDED.last_activity_at)",
        "updated_at": "GREATEST(t.updated_at, EXCLUDED.updated_at)",
        "last_position": "GREATEST(t.last_position, EXCLUDED.last_position)",
        "over_plan_limit": "COALESCE(EXCLUDED.over_plan_limit, t.over_plan_limit)",
    },
)
_ACTIVITY_UPSERT = upsert_sql(
    "leads",
    ACTIVITY_COLUMNS,
    ("id",),
    {
        "tenant_id": "COALESCE(t.tenant_id, EXCLUDED.tenant_id)",
        "last_activity_at": "GREATEST(t.last_activity_at, EXCLUDED.last_activity_at)",
        "conversations": "t.conversations + EXCLUDED.conversations",
        "messages_in": "t.messages_in + EXCLUDED.messages_in",
    },
)
_O = {c: i for i, (c, _) in enumerate(OWN_COLUMNS)}


def _later(a: str | None, b: str) -> str:
    # ISO timestamps from one store clock in UTC compare correctly as text.
    return b if a is None or b > a else a


class LeadPipeline:
    name: ClassVar[str] = "lead_pipeline"
    version: ClassVar[int] = 1
    # `erased_leads`: erased subjects (ids only): their conversations' activity, which
    # Kafka may deliver after the erasure (another partition), finds no lead to count for.
    tables: ClassVar[tuple[str, ...]] = ("leads", "erased_leads")
    handles: ClassVar[frozenset[str]] = frozenset(
        {
            "Lead.LeadCreated",
            "Lead.LeadScored",
            "Lead.LeadStageChanged",
            "Lead.LeadProfileUpdated",
            "Lead.LeadOverPlanLimit",
            "Conversation.ConversationStarted",
            "Conversation.MessageReceived",
            "Lead.SubjectErased",
        }
    )

    def ddl(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {leads} ("
            "id uuid, tenant_id uuid, score int, stage text, created_at timestamptz, "
            "profile_sealed jsonb, name_sealed jsonb, last_activity_at timestamptz, "
            "conversations int NOT NULL DEFAULT 0, messages_in int NOT NULL DEFAULT 0, "
            "updated_at timestamptz, last_position bigint, over_plan_limit boolean, "
            "CONSTRAINT {leads}_pkey PRIMARY KEY (id))",
            # Tables made before plans existed: no stored event sets the column yet, so
            # adding it (NULL: not over) needs no rebuild. Guarded, since ALTER TABLE
            # locks the table and this runs at every process start.
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = '{leads}' "
            "AND column_name = 'over_plan_limit') THEN "
            "ALTER TABLE {leads} ADD COLUMN over_plan_limit boolean; END IF; END $$",
            "CREATE INDEX IF NOT EXISTS {leads}_tenant_idx "
            "ON {leads} (tenant_id, stage, last_activity_at DESC)",
            "CREATE TABLE IF NOT EXISTS {erased_leads} (id uuid, tenant_id uuid, "
            "CONSTRAINT {erased_leads}_pkey PRIMARY KEY (id))",
        ]

    def loads(self, envelopes: Sequence[Envelope]) -> list[Load]:
        ids = {e.stream_id if e.aggregate == "Lead" else e.data.get("lead_id") for e in envelopes}
        return [
            Load(
                "erased",
                "SELECT id::text FROM {erased_leads} WHERE id = ANY(%s::uuid[])",
                ([i for i in ids if i],),
            )
        ]

    def fold(self, envelopes: Sequence[Envelope], loaded: dict[str, list[Row]]) -> list[Write]:
        own: dict[str, list[Any]] = {}
        activity: dict[str, list[Any]] = {}
        erased: dict[str, str | None] = {}  # lead id -> tenant, erased in this batch
        before = {r[0] for r in loaded.get("erased", [])}
        for e in envelopes:
            if e.type == "SubjectErased":
                # The subject leaves the pipeline; its conversations' later activity
                # (in this batch or after) has no lead to count for.
                erased[e.stream_id] = e.tenant_id
                own.pop(e.stream_id, None)
                activity.pop(e.stream_id, None)
                continue
            if e.aggregate == "Lead":
                if e.stream_id in before:
                    continue
                row = own.get(e.stream_id)
                if row is None:
                    row = [None] * len(OWN_COLUMNS)
                    row[_O["id"]] = e.stream_id
                    own[e.stream_id] = row
                _apply_own(row, e)
                continue
            lead_id = e.data.get("lead_id")
            if not lead_id or lead_id in erased or lead_id in before:
                continue
            act = activity.get(lead_id)
            if act is None:
                act = [lead_id, e.tenant_id, None, 0, 0]
                activity[lead_id] = act
            if act[1] is None:
                act[1] = e.tenant_id
            if e.type == "ConversationStarted":
                act[3] += 1
            else:
                act[4] += 1
            act[2] = _later(act[2], e.occurred_at)
        writes = []
        if own:
            rows = [tuple(r) for r in own.values()]
            writes.append(Write("leads", OWN_COLUMNS, _OWN_UPSERT, rows))
        if activity:
            rows = [tuple(r) for r in activity.values()]
            writes.append(Write("leads", ACTIVITY_COLUMNS, _ACTIVITY_UPSERT, rows))
        if erased:
            rows = [(lead,) for lead in erased]
            writes.append(Write("leads", (("lead_id", "uuid"),), _ERASE_SQL, rows))
            tombstones = [(lead, tenant) for lead, tenant in erased.items()]
            writes.append(
                Write(
                    "erased_leads",
                    (("id", "uuid"), ("tenant_id", "uuid")),
                    _TOMBSTONE_SQL,
                    tombstones,
                )
            )
        return writes


_ERASE_SQL = "DELETE FROM {leads} t USING {stage} s WHERE t.id = s.lead_id"
_TOMBSTONE_SQL = (
    "INSERT INTO {erased_leads} (id, tenant_id) "
    "SELECT id, tenant_id FROM {stage} ON CONFLICT (id) DO NOTHING"
)


def _apply_own(row: list[Any], e: Envelope) -> None:
    d = e.data
    if row[_O["tenant_id"]] is None:
        row[_O["tenant_id"]] = e.tenant_id or d.get("tenant_id")
    if e.type == "LeadCreated":
        row[_O["score"]] = 0
        row[_O["stage"]] = "new"
        row[_O["created_at"]] = e.occurred_at
        row[_O["profile_sealed"]] = orjson.dumps(e.encrypted).decode() if e.encrypted else None
    elif e.type == "LeadScored":
        row[_O["score"]] = d.get("score")
    elif e.type == "LeadStageChanged":
        row[_O["stage"]] = d.get("to_stage")
    elif e.type == "LeadProfileUpdated" and e.encrypted:
        row[_O["name_sealed"]] = orjson.dumps(e.encrypted).decode()
    elif e.type == "LeadOverPlanLimit":
        row[_O["over_plan_limit"]] = True
    row[_O["last_activity_at"]] = _later(row[_O["last_activity_at"]], e.occurred_at)
    row[_O["updated_at"]] = _later(row[_O["updated_at"]], e.occurred_at)
    last = row[_O["last_position"]]
    row[_O["last_position"]] = e.position if last is None else max(last, e.position)

"""Workspace: a tenant's queues and canned responses, as the attendants' API lists them.

See docs/architecture.md, "Read models and replay".

`queues`: one row per queue (`QueueCreated`, `QueueChanged`: name and the intents routed
to it). `canned_responses`: one row per shortcut (`CannedResponseSaved`), deleted by
`CannedResponseRemoved`. Both come from the tenant's own stream, so a batch's events are
folded in order in memory and each key ends up written once: upserted, or deleted.
How many conversations wait in each queue and who serves it are counted when read
(`queries.list_queues`), from the conversation view and the team.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from urbana.application.envelope import Envelope
from urbana.projections.base import Load, Row, Write, event_names, upsert_sql

QUEUE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("tenant_id", "uuid"),
    ("queue_id", "text"),
    ("name", "text"),
    ("intents", "text[]"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
    ("last_position", "bigint"),
)
CANNED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("tenant_id", "uuid"),
    ("shortcut", "text"),
    ("text", "text"),
    ("updated_at", "timestamptz"),
    ("last_position", "bigint"),
)
_KEY: tuple[tuple[str, str], ...] = (("tenant_id", "uuid"), ("shortcut", "text"))

_QUEUE_UPSERT = upsert_sql(
    "queues",
    QUEUE_COLUMNS,
    ("tenant_id", "queue_id"),
    {
        "name": "COALESCE(EXCLUDED.name, t.name)",
        "intents": "COALESCE(EXCLUDED.intents, t.intents)",
        "created_at": "COALESCE(t.created_at, EXCLUDED.created_at)",
    },
)
_CANNED_UPSERT = upsert_sql("canned_responses", CANNED_COLUMNS, ("tenant_id", "shortcut"))
_CANNED_DELETE = (
    "DELETE FROM {canned_responses} AS t USING {stage} AS s "
    "WHERE t.tenant_id = s.tenant_id AND t.shortcut = s.shortcut"
)
_Q = {c: i for i, (c, _) in enumerate(QUEUE_COLUMNS)}


class Workspace:
    name: ClassVar[str] = "workspace"
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[str, ...]] = ("queues", "canned_responses")
    handles: ClassVar[frozenset[str]] = event_names(
        "Tenant", "QueueCreated", "QueueChanged", "CannedResponseSaved", "CannedResponseRemoved"
    )

    def ddl(self) -> list[str]:
        queues = ", ".join(f"{c} {kind}" for c, kind in QUEUE_COLUMNS)
        canned = ", ".join(f"{c} {kind}" for c, kind in CANNED_COLUMNS)
        return [
            f"CREATE TABLE IF NOT EXISTS {{queues}} ({queues}, "
            "CONSTRAINT {queues}_pkey PRIMARY KEY (tenant_id, queue_id))",
            f"CREATE TABLE IF NOT EXISTS {{canned_responses}} ({canned}, "
            "CONSTRAINT {canned_responses}_pkey PRIMARY KEY (tenant_id, shortcut))",
        ]

    def loads(self, envelopes: Sequence[Envelope]) -> list[Load]:
        return []

    def fold(self, envelopes: Sequence[Envelope], loaded: dict[str, list[Row]]) -> list[Write]:
        queues: dict[tuple[str, str], list[Any]] = {}
        canned: dict[tuple[str, str], Row | None] = {}  # None: removed
        for e in envelopes:
            tenant = e.tenant_id or e.stream_id
            d = e.data
            if e.type in ("QueueCreated", "QueueChanged"):
                key = (tenant, str(d["queue_id"]))
                row = queues.get(key)
                if row is None:
                    row = queues[key] = [tenant, key[1], None, None, None, None, None]
                if e.type == "QueueCreated":
                    row[_Q["created_at"]] = e.occurred_at
                if d.get("name") is not None:
                    row[_Q["name"]] = d["name"]
                if d.get("intents") is not None:
                    row[_Q["intents"]] = sorted(set(d["intents"]))
                row[_Q["updated_at"]] = e.occurred_at
                row[_Q["last_position"]] = e.position
            elif e.type == "CannedResponseSaved":
                key = (tenant, str(d["shortcut"]))
                canned[key] = (tenant, key[1], d.get("text"), e.occurred_at, e.position)
            else:
                canned[(tenant, str(d["shortcut"]))] = None
        writes = []
        if queues:
            rows = [tuple(r) for r in queues.values()]
            writes.append(Write("queues", QUEUE_COLUMNS, _QUEUE_UPSERT, rows))
        saved = [r for r in canned.values() if r is not None]
        removed = [k for k, r in canned.items() if r is None]
        if saved:
            writes.append(Write("canned_responses", CANNED_COLUMNS, _CANNED_UPSERT, saved))
        if removed:
            writes.append(Write("canned_responses", _KEY, _CANNED_DELETE, removed))
        return writes

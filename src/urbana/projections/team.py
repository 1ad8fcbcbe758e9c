"""Team: a tenant's users as attendants see them and the auto-assignment policy reads them.

See docs/architecture.md, "Read models and replay".

`users`: one row per user: role, whether disabled, availability (online | away |
offline, and since when), queues, and when a conversation was last assigned to them.
The user's own columns come from its own stream (`User.*`), merged with `COALESCE` so
an event only sets what it says. `last_assigned_at` comes from the conversations'
streams (`HandoffAccepted`, `ConversationAssigned`, a transfer to a user), which Kafka
may deliver on other partitions in any order: it is merged with `GREATEST`, and such a
row can exist before the user's `UserInvited` (queries list only invited users).
Assignees that are not user ids (the business phone) have no row.

How many conversations each attendant holds is not stored here: it is counted from
the conversation view when read (`queries.team`), so it can never drift from it.

Email and name are kept in clear when the event carries them in clear, and sealed
(`profile_sealed`, decrypted by the queries) when the domain declares them personal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar
from uuid import UUID

import orjson

from urbana.application.envelope import Envelope
from urbana.projections.base import Load, Row, Write, event_names, parse_time, upsert_sql

OWN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "uuid"),
    ("tenant_id", "uuid"),
    ("email", "text"),
    ("name", "text"),
    ("profile_sealed", "jsonb"),
    ("role", "text"),
    ("disabled", "boolean"),
    ("availability", "text"),
    ("availability_since", "timestamptz"),
    ("queues", "text[]"),
    ("invited_at", "timestamptz"),
    ("updated_at", "timestamptz"),
    ("last_position", "bigint"),
)
ASSIGNMENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "uuid"),
    ("tenant_id", "uuid"),
    ("last_assigned_at", "timestamptz"),
)

_MERGED = ("updated_at", "last_position")
_OWN_UPSERT = upsert_sql(
    "users",
    OWN_COLUMNS,
    ("id",),
    {
        **{
            c: f"COALESCE(EXCLUDED.{c}, t.{c})" for c, _ in OWN_COLUMNS if c not in ("id", *_MERGED)
        },
        **{c: f"GREATEST(t.{c}, EXCLUDED.{c})" for c in _MERGED},
    },
)
_ASSIGNMENT_UPSERT = upsert_sql(
    "users",
    ASSIGNMENT_COLUMNS,
    ("id",),
    {
        "tenant_id": "COALESCE(t.tenant_id, EXCLUDED.tenant_id)",
        "last_assigned_at": "GREATEST(t.last_assigned_at, EXCLUDED.last_assigned_at)",
    },
)
_O = {c: i for i, (c, _) in enumerate(OWN_COLUMNS)}

_ASSIGNING = {
    "HandoffAccepted": "attendant",
    "ConversationAssigned": "assignee",
    "ConversationTransferred": "to_user",
}


def user_id(value: object) -> str | None:
    """The assignee as a user id, or None when it is no user (e.g. "business_phone")."""
    if not value:
        return None
    try:
        return str(UUID(str(value)))
    except ValueError:
        return None


class Team:
    name: ClassVar[str] = "team"
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[str, ...]] = ("users",)
    handles: ClassVar[frozenset[str]] = event_names(
        "User",
        "UserInvited",
        "UserRoleChanged",
        "UserDisabled",
        "UserEnabled",
        "AvailabilityChanged",
        "UserQueuesChanged",
    ) | event_names("Conversation", *_ASSIGNING)

    def ddl(self) -> list[str]:
        columns = ", ".join(f"{c} {kind}" for c, kind in OWN_COLUMNS)
        return [
            f"CREATE TABLE IF NOT EXISTS {{users}} ({columns}, "
            "last_assigned_at timestamptz, CONSTRAINT {users}_pkey PRIMARY KEY (id))",
            "CREATE INDEX IF NOT EXISTS {users}_tenant_idx ON {users} (tenant_id, availability)",
        ]

    def loads(self, envelopes: Sequence[Envelope]) -> list[Load]:
        return []

    def fold(self, envelopes: Sequence[Envelope], loaded: dict[str, list[Row]]) -> list[Write]:
        own: dict[str, list[Any]] = {}
        assigned: dict[str, list[Any]] = {}
        for e in envelopes:
            if e.aggregate == "User":
                row = own.get(e.stream_id)
                if row is None:
                    row = own[e.stream_id] = [None] * len(OWN_COLUMNS)
                    row[_O["id"]] = e.stream_id
                _apply_own(row, e)
                continue
            uid = user_id(e.data.get(_ASSIGNING[e.type]))
            if uid is None:
                continue
            current = assigned.get(uid)
            if current is None:
                assigned[uid] = [uid, e.tenant_id, e.occurred_at]
            elif parse_time(e.occurred_at) > parse_time(current[2]):
                current[2] = e.occurred_at
        writes = []
        if own:
            writes.append(
                Write("users", OWN_COLUMNS, _OWN_UPSERT, [tuple(r) for r in own.values()])
            )
        if assigned:
            rows = [tuple(r) for r in assigned.values()]
            writes.append(Write("users", ASSIGNMENT_COLUMNS, _ASSIGNMENT_UPSERT, rows))
        return writes


def _apply_own(row: list[Any], e: Envelope) -> None:
    d = e.data
    if row[_O["tenant_id"]] is None:
        row[_O["tenant_id"]] = e.tenant_id or d.get("tenant_id")
    t = e.type
    if t == "UserInvited":
        row[_O["email"]] = d.get("email")
        row[_O["name"]] = d.get("name")
        if e.encrypted:
            row[_O["profile_sealed"]] = orjson.dumps(e.encrypted).decode()
        row[_O["role"]] = d.get("role")
        row[_O["disabled"]] = False
        row[_O["availability"]] = "offline"
        row[_O["availability_since"]] = e.occurred_at
        row[_O["queues"]] = []
        row[_O["invited_at"]] = e.occurred_at
    elif t == "UserRoleChanged":
        row[_O["role"]] = d.get("role")
    elif t in ("UserDisabled", "UserEnabled"):
        row[_O["disabled"]] = t == "UserDisabled"
        if t == "UserDisabled":  # a disabled user takes no conversation
            row[_O["availability"]] = "offline"
            row[_O["availability_since"]] = e.occurred_at
    elif t == "AvailabilityChanged":
        row[_O["availability"]] = d.get("availability")
        row[_O["availability_since"]] = e.occurred_at
    elif t == "UserQueuesChanged":
        row[_O["queues"]] = sorted(set(d.get("queues") or ()))
    row[_O["updated_at"]] = e.occurred_at
    row[_O["last_position"]] = e.position

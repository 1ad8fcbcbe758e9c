"""What a projection is: a name, a version, its tables, and a pure fold.

A projection never does I/O itself. For a batch of envelopes it says which rows it
needs (`loads`), and given those rows it returns the rows that bring its tables up to
date (`fold`), each table written set-based: COPY into a staging table, then one
`INSERT ... SELECT ... ON CONFLICT DO UPDATE` per table and batch, never one statement
per event. The
drivers in `urbana.projections.apply` run those statements (sync for replay, async
for the Kafka runner) in one transaction together with the tracking position.

Rows owned by one stream (a conversation, a lead's own columns) are folded from
their loaded state: a stream's events all travel in one Kafka partition, so only one
transaction at a time writes them. Columns fed by *other* streams (a lead's last
activity, which comes from its conversation's messages) are merged commutatively
in SQL (`GREATEST`, `+`), so partitions applied in any order give the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from urbana.application.envelope import Envelope

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Load:
    """Rows a fold needs: `sql` (with `{table}` placeholders) run with `params`."""

    name: str
    sql: str
    params: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Write:
    """Rows for one table, merged set-based by `sql` (`{table}`, `{stage}` placeholders).

    The driver COPYs `rows` (one value per column of `columns`) into a temporary
    staging table, then runs `sql`, one `INSERT ... SELECT ... ON CONFLICT` statement.
    """

    table: str
    columns: tuple[tuple[str, str], ...]
    sql: str
    rows: list[Row]


class Projection(Protocol):
    """A read model: versioned tables, the events it reads, and a pure fold."""

    name: ClassVar[str]
    version: ClassVar[int]
    tables: ClassVar[tuple[str, ...]]  # logical names, e.g. ("conversations", "messages")
    handles: ClassVar[frozenset[str]]  # "Aggregate.EventType"

    def ddl(self) -> list[str]:
        """CREATE TABLE / INDEX statements with `{table}` placeholders."""
        ...

    def loads(self, envelopes: Sequence[Envelope]) -> list[Load]:
        """The current rows the fold of these envelopes needs."""
        ...

    def fold(self, envelopes: Sequence[Envelope], loaded: dict[str, list[Row]]) -> list[Write]:
        """The statements that apply these envelopes (in position order) to the tables."""
        ...


def event_names(aggregate: str, *types: str) -> frozenset[str]:
    """What a projection `handles` of one aggregate's events: `Aggregate.EventType`."""
    return frozenset(f"{aggregate}.{t}" for t in types)


def physical_name(projection: Projection, table: str, suffix: str = "") -> str:
    """`rm_<table>_v<version>[suffix]`: a version bump builds new tables."""
    return f"rm_{table}_v{projection.version}{suffix}"


def table_names(projection: Projection, suffix: str = "") -> dict[str, str]:
    return {t: physical_name(projection, t, suffix) for t in projection.tables}


def relevant(projection: Projection, envelopes: Sequence[Envelope]) -> list[Envelope]:
    """The envelopes this projection reads (`handles`), in their order."""
    by_type = _handled_types(projection.handles)
    return [e for e in envelopes if e.aggregate in by_type.get(e.type, ())]


_BY_TYPE: dict[frozenset[str], dict[str, frozenset[str]]] = {}


def _handled_types(handles: frozenset[str]) -> dict[str, frozenset[str]]:
    """{event type: aggregates} for a `handles` set (cached)."""
    found = _BY_TYPE.get(handles)
    if found is None:
        pairs = [h.split(".", 1) for h in handles]
        found = _BY_TYPE[handles] = {
            t: frozenset(a for a, t2 in pairs if t2 == t) for _, t in pairs
        }
    return found


def parse_time(value: str) -> datetime:
    """An ISO timestamp as an aware UTC datetime (naive input is taken as UTC)."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def upsert_sql(
    table: str,
    columns: Sequence[tuple[str, str]],
    key: Sequence[str],
    update: dict[str, str] | None = None,
) -> str:
    """`INSERT ... SELECT FROM {stage} ON CONFLICT (key) DO UPDATE` for one table.

    `columns` are (name, PostgreSQL type); every non-key column is replaced by the
    incoming value unless `update` gives it another expression (over `t`, the row in
    the table, and `EXCLUDED`, the incoming one).
    """
    names = ", ".join(c for c, _ in columns)
    update = update or {}
    sets = ", ".join(f"{c} = {update.get(c, 'EXCLUDED.' + c)}" for c, _ in columns if c not in key)
    return (
        f"INSERT INTO {{{table}}} AS t ({names}) SELECT {names} FROM {{stage}} "  # noqa: S608
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"
    )


def stage_ddl(stage: str, columns: Sequence[tuple[str, str]]) -> str:
    """The temporary staging table a `Write` is COPYed into (emptied at each commit)."""
    cols = ", ".join(f"{c} {kind}" for c, kind in columns)
    return f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({cols}) ON COMMIT DELETE ROWS"

"""KPIs per day and for a range, with the figures derived from the daily counters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from urbana.projections.kpis import BUCKETS, COUNTERS
from urbana.projections.queries.paging import fetch_rows
from urbana.projections.queries.tables import KPI_DAILY, KPI_RESPONSES


@dataclass(frozen=True, slots=True)
class KpiDay:
    """One day's KPIs of a tenant (or, with `day` None, a range's totals), as
    `urbana.projections.kpis` defines them. A figure whose denominator is zero is None.
    """

    tenant_id: UUID
    day: date | None
    counts: dict[str, int]  # every counter of `kpis.COUNTERS`
    cost_usd: Decimal
    first_response: dict[str, int]  # bucket -> responses (`kpis.BUCKETS` order)
    avg_first_response_s: float | None  # frt_ms_sum / frt_count
    avg_resolution_s: float | None  # resolution_ms_sum / resolved
    handoff_rate: float | None  # handed_off / ai_handled
    ai_resolution_rate: float | None  # ai_resolved / ai_closed
    # first response time, median and 90th percentile, of the AI's and the attendants'
    ai_first_response_p50_s: float | None = None
    ai_first_response_p90_s: float | None = None
    human_first_response_p50_s: float | None = None
    human_first_response_p90_s: float | None = None


@dataclass(frozen=True, slots=True)
class KpiReport:
    days: list[KpiDay]  # the days that have any figure, in order
    totals: KpiDay  # the whole range (`day` None)


def _figures(
    tenant_id: UUID,
    day: date | None,
    counts: dict[str, int],
    cost: Decimal,
    percentiles: dict[str, float | None],
) -> KpiDay:
    return KpiDay(
        tenant_id=tenant_id,
        day=day,
        counts=counts,
        cost_usd=cost,
        first_response={b: counts[b] for b, _ in BUCKETS},
        avg_first_response_s=_ratio(counts["frt_ms_sum"], counts["frt_count"], 1000),
        avg_resolution_s=_ratio(counts["resolution_ms_sum"], counts["resolved"], 1000),
        handoff_rate=_ratio(counts["handed_off"], counts["ai_handled"]),
        ai_resolution_rate=_ratio(counts["ai_resolved"], counts["ai_closed"]),
        **percentiles,
    )


_PERCENTILES = (
    "responder, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), "
    "percentile_cont(0.9) WITHIN GROUP (ORDER BY ms) "
    f"FROM {KPI_RESPONSES} WHERE tenant_id = %s AND day BETWEEN %s AND %s "
    "AND responder IN ('ai', 'human') "
)


def _percentile_fields(found: dict[str, tuple[float, float]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for responder in ("ai", "human"):
        p50, p90 = found.get(responder, (None, None))
        out[f"{responder}_first_response_p50_s"] = None if p50 is None else p50 / 1000
        out[f"{responder}_first_response_p90_s"] = None if p90 is None else p90 / 1000
    return out


async def kpi_report(
    conn: AsyncConnection[Any], tenant_id: UUID | str, since: date, until: date
) -> KpiReport:
    """A tenant's KPIs for each day (UTC) from `since` to `until` inclusive that has
    any, and for the range as a whole (sums, and percentiles over every response)."""
    tenant = UUID(str(tenant_id))
    rows = await fetch_rows(
        conn,
        f"SELECT * FROM {KPI_DAILY} WHERE tenant_id = %s "  # noqa: S608
        "AND day BETWEEN %s AND %s ORDER BY day",
        (str(tenant), since, until),
    )
    by_day: dict[date, dict[str, tuple[float, float]]] = {}
    cur2 = await conn.execute(
        "SELECT day, " + _PERCENTILES + "GROUP BY day, responder", (str(tenant), since, until)
    )
    for day, responder, p50, p90 in await cur2.fetchall():
        by_day.setdefault(day, {})[responder] = (float(p50), float(p90))
    cur2 = await conn.execute(
        "SELECT " + _PERCENTILES + "GROUP BY responder", (str(tenant), since, until)
    )
    overall = {r: (float(p50), float(p90)) for r, p50, p90 in await cur2.fetchall()}
    days = []
    totals = dict.fromkeys(COUNTERS, 0)
    cost = Decimal(0)
    for r in rows:
        counts = {c: int(r[c]) for c in COUNTERS}
        for c in COUNTERS:
            totals[c] += counts[c]
        cost += Decimal(r["cost_usd"])
        days.append(
            _figures(
                tenant,
                r["day"],
                counts,
                Decimal(r["cost_usd"]),
                _percentile_fields(by_day.get(r["day"], {})),
            )
        )
    return KpiReport(days, _figures(tenant, None, totals, cost, _percentile_fields(overall)))


async def kpis_by_day(
    conn: AsyncConnection[Any], tenant_id: UUID | str, since: date, until: date
) -> list[KpiDay]:
    """`kpi_report`'s days."""
    return (await kpi_report(conn, tenant_id, since, until)).days


def _ratio(part: int, whole: int, unit: int = 1) -> float | None:
    return part / whole / unit if whole else None

"""The jobs' domain rules and the scheduler's clock, without services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from urbana.application.scheduler import due_period, next_period
from urbana.domain.errors import InvalidInput
from urbana.domain.lead import Lead
from urbana.domain.tenant import TenantSettings

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def warm_lead(score: int = 50) -> Lead:
    lead = Lead.create(uuid4(), "5511987654321", "5511987654321")
    lead.score_by(score, "qualified")
    lead.collect_events()
    return lead


def events(lead: Lead) -> list[Any]:
    return list(lead.collect_events())


def test_a_decay_step_applies_once_per_silence() -> None:
    lead = warm_lead()
    assert lead.decay(silent_since=T0, after_hours=24, delta=-10, reason="no reply for 24 h")
    assert not lead.decay(silent_since=T0, after_hours=24, delta=-10, reason="no reply for 24 h")
    (scored,) = events(lead)
    assert (scored.delta, scored.score, scored.decay) == (-10, 40, f"{T0.isoformat()}/24h")
    assert lead.decay(silent_since=T0, after_hours=48, delta=-20, reason="no reply for 48 h")
    assert lead.score == 20


def test_a_new_silence_starts_the_steps_again() -> None:
    lead = warm_lead()
    lead.decay(silent_since=T0, after_hours=24, delta=-10, reason="r")
    later = T0 + timedelta(days=3)
    assert lead.decay(silent_since=later, after_hours=24, delta=-10, reason="r")
    assert lead.decays == {f"{later.isoformat()}/24h"}
    assert lead.score == 30


def test_a_decay_stops_at_zero_and_appends_nothing_there() -> None:
    lead = warm_lead(5)
    assert lead.decay(silent_since=T0, after_hours=24, delta=-10, reason="r")
    assert lead.score == 0
    assert not lead.decay(silent_since=T0, after_hours=48, delta=-20, reason="r")
    assert [e.delta for e in events(lead)] == [-5]


def test_a_decay_only_lowers() -> None:
    with pytest.raises(InvalidInput):
        warm_lead().decay(silent_since=T0, after_hours=24, delta=5, reason="r")


def test_decay_steps_and_stale_days_are_tenant_settings() -> None:
    settings = TenantSettings().changed({"decay_steps": {"12": -5}, "stale_after_days": 3})
    assert (settings.decay_steps, settings.stale_after_days) == ({"12": -5}, 3)
    for bad in ({"12": 5}, {"0": -5}, {"x": -5}):
        with pytest.raises(InvalidInput):
            TenantSettings().changed({"decay_steps": bad})


def test_the_due_period_is_read_in_the_tenants_time_zone() -> None:
    # 06:30 UTC is 03:30 in Sao Paulo (UTC-3): the daily 03:30 job is due right then.
    now = datetime(2026, 12, 2, 6, 30, tzinfo=UTC)
    assert due_period("30 3 * * *", now, "America/Sao_Paulo") == now
    assert due_period("30 3 * * *", now - timedelta(seconds=1), "America/Sao_Paulo") == (
        now - timedelta(days=1)
    )
    # In Manaus (UTC-4) it is 02:30: still yesterday's period.
    assert due_period("30 3 * * *", now, "America/Manaus") == now - timedelta(hours=23)
    assert next_period("30 3 * * *", now, "America/Sao_Paulo") == now + timedelta(days=1)

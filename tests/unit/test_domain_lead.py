"""The Lead aggregate: clamped scoring and a stage that only scoring moves forward."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

import pytest

from urbana.domain.contacts import lead_id_for
from urbana.domain.errors import InvalidInput, InvalidTransition
from urbana.domain.lead import MAX_DELTA, Lead, Stage, stage_for


def new_lead() -> Lead:
    lead = Lead.create(tenant_id=uuid4(), key="phone:5511988887777", phone="5511988887777")
    lead.collect_events()
    return lead


def scored(score: int) -> Lead:
    lead = new_lead()
    if score:
        lead.score_by(score, "setup")
    lead.collect_events()
    return lead


def names(events: Sequence[object]) -> list[str]:
    return [type(e).__name__ for e in events]


def state(lead: Lead) -> dict[str, Any]:
    return copy.deepcopy({k: v for k, v in vars(lead).items() if k != "_pending_events"})


def test_create_records_lead_created_new_with_zero_score() -> None:
    tenant = uuid4()
    lead = Lead.create(tenant_id=tenant, key="lid:123", phone=None, name="Maria")
    assert names(lead.collect_events()) == ["LeadCreated"]
    assert (lead.score, lead.stage, lead.name) == (0, Stage.NEW, "Maria")
    assert lead.id == lead_id_for(tenant, "lid:123")


def test_create_requires_a_key() -> None:
    with pytest.raises(InvalidInput):
        Lead.create(tenant_id=uuid4(), key="", phone=None)


def test_scoring_adds_the_delta_and_records_reason() -> None:
    lead = new_lead()
    lead.score_by(5, "asked for price")
    event: Any
    (event,) = lead.collect_events()
    assert type(event).__name__ == "LeadScored"
    assert (event.delta, event.score, event.reason) == (5, 5, "asked for price")
    assert lead.score == 5


def test_scoring_clamps_at_100() -> None:
    lead = scored(90)
    lead.score_by(30, "visit booked")
    assert lead.score == 100


def test_scoring_clamps_at_0() -> None:
    lead = scored(5)
    lead.score_by(-30, "not interested")
    assert lead.score == 0


@pytest.mark.parametrize(
    ("score", "stage"),
    [
        (9, Stage.NEW),
        (10, Stage.ENGAGED),
        (39, Stage.ENGAGED),
        (40, Stage.QUALIFIED),
        (69, Stage.QUALIFIED),
        (70, Stage.HOT),
        (100, Stage.HOT),
    ],
)
def test_stage_follows_the_default_thresholds(score: int, stage: Stage) -> None:
    assert scored(score).stage is stage


@pytest.mark.parametrize(
    ("start", "delta", "from_stage", "to_stage"),
    [(0, 10, "new", "engaged"), (10, 30, "engaged", "qualified"), (40, 30, "qualified", "hot")],
)
def test_crossing_a_threshold_records_the_stage_change(
    start: int, delta: int, from_stage: str, to_stage: str
) -> None:
    lead = scored(start)
    lead.score_by(delta, "progress")
    events: Sequence[Any] = lead.collect_events()
    assert names(events) == ["LeadScored", "LeadStageChanged"]
    assert (events[1].from_stage, events[1].to_stage) == (from_stage, to_stage)


def test_scoring_within_a_stage_records_no_stage_change() -> None:
    lead = scored(10)
    lead.score_by(5, "progress")
    assert names(lead.collect_events()) == ["LeadScored"]


def test_big_jump_moves_straight_to_the_reached_stage() -> None:
    lead = new_lead()
    lead.score_by(80, "wants to buy today")
    events: Sequence[Any] = lead.collect_events()
    assert names(events) == ["LeadScored", "LeadStageChanged"]
    assert events[1].to_stage == "hot"


@pytest.mark.parametrize("start", [10, 40, 70, 100])
def test_negative_scoring_never_moves_the_stage_back(start: int) -> None:
    lead = scored(start)
    stage = lead.stage
    lead.score_by(-MAX_DELTA, "cooled down")
    assert names(lead.collect_events()) == ["LeadScored"]
    assert lead.stage is stage
    assert lead.score == 0


def test_custom_thresholds_move_the_stage() -> None:
    lead = new_lead()
    lead.score_by(20, "x", thresholds={"engaged": 5, "qualified": 20, "hot": 90})
    assert lead.stage is Stage.QUALIFIED


def test_missing_custom_threshold_falls_back_to_the_default() -> None:
    assert stage_for(70, {"engaged": 5}) is Stage.HOT


@pytest.mark.parametrize("delta", [MAX_DELTA + 1, -MAX_DELTA - 1])
def test_out_of_range_delta_is_invalid_input(delta: int) -> None:
    lead = scored(50)
    before = state(lead)
    with pytest.raises(InvalidInput):
        lead.score_by(delta, "bogus")
    assert lead.collect_events() == []
    assert state(lead) == before


@pytest.mark.parametrize("delta", [MAX_DELTA, -MAX_DELTA])
def test_delta_at_the_bound_is_accepted(delta: int) -> None:
    lead = scored(50)
    lead.score_by(delta, "edge")
    assert names(lead.collect_events())[0] == "LeadScored"


def test_zero_delta_records_nothing() -> None:
    lead = scored(50)
    before = state(lead)
    lead.score_by(0, "nothing happened")
    assert lead.collect_events() == []
    assert state(lead) == before


def test_attendant_may_move_the_stage_back_by_hand() -> None:
    lead = scored(70)
    lead.move_to(Stage.ENGAGED, "was not ready")
    events: Sequence[Any] = lead.collect_events()
    assert names(events) == ["LeadStageChanged"]
    assert lead.stage is Stage.ENGAGED


def test_moving_to_the_current_stage_is_refused() -> None:
    lead = scored(10)
    before = state(lead)
    with pytest.raises(InvalidTransition):
        lead.move_to(Stage.ENGAGED, "again")
    assert lead.collect_events() == []
    assert state(lead) == before


def test_profile_update_with_a_new_name_is_recorded() -> None:
    lead = new_lead()
    lead.update_profile(name="Maria")
    assert names(lead.collect_events()) == ["LeadProfileUpdated"]
    assert lead.name == "Maria"


@pytest.mark.parametrize("name", [None, "", "Maria"])
def test_profile_update_without_a_change_records_nothing(name: str | None) -> None:
    lead = Lead.create(tenant_id=uuid4(), key="lid:1", phone=None, name="Maria")
    lead.collect_events()
    lead.update_profile(name=name)
    assert lead.collect_events() == []
    assert lead.name == "Maria"


def test_a_stage_moved_by_a_user_names_them_and_scoring_names_nobody() -> None:
    lead = new_lead()
    lead.score_by(15, "pricing")
    lead.move_to(Stage.HOT, "ready to buy", by="user-ana")
    events: list[Any] = list(lead.collect_events())
    changes = [e for e in events if type(e).__name__ == "LeadStageChanged"]
    assert [(e.to_stage, e.by) for e in changes] == [("engaged", None), ("hot", "user-ana")]

"""The team rules as pure functions: routing, the assignment policy, shortcuts, business hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from urbana.domain.attendance import (
    Availability,
    Candidate,
    Queue,
    expand_shortcuts,
    pick_attendant,
    route_handoff,
)
from urbana.domain.hours import BusinessHours, expectation

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
QUEUES = {
    "q-vendas": Queue("Vendas", ("pricing", "buy")),
    "q-sac": Queue("SAC", ("complaint", "cancel")),
    "q-geral": Queue("Geral"),
}


def candidate(
    user: str,
    *,
    availability: Availability = Availability.ONLINE,
    queues: tuple[str, ...] = ("q-vendas",),
    open_count: int = 0,
    idle_since: datetime | None = None,
) -> Candidate:
    return Candidate(user, availability, frozenset(queues), open_count, idle_since)


def picked(
    pool: list[Candidate], queue: str | None, *, exclude: frozenset[str] = frozenset()
) -> str | None:
    chosen = pick_attendant(pool, queue, exclude=exclude)
    return None if chosen is None else chosen.user_id


# ----------------------------------------------------------------- routing


def test_a_handoff_lands_in_the_queue_listing_its_intent() -> None:
    assert route_handoff(intent="pricing", reason="low_confidence", queues=QUEUES, rules={}) == (
        "q-vendas"
    )


def test_the_handoff_reason_also_matches_a_queue() -> None:
    assert route_handoff(intent=None, reason="complaint", queues=QUEUES, rules={}) == "q-sac"


def test_a_tenant_rule_wins_over_the_queues_intents() -> None:
    rules = {"pricing": "q-geral"}
    assert route_handoff(intent="pricing", reason="x", queues=QUEUES, rules=rules) == "q-geral"


def test_a_rule_on_the_reason_wins_over_a_rule_on_the_intent() -> None:
    rules = {"pricing": "q-vendas", "hot_lead": "q-sac"}
    assert route_handoff(intent="pricing", reason="hot_lead", queues=QUEUES, rules=rules) == "q-sac"


def test_without_a_match_the_default_queue_then_the_general_one() -> None:
    assert (
        route_handoff(intent="chat", reason="x", queues=QUEUES, rules={}, default="q-geral")
        == "q-geral"
    )
    assert route_handoff(intent="chat", reason="x", queues=QUEUES, rules={}) is None


def test_rules_and_defaults_naming_a_removed_queue_are_skipped() -> None:
    rules = {"pricing": "q-gone"}
    found = route_handoff(intent="pricing", reason="x", queues=QUEUES, rules=rules, default="q-x")
    assert found == "q-vendas"


# ---------------------------------------------------------------- the policy


def test_the_online_attendant_with_the_fewest_open_conversations_gets_it() -> None:
    assert (
        picked([candidate("ana", open_count=3), candidate("bia", open_count=1)], "q-vendas")
        == "bia"
    )


def test_ties_go_to_the_attendant_idle_longest_never_assigned_first() -> None:
    pool = [
        candidate("ana", idle_since=T0),
        candidate("bia", idle_since=T0 - timedelta(hours=1)),
        candidate("cris", open_count=5),
    ]
    assert picked(pool, "q-vendas") == "bia"
    assert picked([*pool, candidate("duda")], "q-vendas") == "duda"


@pytest.mark.parametrize("availability", [Availability.AWAY, Availability.OFFLINE])
def test_only_online_attendants_are_picked(availability: Availability) -> None:
    assert pick_attendant([candidate("ana", availability=availability)], "q-vendas") is None


def test_only_attendants_of_the_queue_are_picked() -> None:
    pool = [candidate("ana", queues=("q-sac",)), candidate("bia", open_count=9)]
    assert picked(pool, "q-vendas") == "bia"
    assert pick_attendant(pool[:1], "q-vendas") is None


def test_the_general_queue_takes_any_online_attendant() -> None:
    assert picked([candidate("ana", queues=())], None) == "ana"


def test_excluded_attendants_are_skipped() -> None:
    pool = [candidate("ana"), candidate("bia", open_count=2)]
    assert picked(pool, "q-vendas", exclude=frozenset({"ana"})) == "bia"


# --------------------------------------------------------------- shortcuts


def test_shortcuts_expand_where_a_word_starts_and_unknown_ones_stay() -> None:
    canned = {"pix": "Chave Pix: loja@example.com", "oi": "Olá! Sou da Loja."}
    assert expand_shortcuts("/oi", canned) == "Olá! Sou da Loja."
    assert expand_shortcuts("Segue: /PIX obrigado", canned) == (
        "Segue: Chave Pix: loja@example.com obrigado"
    )
    assert expand_shortcuts("/nada e https://loja.com/pix e 1/oi", canned) == (
        "/nada e https://loja.com/pix e 1/oi"
    )


# ----------------------------------------------------------- business hours

WEEK = {"mon": "09:00-12:00,13:00-18:00", "tue": "09:00-18:00", "sat": "09:00-12:00"}
SP = BusinessHours.of(WEEK, "America/Sao_Paulo")  # UTC-3, no daylight saving time


def sp(day: int, hour: int, minute: int = 0) -> datetime:
    """May 2026: the 4th is a Monday; hours in São Paulo, as UTC."""
    return datetime(2026, 5, day, hour + 3, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "is_open"),
    [
        (sp(4, 9), True),
        (sp(4, 8, 59), False),
        (sp(4, 12, 30), False),  # lunch
        (sp(4, 17, 59), True),
        (sp(4, 18), False),
        (sp(6, 10), False),  # Wednesday: closed
        (sp(9, 11), True),  # Saturday morning
    ],
)
def test_open_hours_are_read_in_the_tenants_zone(moment: datetime, is_open: bool) -> None:
    assert SP.is_open(moment) is is_open


def test_an_empty_week_is_always_open() -> None:
    hours = BusinessHours.of({})
    assert hours.is_open(T0)
    assert hours.next_opening(T0) is None


def test_the_next_opening_skips_lunch_closed_days_and_wraps_the_week() -> None:
    assert SP.next_opening(sp(4, 12, 30)) == sp(4, 13)
    assert SP.next_opening(sp(5, 19)) == sp(9, 9)  # Tuesday night -> Saturday
    assert SP.next_opening(sp(9, 12)) == sp(11, 9)  # Saturday noon -> Monday


def test_inside_business_hours_the_lead_is_told_someone_will_answer_soon() -> None:
    assert "fila" in expectation(SP, sp(4, 10))


def test_outside_business_hours_the_lead_is_told_when_the_attendance_opens() -> None:
    assert expectation(SP, sp(4, 19)) == (
        "Nosso atendimento está fechado agora. Um atendente vai falar com você amanhã às 09:00."
    )
    assert expectation(SP, sp(4, 12, 10)).endswith("hoje às 13:00.")
    assert expectation(SP, sp(5, 19)).endswith("sábado às 09:00.")


def test_the_tenant_overrides_the_expectation_messages() -> None:
    overrides = {"expect_closed": "Voltamos {abertura}!", "expect_queue": "Já vamos te atender."}
    assert expectation(SP, sp(4, 19), overrides=overrides) == "Voltamos amanhã às 09:00!"
    assert expectation(SP, sp(4, 10), overrides=overrides) == "Já vamos te atender."

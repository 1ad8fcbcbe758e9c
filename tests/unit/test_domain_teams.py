"""Queues and canned responses on the Tenant, and the team settings it validates."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pytest

from urbana.domain.attendance import Queue
from urbana.domain.errors import DomainError, InvalidInput, NotFound
from urbana.domain.tenant import Tenant


def registered() -> Tenant:
    tenant = Tenant.register(f"tenant-{uuid4().hex}")
    tenant.collect_events()
    return tenant


def recorded(tenant: Tenant) -> list[Any]:
    return list(tenant.collect_events())


def assert_refused(tenant: Tenant, error: type[DomainError], command: Callable[[], object]) -> None:
    before = copy.deepcopy({k: v for k, v in vars(tenant).items() if k != "_pending_events"})
    with pytest.raises(error):
        command()
    assert tenant.collect_events() == []
    assert {k: v for k, v in vars(tenant).items() if k != "_pending_events"} == before


def test_a_queue_is_created_with_its_intents_normalised() -> None:
    tenant = registered()
    tenant.create_queue(queue_id="q1", name="  Vendas   e orçamentos ", intents=("Pricing", "buy"))
    events = recorded(tenant)
    assert [type(e).__name__ for e in events] == ["QueueCreated"]
    assert events[0].tenant_id == tenant.id
    assert tenant.queues == {"q1": Queue("Vendas e orçamentos", ("pricing", "buy"))}


def test_queue_names_and_ids_are_unique_per_tenant() -> None:
    tenant = registered()
    tenant.create_queue(queue_id="q1", name="Vendas")
    tenant.collect_events()
    assert_refused(tenant, InvalidInput, lambda: tenant.create_queue(queue_id="q1", name="Outra"))
    assert_refused(tenant, InvalidInput, lambda: tenant.create_queue(queue_id="q2", name="VENDAS"))


@pytest.mark.parametrize(
    ("name", "intents"),
    [("", ()), ("x" * 101, ()), ("Vendas", ("não vale",))],
    ids=["empty", "too-long", "bad-intent"],
)
def test_a_malformed_queue_is_refused(name: str, intents: tuple[str, ...]) -> None:
    tenant = registered()
    assert_refused(
        tenant, InvalidInput, lambda: tenant.create_queue(queue_id="q", name=name, intents=intents)
    )


def test_changing_a_queue_records_the_whole_queue_and_nothing_when_unchanged() -> None:
    tenant = registered()
    tenant.create_queue(queue_id="q1", name="Vendas", intents=("pricing",))
    tenant.collect_events()
    tenant.change_queue(queue_id="q1", intents=("pricing", "buy"))
    events = recorded(tenant)
    assert (events[0].name, events[0].intents) == ("Vendas", ["pricing", "buy"])
    tenant.change_queue(queue_id="q1", name="Vendas")
    assert tenant.collect_events() == []


def test_changing_an_unknown_queue_is_not_found() -> None:
    tenant = registered()
    assert_refused(tenant, NotFound, lambda: tenant.change_queue(queue_id="nope", name="X"))


def test_canned_responses_are_saved_by_shortcut_and_removed() -> None:
    tenant = registered()
    tenant.save_canned_response(shortcut="/Pix", text=" Nossa chave Pix é loja@example.com ")
    assert tenant.canned == {"pix": "Nossa chave Pix é loja@example.com"}
    tenant.save_canned_response(shortcut="pix", text="Nossa chave Pix é loja@example.com")
    assert [type(e).__name__ for e in recorded(tenant)] == ["CannedResponseSaved"]
    tenant.remove_canned_response(shortcut="/pix")
    assert [type(e).__name__ for e in recorded(tenant)] == ["CannedResponseRemoved"]
    assert tenant.canned == {}
    assert_refused(tenant, NotFound, lambda: tenant.remove_canned_response(shortcut="pix"))


@pytest.mark.parametrize(
    ("shortcut", "text"),
    [("", "x"), ("/com espaço", "x"), ("/" + "a" * 33, "x"), ("/ok", "  "), ("/ok", "x" * 4097)],
)
def test_a_malformed_canned_response_is_refused(shortcut: str, text: str) -> None:
    tenant = registered()
    assert_refused(
        tenant, InvalidInput, lambda: tenant.save_canned_response(shortcut=shortcut, text=text)
    )


def test_team_settings_are_validated_and_normalised() -> None:
    tenant = registered()
    tenant.change_settings(
        business_hours={"Mon": "13:00-18:00, 08:00-12:00", "sat": "09:00-24:00"},
        timezone="America/Manaus",
        inactivity_limit_s=600,
        handoff_queues={"Complaint": "q-sac"},
        default_queue="q-geral",
    )
    settings = tenant.settings
    assert settings.business_hours == {"mon": "08:00-12:00,13:00-18:00", "sat": "09:00-24:00"}
    assert (settings.timezone, settings.inactivity_limit_s) == ("America/Manaus", 600)
    assert settings.handoff_queues == {"complaint": "q-sac"}
    assert settings.default_queue == "q-geral"


@pytest.mark.parametrize(
    "changes",
    [
        {"business_hours": {"funday": "09:00-18:00"}},
        {"business_hours": {"mon": "18:00-09:00"}},
        {"business_hours": {"mon": "09:00-12:00,11:00-13:00"}},
        {"business_hours": {"mon": "9h-18h"}},
        {"business_hours": {"mon": "09:00-25:00"}},
        {"timezone": "Mars/Olympus"},
        {"inactivity_limit_s": -1},
        {"handoff_queues": {"não vale": "q"}},
    ],
)
def test_malformed_team_settings_are_refused(changes: dict[str, Any]) -> None:
    tenant = registered()
    assert_refused(tenant, InvalidInput, lambda: tenant.change_settings(**changes))

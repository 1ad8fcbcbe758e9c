"""The Tenant aggregate: name, channels and settings are validated before recording."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

import pytest

from urbana.domain.channels import CHANNELS
from urbana.domain.contacts import channel_route_id_for, tenant_id_for
from urbana.domain.errors import InvalidInput
from urbana.domain.tenant import ChannelRoute, TelegramTarget, Tenant, TenantSettings


def registered(name: str | None = None) -> Tenant:
    tenant = Tenant.register(name or f"tenant-{uuid4().hex}")
    tenant.collect_events()
    return tenant


def names(events: Sequence[object]) -> list[str]:
    return [type(e).__name__ for e in events]


def state(tenant: Tenant) -> dict[str, Any]:
    return copy.deepcopy({k: v for k, v in vars(tenant).items() if k != "_pending_events"})


def test_register_records_tenant_registered_with_default_settings() -> None:
    tenant = Tenant.register("Imobiliária Sol")
    assert names(tenant.collect_events()) == ["TenantRegistered"]
    assert tenant.settings == TenantSettings()
    assert tenant.channels == {}


def test_register_strips_the_name_and_derives_the_id_from_it() -> None:
    tenant = Tenant.register("  Imobiliária Sol  ")
    assert tenant.name == "Imobiliária Sol"
    assert tenant.id == tenant_id_for("imobiliária sol")


@pytest.mark.parametrize("name", ["", "   ", "\t\n", "x" * 201])
def test_register_rejects_an_invalid_name(name: str) -> None:
    with pytest.raises(InvalidInput):
        Tenant.register(name)


def test_register_accepts_a_name_of_200_characters() -> None:
    assert Tenant.register("x" * 200).name == "x" * 200


@pytest.mark.parametrize("channel", CHANNELS)
def test_connect_channel_records_the_route(channel: str) -> None:
    tenant = registered()
    tenant.connect_channel(
        channel=channel, route_key="1234567890", public={"phone": "5511"}, secrets={"token": "t"}
    )
    assert names(tenant.collect_events()) == ["ChannelConnected"]
    assert tenant.channels[channel]["route_key"] == "1234567890"


@pytest.mark.parametrize("channel", ["telegram", "", "Cloud"])
def test_connect_channel_rejects_an_unknown_channel_kind(channel: str) -> None:
    tenant = registered()
    before = state(tenant)
    with pytest.raises(InvalidInput):
        tenant.connect_channel(channel=channel, route_key="1", public={}, secrets={})
    assert tenant.collect_events() == []
    assert state(tenant) == before


def test_connect_channel_requires_a_route_key() -> None:
    tenant = registered()
    before = state(tenant)
    with pytest.raises(InvalidInput):
        tenant.connect_channel(channel="cloud", route_key="", public={}, secrets={})
    assert tenant.collect_events() == []
    assert state(tenant) == before


def test_change_settings_updates_known_keys_only() -> None:
    tenant = registered()
    tenant.change_settings(confidence_threshold=0.7, hot_score=80)
    assert names(tenant.collect_events()) == ["HandoffRulesChanged"]
    assert tenant.settings.confidence_threshold == 0.7
    assert tenant.settings.hot_score == 80
    assert tenant.settings.debounce_ms == TenantSettings().debounce_ms == 1500


def test_change_settings_records_the_values_as_the_settings_hold_them() -> None:
    tenant = registered()
    tenant.change_settings(handoff_intents=["price"], debounce_ms="300", include_groups=1)
    changed: Any
    (changed,) = tenant.collect_events()
    assert changed.changes == {
        "handoff_intents": ("price",),
        "debounce_ms": 300,
        "include_groups": True,
    }
    assert tenant.settings.handoff_intents == ("price",)
    assert tenant.settings.debounce_ms == 300


@pytest.mark.parametrize(
    "changes",
    [
        {"debounce_ms": "soon"},
        {"stage_thresholds": {"hot": "high"}},
        {"handoff_intents": 3},
        {"include_groups": "false"},  # bool("false") would read as True
        {"confidence_threshold": 7},
        {"debounce_ms": 1.5},
        {"hot_score": True},
    ],
)
def test_change_settings_refuses_a_value_it_cannot_read(changes: dict[str, Any]) -> None:
    tenant = registered()
    before = state(tenant)
    with pytest.raises(InvalidInput):
        tenant.change_settings(**changes)
    assert tenant.collect_events() == []
    assert state(tenant) == before


def test_the_prompt_is_not_a_setting_change_settings_takes() -> None:
    with pytest.raises(InvalidInput, match="prompt"):
        registered().change_settings(prompt="Você é a assistente.")


def test_change_settings_rejects_unknown_keys() -> None:
    tenant = registered()
    before = state(tenant)
    with pytest.raises(InvalidInput, match="colour"):
        tenant.change_settings(hot_score=80, colour="blue")
    assert tenant.collect_events() == []
    assert state(tenant) == before


def test_change_prompt_records_the_prompt() -> None:
    tenant = registered()
    tenant.change_prompt("Você é a assistente da Imobiliária Sol.")
    assert names(tenant.collect_events()) == ["PromptChanged"]
    assert tenant.settings.prompt == "Você é a assistente da Imobiliária Sol."


def test_change_prompt_rejects_a_prompt_over_20000_characters() -> None:
    tenant = registered()
    before = state(tenant)
    with pytest.raises(InvalidInput):
        tenant.change_prompt("x" * 20_001)
    assert tenant.collect_events() == []
    assert state(tenant) == before


def test_tenants_do_not_share_mutable_settings() -> None:
    first, second = registered(), registered()
    for field in dataclasses.fields(TenantSettings):
        value = getattr(first.settings, field.name)
        if isinstance(value, dict):
            assert value is not getattr(second.settings, field.name), field.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.settings.hot_score = 1  # type: ignore[misc]  # read-only on purpose: it must raise


def test_channel_route_id_comes_from_channel_and_route_key() -> None:
    tenant_id = uuid4()
    route = ChannelRoute(channel="cloud", route_key="1234567890", tenant_id=tenant_id)
    assert route.id == channel_route_id_for("cloud", "1234567890")
    assert route.tenant_id == tenant_id


def test_a_knowledge_document_over_the_limit_is_refused_and_records_nothing() -> None:
    from urbana.domain.tenant import MAX_DOCUMENT

    tenant = Tenant.register("Loja Grande")
    tenant.collect_events()
    with pytest.raises(InvalidInput):
        tenant.add_knowledge_document(name="manual.md", text="x" * (MAX_DOCUMENT + 1))
    assert tenant.collect_events() == []
    tenant.add_knowledge_document(name="manual.md", text="Trocas em até 30 dias.")
    assert tenant.knowledge_documents == {"manual.md": 22}


def test_telegram_notifications_are_configured_with_a_token_and_can_be_turned_off() -> None:
    tenant = Tenant.register(f"tenant-{uuid4().hex}")
    assert tenant.telegram is None
    with pytest.raises(InvalidInput):
        tenant.configure_telegram(chat_id="-100123")
    with pytest.raises(InvalidInput):
        tenant.configure_telegram(chat_id="  ", bot_token="123:abc")
    tenant.configure_telegram(chat_id=" -100123 ", bot_token="123:abc")
    assert tenant.telegram == TelegramTarget("-100123", "123:abc")
    tenant.configure_telegram(chat_id=None)
    assert tenant.telegram is None


def test_a_new_telegram_chat_keeps_the_configured_bot_token() -> None:
    tenant = Tenant.register(f"tenant-{uuid4().hex}")
    tenant.configure_telegram(chat_id="-100123", bot_token="123:abc")
    tenant.configure_telegram(chat_id="-100456")
    assert tenant.telegram == TelegramTarget("-100456", "123:abc")
    tenant.configure_telegram(chat_id="-100456", bot_token="789:xyz")
    assert tenant.telegram == TelegramTarget("-100456", "789:xyz")

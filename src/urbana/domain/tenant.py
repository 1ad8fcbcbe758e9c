"""The Tenant aggregate (configuration) and the index aggregates that route to it."""

from __future__ import annotations

import copy
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from urbana.domain.channels import CHANNELS
from urbana.domain.contacts import channel_route_id_for, tenant_id_for
from urbana.domain.errors import InvalidInput
from urbana.domain.pii import personal

# The document travels in its event; the store's pipelined insert stalls on events of
# several hundred kB, so large documents are split by the operator.
MAX_DOCUMENT = 200_000

DEFAULT_SETTINGS: dict[str, Any] = {
    "debounce_ms": 1500,
    "confidence_threshold": 0.55,
    "hot_score": 70,
    "stage_thresholds": {"engaged": 10, "qualified": 40, "hot": 70},
    "handoff_intents": ["complaint", "cancel", "human"],
    "include_groups": False,
    "bot_messages": {},  # overrides of urbana.domain.reply's Portuguese defaults
    "outbound": None,  # None: reply through the conversation's gateway; "console": print
    "rate_limit_per_s": 80,  # sends per second; Meta's default Cloud API throughput per number
}


class Tenant(Aggregate):
    @staticmethod
    def create_id(name: str, **_: Any) -> UUID:
        return tenant_id_for(name)

    @classmethod
    def register(cls, name: str) -> Tenant:
        if not name.strip():
            raise InvalidInput("tenant name is required")
        if len(name) > 200:
            raise InvalidInput("tenant name longer than 200 characters")
        return cls(name=name.strip())

    @event("TenantRegistered")
    def __init__(self, name: str) -> None:
        self.name = name
        self.channels: dict[str, dict[str, Any]] = {}
        self.settings: dict[str, Any] = copy.deepcopy(DEFAULT_SETTINGS)
        self.prompt: str | None = None
        self.knowledge_documents: dict[str, int] = {}  # name -> characters

    def connect_channel(
        self, *, channel: str, route_key: str, public: dict[str, str], secrets: dict[str, str]
    ) -> None:
        """Connect a gateway. `public` holds ids and URLs; `secrets` is stored encrypted."""
        if channel not in CHANNELS:
            raise InvalidInput(f"unknown channel {channel!r}")
        if not route_key:
            raise InvalidInput("route key (phone number id / instance) is required")
        self._channel_connected(
            channel=channel, route_key=route_key, public=public, secrets=secrets
        )

    def change_settings(self, **changes: Any) -> None:
        if not changes:
            raise InvalidInput("no settings to change")
        unknown = set(changes) - set(DEFAULT_SETTINGS)
        if unknown:
            raise InvalidInput(f"unknown settings: {sorted(unknown)}")
        self._settings_changed(changes=changes)

    def change_prompt(self, prompt: str) -> None:
        if len(prompt) > 20_000:
            raise InvalidInput("prompt longer than 20,000 characters")
        self._prompt_changed(prompt=prompt)

    def add_knowledge_document(self, *, name: str, text: str) -> None:
        """Add (or replace, by name) a knowledge document the AI answers from."""
        if not name.strip():
            raise InvalidInput("document name is required")
        if not text.strip():
            raise InvalidInput(f"document {name!r} is empty")
        if len(text) > MAX_DOCUMENT:
            raise InvalidInput(
                f"document {name!r} has {len(text):,} characters; split it (max {MAX_DOCUMENT:,})"
            )
        self._knowledge_added(name=name.strip(), text=text)

    @event("KnowledgeDocumentAdded")
    def _knowledge_added(self, name: str, text: str) -> None:
        self.knowledge_documents[name] = len(text)

    @event("ChannelConnected")
    def _channel_connected(
        self, channel: str, route_key: str, public: dict[str, str], secrets: dict[str, str]
    ) -> None:
        self.channels[channel] = {"route_key": route_key, "public": public, "secrets": secrets}

    @event("HandoffRulesChanged")
    def _settings_changed(self, changes: dict[str, Any]) -> None:
        self.settings.update(changes)

    @event("PromptChanged")
    def _prompt_changed(self, prompt: str) -> None:
        self.prompt = prompt


class ChannelRoute(Aggregate):
    """Index: which tenant owns a phone number id, an instance, or a webhook secret."""

    @staticmethod
    def create_id(channel: str, route_key: str, **_: Any) -> UUID:
        return channel_route_id_for(channel, route_key)

    @event("ChannelRouted")
    def __init__(self, channel: str, route_key: str, tenant_id: UUID) -> None:
        self.channel = channel
        self.tenant_id = tenant_id


personal("Tenant.ChannelConnected", "secrets", subject="originator_id")

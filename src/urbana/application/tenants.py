"""Tenant commands: register, connect a gateway, configure, add knowledge; and routing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from urbana.application.channels import ChannelState
from urbana.application.gateways import GatewayConfig
from urbana.application.unit_of_work import StoreApp, UnitOfWork
from urbana.domain.contacts import channel_route_id_for
from urbana.domain.errors import AlreadyConnected, InvalidInput, NotFound
from urbana.domain.plans import LeadQuota, Plan, billing_month, lead_quota_id_for
from urbana.domain.templates import Template
from urbana.domain.tenant import ChannelRoute, Tenant, TenantSettings


@dataclass(frozen=True, slots=True)
class ChannelView:
    """One of a tenant's channels and its live state, as the API shows it."""

    id: UUID  # its route's stream: uuid5 of kind and key
    kind: str
    route_key: str  # phone number id, instance, instance id
    state: str | None  # None: the gateway has said nothing yet
    reason: str | None
    since: datetime | None
    qr_code: str | None
    pairing_code: str | None


@dataclass(frozen=True, slots=True)
class KnowledgeDocument:
    name: str
    text: str
    version: int  # of the tenant stream event that added it


@dataclass(frozen=True, slots=True)
class PlanUsage:
    """A tenant's plan and its new leads in one (São Paulo) month."""

    plan: str
    lead_limit: int | None  # None: no limit (and nothing is counted)
    month: str  # "2026-12"
    leads: int  # new leads within the limit
    over_limit: int  # new leads past it: recorded, flagged, not answered by the AI

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def settings_json(settings: TenantSettings) -> dict[str, Any]:
    """A tenant's settings as plain JSON values (the API's and `urbana tenant configure`'s)."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()
    }


def queue_id_for(tenant_id: UUID, name: str) -> str:
    """A queue's id: creating the same queue twice is refused instead of duplicated."""
    return str(uuid5(tenant_id, "queue:" + " ".join(name.split()).lower()))


class TenantCommands(StoreApp):
    def register_tenant(self, name: str) -> tuple[UUID, bool]:
        """Register a tenant by name; (id, created). Registering twice is harmless."""

        def work(uow: UnitOfWork) -> tuple[UUID, bool]:
            tenant = Tenant.register(name)
            if uow.get(Tenant, tenant.id) is not None:
                return tenant.id, False
            uow.add(tenant)
            return tenant.id, True

        return self._retrying(work)

    def connect_channel(self, tenant_id: UUID, config: GatewayConfig) -> None:
        """Connect a gateway to a tenant; its routes (id, hashed secrets) must be free."""

        def work(uow: UnitOfWork) -> None:
            tenant = uow.require(Tenant, tenant_id)
            routes = [(config.kind, config.route_key), *config.extra_routes.items()]
            for kind, key in routes:
                route = uow.get(ChannelRoute, channel_route_id_for(kind, key))
                if route is None:
                    uow.add(ChannelRoute(channel=kind, route_key=key, tenant_id=tenant_id))
                elif route.tenant_id != tenant_id:
                    raise AlreadyConnected(f"that {kind} route belongs to another tenant")
            tenant.connect_channel(
                channel=config.kind,
                route_key=config.route_key,
                public=config.public,
                secrets=config.secrets,
            )

        self._retrying(work)

    def add_knowledge_document(self, tenant_id: UUID, name: str, text: str) -> None:
        """Record a knowledge document on the tenant (the pgvector index is built from it)."""
        self._on_tenant(tenant_id, lambda t: t.add_knowledge_document(name=name, text=text))

    def change_settings(self, tenant_id: UUID, **changes: Any) -> None:
        self._on_tenant(tenant_id, lambda t: t.change_settings(**changes))

    def configure_telegram(
        self, tenant_id: UUID, *, chat_id: str | None, bot_token: str | None = None
    ) -> None:
        """Where the tenant's handoff notifications go (None: nowhere)."""
        self._on_tenant(
            tenant_id, lambda t: t.configure_telegram(chat_id=chat_id, bot_token=bot_token)
        )

    def change_plan(
        self, tenant_id: UUID, name: str, lead_limit: int | None = None, *, by: str | None = None
    ) -> Plan:
        """Put a tenant on a plan (the operator's call); InvalidInput for an unknown one."""
        plan = Plan.of(name, lead_limit)
        self._on_tenant(tenant_id, lambda t: t.change_plan(plan, by=by))
        return plan

    def plan_usage(self, tenant_id: UUID, at: datetime) -> PlanUsage:
        """The tenant's plan and its count for the month `at` falls in (São Paulo's)."""
        plan = self.get(Tenant, tenant_id).plan
        month = billing_month(at)
        try:
            quota = self.get(LeadQuota, lead_quota_id_for(tenant_id, month))
        except NotFound:
            return PlanUsage(plan.name, plan.lead_limit, month, 0, 0)
        return PlanUsage(plan.name, plan.lead_limit, month, quota.admitted, quota.over_limit)

    def change_prompt(self, tenant_id: UUID, prompt: str) -> None:
        self._on_tenant(tenant_id, lambda t: t.change_prompt(prompt))

    def configure_tenant(
        self, tenant_id: UUID, changes: Mapping[str, Any], *, by: str | None = None
    ) -> TenantSettings:
        """Change the prompt and any other settings in one transaction; the settings after.

        `by` is the user who changed them (None: the operator's CLI).

        An unknown key or a bad value refuses the whole change (InvalidInput): nothing
        is recorded. What equals the current value records nothing either.
        """
        rest = {k: v for k, v in changes.items() if k != "prompt"}
        if not changes:
            raise InvalidInput("no settings to change")
        TenantSettings.read(rest)  # refuse a bad value before anything is recorded

        def work(uow: UnitOfWork) -> TenantSettings:
            tenant = uow.require(Tenant, tenant_id)
            if "prompt" in changes:
                prompt = changes["prompt"]
                if not isinstance(prompt, str):
                    raise InvalidInput("the prompt is a text")
                if prompt != tenant.settings.prompt:
                    tenant.change_prompt(prompt, by=by)
            current = tenant.settings
            differ = {
                k: v for k, v in TenantSettings.read(rest).items() if getattr(current, k) != v
            }
            if differ:
                tenant.change_settings(by=by, **differ)
            return tenant.settings

        return self._retrying(work)

    def create_queue(self, tenant_id: UUID, name: str, intents: tuple[str, ...] = ()) -> str:
        """Create a queue (fila); returns its id, derived from the name it was created with."""
        queue_id = queue_id_for(tenant_id, name)
        self._on_tenant(
            tenant_id, lambda t: t.create_queue(queue_id=queue_id, name=name, intents=intents)
        )
        return queue_id

    def change_queue(
        self,
        tenant_id: UUID,
        queue_id: str,
        *,
        name: str | None = None,
        intents: tuple[str, ...] | None = None,
    ) -> None:
        self._on_tenant(
            tenant_id, lambda t: t.change_queue(queue_id=queue_id, name=name, intents=intents)
        )

    def save_canned_response(self, tenant_id: UUID, shortcut: str, text: str) -> None:
        self._on_tenant(tenant_id, lambda t: t.save_canned_response(shortcut=shortcut, text=text))

    def remove_canned_response(self, tenant_id: UUID, shortcut: str) -> None:
        self._on_tenant(tenant_id, lambda t: t.remove_canned_response(shortcut=shortcut))

    def register_template(
        self, tenant_id: UUID, name: str, *, language: str, parameters: Sequence[str], text: str
    ) -> Template:
        """Register (or replace) an approved WhatsApp template; InvalidInput when malformed."""
        template = Template.of(name, language, parameters, text)
        self._on_tenant(tenant_id, lambda t: t.register_template(template))
        return template

    def remove_template(self, tenant_id: UUID, name: str) -> None:
        self._on_tenant(tenant_id, lambda t: t.remove_template(name=name))

    def record_channel_state(self, tenant_id: UUID, kind: str, state: ChannelState) -> bool:
        """Record a gateway's word on the tenant's channel of `kind`; False when it changes
        nothing (the same state again). NotFound when the tenant has no such channel."""

        def work(uow: UnitOfWork) -> bool:
            route = uow.require(ChannelRoute, self._channel_id(uow, tenant_id, kind))
            return route.change_state(
                state=state.state,
                at=state.at,
                reason=state.reason,
                qr_code=state.qr_code,
                pairing_code=state.pairing_code,
            )

        return self._retrying(work)

    def channels(self, tenant_id: UUID) -> list[ChannelView]:
        """The tenant's channels with their live state, in the order they were connected."""
        tenant = self.get(Tenant, tenant_id)
        views = []
        for kind, config in tenant.channels.items():
            route_id = channel_route_id_for(kind, config["route_key"])
            route = self.get(ChannelRoute, route_id)
            views.append(
                ChannelView(
                    id=route_id,
                    kind=kind,
                    route_key=config["route_key"],
                    state=route.state,
                    reason=route.state_reason,
                    since=route.state_at,
                    qr_code=route.pairing.get("qr_code"),
                    pairing_code=route.pairing.get("pairing_code"),
                )
            )
        return views

    def channel(self, tenant_id: UUID, channel_id: UUID) -> tuple[str, dict[str, str]]:
        """The tenant's channel by id: its kind and configuration (public and secrets).

        Another tenant's channel, or a route that is only a secret's hash, is NotFound.
        """
        tenant = self.get(Tenant, tenant_id)
        for kind, config in tenant.channels.items():
            if channel_route_id_for(kind, config["route_key"]) == channel_id:
                return kind, {**config["public"], **config["secrets"]}
        raise NotFound(f"no channel {channel_id}")

    @staticmethod
    def _channel_id(uow: UnitOfWork, tenant_id: UUID, kind: str) -> UUID:
        config = uow.require(Tenant, tenant_id).channels.get(kind)
        if config is None:
            raise NotFound(f"no {kind} channel")
        return channel_route_id_for(kind, config["route_key"])

    def _on_tenant(self, tenant_id: UUID, change: Callable[[Tenant], Any]) -> None:
        self._on(Tenant, tenant_id, change)

    def route(self, channel: str, route_key: str) -> UUID | None:
        """The tenant that owns a routing key (phone number id, instance, secret hash)."""
        try:
            return self.get(ChannelRoute, channel_route_id_for(channel, route_key)).tenant_id
        except NotFound:
            return None

    def knowledge_documents(self, tenant_id: UUID) -> list[KnowledgeDocument]:
        """The tenant's knowledge documents as last added, from its event stream."""
        latest: dict[str, KnowledgeDocument] = {}
        for event in self.events.get(tenant_id):
            if type(event).__name__ == "KnowledgeDocumentAdded":
                data: dict[str, Any] = vars(event)
                latest[data["name"]] = KnowledgeDocument(
                    data["name"], data["text"], data["originator_version"]
                )
        return list(latest.values())

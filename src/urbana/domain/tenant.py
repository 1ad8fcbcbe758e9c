"""The Tenant aggregate (configuration) and the index aggregates that route to it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from urbana.domain.attendance import Queue, codes, queue_name, shortcut_code
from urbana.domain.channels import CHANNELS
from urbana.domain.contacts import channel_route_id_for, tenant_id_for
from urbana.domain.errors import InvalidInput, NotFound
from urbana.domain.events import TenantScoped, added_in_v3, nobody_acted, tenant_added_in_v2
from urbana.domain.pii import personal
from urbana.domain.plans import Plan
from urbana.domain.reply import MAX_REPLY
from urbana.domain.settings import TelegramTarget as TelegramTarget
from urbana.domain.settings import TenantSettings as TenantSettings
from urbana.domain.templates import Template

# The document travels in its event; the store's pipelined insert stalls on events of
# several hundred kB, so large documents are split by the operator.
MAX_DOCUMENT = 200_000


class Tenant(TenantScoped):
    @staticmethod
    def create_id(name: str, **_: Any) -> UUID:
        return tenant_id_for(name)

    @classmethod
    def register(cls, name: str) -> Tenant:
        if not name.strip():
            raise InvalidInput("tenant name is required")
        if len(name) > 200:
            raise InvalidInput("tenant name longer than 200 characters")
        return cls(name=name.strip(), tenant_id=tenant_id_for(name))

    @event("TenantRegistered")
    def __init__(self, name: str, tenant_id: UUID) -> None:
        self.tenant_id = tenant_id  # its own id: a tenant's events belong to it
        self.name = name
        self.channels: dict[str, dict[str, Any]] = {}
        self.settings = TenantSettings()
        self.knowledge_documents: dict[str, int] = {}  # name -> characters
        self.queues: dict[str, Queue] = {}  # by queue id
        self.canned: dict[str, str] = {}  # shortcut (without the slash) -> text
        self.telegram: TelegramTarget | None = None  # handoff notifications go nowhere
        self.templates: dict[str, Template] = {}  # approved WhatsApp templates, by name

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

    def change_settings(self, by: str | None = None, **changes: Any) -> None:
        """Change some of the settings (see `TenantSettings`); the others keep their value.

        `by` is the user who changed them (None: the operator or the system).
        """
        if not changes:
            raise InvalidInput("no settings to change")
        self._settings_changed(changes=TenantSettings.read(changes), by=by or None)

    def configure_telegram(self, *, chat_id: str | None, bot_token: str | None = None) -> None:
        """Send handoff notifications to a Telegram chat (None: stop sending them).

        The bot token is stored encrypted, as channel secrets are. Without one, the bot
        already configured posts to the new chat (a token is never read back to be resent).
        """
        if chat_id is None:
            self._notifications_configured(telegram_chat_id=None, secrets={})
            return
        chat_id = chat_id.strip()
        if not chat_id:
            raise InvalidInput("telegram chat id is empty")
        token = (bot_token or "").strip() or (self.telegram.bot_token if self.telegram else "")
        if not token:
            raise InvalidInput("telegram bot token is required with a chat id")
        self._notifications_configured(
            telegram_chat_id=chat_id, secrets={"telegram_bot_token": token}
        )

    @property
    def plan(self) -> Plan:
        # Streams (and snapshots) from before plans existed have none: no limit.
        return getattr(self, "_plan", Plan())

    def change_plan(self, plan: Plan, *, by: str | None = None) -> bool:
        """Put the tenant on `plan` (the operator's call); False when it already is."""
        if plan == self.plan:
            return False
        self._plan_changed(plan=plan.name, lead_limit=plan.lead_limit, by=by or None)
        return True

    def change_prompt(self, prompt: str, *, by: str | None = None) -> None:
        if len(prompt) > 20_000:
            raise InvalidInput("prompt longer than 20,000 characters")
        self._prompt_changed(prompt=prompt, by=by or None)

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

    def create_queue(self, *, queue_id: str, name: str, intents: tuple[str, ...] = ()) -> None:
        """A new queue (fila); a handoff with one of `intents` lands in it."""
        if not queue_id:
            raise InvalidInput("queue id is required")
        if queue_id in self.queues:
            raise InvalidInput(f"queue {queue_id} already exists")
        cleaned = queue_name(name)
        if any(q.name.lower() == cleaned.lower() for q in self.queues.values()):
            raise InvalidInput(f"a queue named {cleaned!r} already exists")
        self._queue_created(queue_id=queue_id, name=cleaned, intents=list(codes(intents, "intent")))

    def change_queue(
        self, *, queue_id: str, name: str | None = None, intents: tuple[str, ...] | None = None
    ) -> None:
        """Rename a queue or change its intents; the event carries the whole new queue."""
        queue = self.queues.get(queue_id)
        if queue is None:
            raise NotFound(f"no queue {queue_id}")
        new_name = queue.name if name is None else queue_name(name)
        if any(q.name.lower() == new_name.lower() for i, q in self.queues.items() if i != queue_id):
            raise InvalidInput(f"a queue named {new_name!r} already exists")
        new_intents = queue.intents if intents is None else codes(intents, "intent")
        if Queue(new_name, new_intents) == queue:
            return
        self._queue_changed(queue_id=queue_id, name=new_name, intents=list(new_intents))

    def save_canned_response(self, *, shortcut: str, text: str) -> None:
        """Save a ready reply (resposta pronta) an attendant expands by typing `/shortcut`."""
        code = shortcut_code(shortcut)
        cleaned = text.strip()
        if not cleaned:
            raise InvalidInput("canned response text is empty")
        if len(cleaned) > MAX_REPLY:
            raise InvalidInput(f"canned response longer than {MAX_REPLY} characters")
        if self.canned.get(code) == cleaned:
            return
        self._canned_saved(shortcut=code, text=cleaned)

    def remove_canned_response(self, *, shortcut: str) -> None:
        code = shortcut_code(shortcut)
        if code not in self.canned:
            raise NotFound(f"no canned response /{code}")
        self._canned_removed(shortcut=code)

    def register_template(self, template: Template) -> None:
        """Register (or replace, by name) an approved template; the same again changes nothing."""
        if self.templates.get(template.name) == template:
            return
        self._template_registered(
            name=template.name,
            language=template.language,
            parameters=list(template.parameters),
            text=template.text,
        )

    def remove_template(self, *, name: str) -> None:
        if name not in self.templates:
            raise NotFound(f"no template {name}")
        self._template_removed(name=name)

    @event("TemplateRegistered")
    def _template_registered(
        self, name: str, language: str, parameters: list[str], text: str
    ) -> None:
        self.templates[name] = Template(name, language, tuple(parameters), text)

    @event("TemplateRemoved")
    def _template_removed(self, name: str) -> None:
        del self.templates[name]

    @event("QueueCreated")
    def _queue_created(self, queue_id: str, name: str, intents: list[str]) -> None:
        self.queues[queue_id] = Queue(name=name, intents=tuple(intents))

    @event("QueueChanged")
    def _queue_changed(self, queue_id: str, name: str, intents: list[str]) -> None:
        self.queues[queue_id] = Queue(name=name, intents=tuple(intents))

    @event("CannedResponseSaved")
    def _canned_saved(self, shortcut: str, text: str) -> None:
        self.canned[shortcut] = text

    @event("CannedResponseRemoved")
    def _canned_removed(self, shortcut: str) -> None:
        del self.canned[shortcut]

    @event("KnowledgeDocumentAdded")
    def _knowledge_added(self, name: str, text: str) -> None:
        self.knowledge_documents[name] = len(text)

    @event("ChannelConnected")
    def _channel_connected(
        self, channel: str, route_key: str, public: dict[str, str], secrets: dict[str, str]
    ) -> None:
        self.channels[channel] = {"route_key": route_key, "public": public, "secrets": secrets}

    @event("HandoffRulesChanged")
    def _settings_changed(self, changes: dict[str, Any], by: str | None) -> None:
        self.settings = self.settings.changed(changes)

    @event("NotificationsConfigured")
    def _notifications_configured(
        self, telegram_chat_id: str | None, secrets: dict[str, str]
    ) -> None:
        token = secrets.get("telegram_bot_token")
        self.telegram = (
            TelegramTarget(telegram_chat_id, token) if telegram_chat_id and token else None
        )

    @event("PlanChanged")
    def _plan_changed(self, plan: str, lead_limit: int | None, by: str | None) -> None:
        self._plan = Plan(plan, lead_limit)

    @event("PromptChanged")
    def _prompt_changed(self, prompt: str, by: str | None) -> None:
        self.settings = replace(self.settings, prompt=prompt)


# A channel's link to WhatsApp as its gateway reports it (Evolution's `connection.update`
# and `qrcode.updated`): connected, connecting, disconnected, or waiting for its QR code
# to be scanned. None until the gateway has said anything.
CHANNEL_STATES = ("connected", "connecting", "disconnected", "waiting_qr")


class ChannelRoute(Aggregate):
    """Index: which tenant owns a phone number id, an instance, or a webhook secret.

    The route of a channel's own key (its phone number id or instance, not a secret's
    hash) is the channel: its id names it in the API, and its stream records the
    channel's live state (see docs/architecture.md, Channel state).
    """

    @staticmethod
    def create_id(channel: str, route_key: str, **_: Any) -> UUID:
        return channel_route_id_for(channel, route_key)

    @event("ChannelRouted")
    def __init__(self, channel: str, route_key: str, tenant_id: UUID) -> None:
        self.channel = channel
        self.tenant_id = tenant_id
        self.state: str | None = None
        self.state_reason: str | None = None
        self.state_at: datetime | None = None
        self.pairing: dict[str, str] = {}  # qr_code, pairing_code: only while waiting_qr

    def change_state(
        self,
        *,
        state: str,
        at: datetime,
        reason: str | None = None,
        qr_code: str | None = None,
        pairing_code: str | None = None,
    ) -> bool:
        """Record what the gateway says of the link; False (nothing recorded) when it
        says what the channel already holds. The QR code and the pairing code are a way
        into the WhatsApp account: they are sealed like the channel's secrets."""
        if state not in CHANNEL_STATES:
            raise InvalidInput(f"unknown channel state {state!r}")
        if at.tzinfo is None:
            raise InvalidInput("a channel state's time must be timezone-aware")
        pairing = {k: v for k, v in (("qr_code", qr_code), ("pairing_code", pairing_code)) if v}
        if state == "waiting_qr" and "qr_code" not in pairing:
            raise InvalidInput("waiting for a scan needs the QR code")
        if state != "waiting_qr" and pairing:
            raise InvalidInput(f"a {state} channel has no QR code")
        if (state, reason, pairing) == (self.state, self.state_reason, self.pairing):
            return False
        self.trigger_event(
            self.ChannelStateChanged,
            tenant_id=self.tenant_id,
            state=state,
            reason=reason,
            at=at,
            secrets=pairing,
        )
        return True

    class ChannelStateChanged(Aggregate.Event):
        tenant_id: UUID
        state: str
        reason: str | None  # the gateway's (Evolution's `statusReason`, e.g. 401: logged out)
        at: datetime  # when the gateway said it
        secrets: dict[str, str]

        def apply(self, aggregate: Any) -> None:
            route: ChannelRoute = aggregate
            route.state = self.state
            route.state_reason = self.reason
            route.state_at = self.at
            route.pairing = dict(self.secrets)


tenant_added_in_v2(
    Tenant,
    first_had_it=False,
    tenant_is_stream=True,
    born_with_it=(
        "QueueCreated",
        "QueueChanged",
        "CannedResponseSaved",
        "CannedResponseRemoved",
        "NotificationsConfigured",
        "TemplateRegistered",
        "TemplateRemoved",
        "PlanChanged",
    ),
)

added_in_v3(Tenant, {"HandoffRulesChanged": nobody_acted, "PromptChanged": nobody_acted})

personal("Tenant.ChannelConnected", "secrets", subject="originator_id")
personal("Tenant.NotificationsConfigured", "secrets", subject="originator_id")
personal("ChannelRoute.ChannelStateChanged", "secrets", subject="tenant_id")

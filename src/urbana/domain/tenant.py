"""The Tenant aggregate (configuration) and the index aggregates that route to it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from urbana.domain.attendance import Queue, codes, queue_name, shortcut_code
from urbana.domain.channels import CHANNELS
from urbana.domain.contacts import channel_route_id_for, tenant_id_for
from urbana.domain.errors import InvalidInput, NotFound
from urbana.domain.events import TenantScoped, added_in_v3, nobody_acted, tenant_added_in_v2
from urbana.domain.hours import DEFAULT_TIMEZONE, BusinessHours, read_week, zone
from urbana.domain.lead import DEFAULT_THRESHOLDS
from urbana.domain.pii import personal
from urbana.domain.reply import MAX_REPLY

# The document travels in its event; the store's pipelined insert stalls on events of
# several hundred kB, so large documents are split by the operator.
MAX_DOCUMENT = 200_000


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value)


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in dict(value).items()}


def _int_map(value: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in dict(value).items()}


def _flag(value: Any) -> bool:
    # bool("false") is True: a flag is a boolean (or 0 / 1), never coerced from text.
    if value not in (True, False) or isinstance(value, float | str):
        raise ValueError(f"{value!r} is not true or false")
    return bool(value)


def _whole(value: Any) -> int:
    # int(1.7) is 1 and int(True) is 1: a count is an integer, or its decimal text.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


def _ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a number")
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{value!r} is not between 0 and 1")
    return number


def _timezone(value: Any) -> str:
    zone(str(value))
    return str(value)


def _non_negative(value: Any) -> int:
    number = _whole(value)
    if number < 0:
        raise ValueError(f"{value!r} is negative")
    return number


def _optional_days(value: Any) -> int | None:
    if value is None:
        return None
    days = _whole(value)
    if days < 1:
        raise ValueError(f"{value!r} is not a number of days (1 or more; null keeps forever)")
    return days


def _rules(value: Any) -> dict[str, str]:
    """Handoff reason or intent -> queue id."""
    return {code: str(v) for k, v in dict(value).items() for code in codes([str(k)], "rule key")}


@dataclass(frozen=True, slots=True)
class TelegramTarget:
    """Where a tenant's attendants are told about handoffs: a chat, through its own bot."""

    chat_id: str
    bot_token: str


@dataclass(frozen=True, slots=True)
class TenantSettings:
    """How a tenant wants its conversations handled; new tenants start from these defaults.

    The prompt changes through `Tenant.change_prompt` (its own event); every other
    field through `Tenant.change_settings`. Mapping fields are replaced whole, never
    changed in place.
    """

    prompt: str | None = None  # the tenant's instructions to the AI
    debounce_ms: int = 1500  # quiet time that ends a burst of inbound messages
    confidence_threshold: float = 0.55  # under it, the AI's answer goes to a human
    hot_score: int = 70  # crossing it hands the lead to a human
    stage_thresholds: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    handoff_intents: tuple[str, ...] = ("complaint", "cancel", "human")
    include_groups: bool = False  # answer WhatsApp group messages too
    bot_messages: Mapping[str, str] = field(default_factory=dict)  # overrides of domain.reply's
    outbound: str | None = None  # None: reply through the conversation's gateway; "console": print
    rate_limit_per_s: int = 80  # sends per second; Meta's default Cloud API throughput per number
    business_hours: Mapping[str, str] = field(default_factory=dict)  # see domain.hours; {}: always
    timezone: str = DEFAULT_TIMEZONE
    inactivity_limit_s: int = 900  # an attendant silent this long loses the conversation; 0: never
    handoff_queues: Mapping[str, str] = field(default_factory=dict)  # reason or intent -> queue id
    default_queue: str | None = None  # where a handoff no rule routes lands (None: general)
    retention_days: int | None = None  # subjects inactive longer are erased; None: keep

    @property
    def hours(self) -> BusinessHours:
        return BusinessHours.of(self.business_hours, self.timezone)

    @staticmethod
    def read(changes: Mapping[str, Any]) -> dict[str, Any]:
        """`changes` as the settings hold them; InvalidInput for an unknown or bad one."""
        unknown = set(changes) - set(_SETTINGS)
        if unknown:
            raise InvalidInput(f"unknown settings: {sorted(unknown)}")
        try:
            return {name: _SETTINGS[name](value) for name, value in changes.items()}
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"invalid setting: {exc}") from None

    def changed(self, changes: Mapping[str, Any]) -> TenantSettings:
        """These settings with `changes` applied."""
        return replace(self, **self.read(changes))


# What each field changeable by `change_settings` takes, and how a value is read.
_SETTINGS: dict[str, Callable[[Any], Any]] = {
    "debounce_ms": _non_negative,
    "confidence_threshold": _ratio,
    "hot_score": _non_negative,
    "stage_thresholds": _int_map,
    "handoff_intents": _strings,
    "include_groups": _flag,
    "bot_messages": _str_map,
    "outbound": _optional_str,
    "rate_limit_per_s": _non_negative,
    "business_hours": read_week,
    "timezone": _timezone,
    "inactivity_limit_s": _non_negative,
    "handoff_queues": _rules,
    "default_queue": _optional_str,
    "retention_days": _optional_days,
}


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

        The bot token is stored encrypted, as channel secrets are.
        """
        if chat_id is None:
            self._notifications_configured(telegram_chat_id=None, secrets={})
            return
        chat_id = chat_id.strip()
        if not chat_id:
            raise InvalidInput("telegram chat id is empty")
        token = (bot_token or "").strip()
        if not token:
            raise InvalidInput("telegram bot token is required with a chat id")
        self._notifications_configured(
            telegram_chat_id=chat_id, secrets={"telegram_bot_token": token}
        )

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

    @event("PromptChanged")
    def _prompt_changed(self, prompt: str, by: str | None) -> None:
        self.settings = replace(self.settings, prompt=prompt)


class ChannelRoute(Aggregate):
    """Index: which tenant owns a phone number id, an instance, or a webhook secret."""

    @staticmethod
    def create_id(channel: str, route_key: str, **_: Any) -> UUID:
        return channel_route_id_for(channel, route_key)

    @event("ChannelRouted")
    def __init__(self, channel: str, route_key: str, tenant_id: UUID) -> None:
        self.channel = channel
        self.tenant_id = tenant_id


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
    ),
)

added_in_v3(Tenant, {"HandoffRulesChanged": nobody_acted, "PromptChanged": nobody_acted})

personal("Tenant.ChannelConnected", "secrets", subject="originator_id")
personal("Tenant.NotificationsConfigured", "secrets", subject="originator_id")

"""A tenant's settings: how it wants its conversations handled, and how each setting
that `Tenant.change_settings` takes is read and checked (see domain.tenant)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from urbana.domain.attendance import codes
from urbana.domain.errors import InvalidInput
from urbana.domain.hours import DEFAULT_TIMEZONE, BusinessHours, read_week, zone
from urbana.domain.lead import DEFAULT_THRESHOLDS
from urbana.domain.templates import exempt_channels


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


def _decay_steps(value: Any) -> dict[str, int]:
    """Hours of a lead's silence -> the (negative) score change due then."""
    steps = {str(_whole(k)): _whole(v) for k, v in dict(value).items()}
    if any(int(k) <= 0 for k in steps) or any(v >= 0 for v in steps.values()):
        raise ValueError("decay steps map positive hours to negative score changes")
    return steps


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
    # Scheduled jobs (see application.jobs): a silent lead cools by these steps (hours of
    # silence -> score change, once each per silence); an open conversation with no
    # activity for `stale_after_days` is closed (0: never).
    decay_steps: Mapping[str, int] = field(default_factory=lambda: {"24": -10, "48": -20})
    stale_after_days: int = 7
    # Evolution API / Z-API channels where free-form messages may go after the 24-hour
    # window (the Cloud API always keeps it: Meta's rule; see domain.templates).
    window_exempt_channels: tuple[str, ...] = ()
    # The follow-up job: one message to a lead quiet this long after the AI answered (0:
    # off), as text (bot message `follow_up`) inside the 24-hour window, and after it
    # only as this approved template (None: nothing after the window).
    follow_up_after_hours: int = 0
    follow_up_template: str | None = None

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
    "decay_steps": _decay_steps,
    "stale_after_days": _non_negative,
    "window_exempt_channels": exempt_channels,
    "follow_up_after_hours": _non_negative,
    "follow_up_template": _optional_str,
}

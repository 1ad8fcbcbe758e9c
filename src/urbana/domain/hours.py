"""Business hours, and what the lead is told about when a person will answer.

A tenant's week is a mapping from weekday (`mon` .. `sun`) to the hours it is open
that day, `"09:00-18:00"` or several spans `"09:00-12:00,13:00-18:00"`, read in the
tenant's time zone. A day left out is closed; an empty week is always open.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from urbana.domain.errors import InvalidInput
from urbana.domain.reply import bot_message

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = (
    "segunda-feira",
    "terça-feira",
    "quarta-feira",
    "quinta-feira",
    "sexta-feira",
    "sábado",
    "domingo",
)
DEFAULT_TIMEZONE = "America/Sao_Paulo"

Span = tuple[time, time]


def _clock(value: str) -> time:
    hours, sep, minutes = value.strip().partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise InvalidInput(f"not a time of day (HH:MM): {value!r}")
    if hours == "24" and minutes == "00":
        return time.max  # the end of the day
    try:
        return time(int(hours), int(minutes))
    except ValueError:
        raise InvalidInput(f"not a time of day (HH:MM): {value!r}") from None


def _spans(value: str) -> tuple[Span, ...]:
    spans: list[Span] = []
    for part in value.split(","):
        start, sep, end = part.partition("-")
        if not sep:
            raise InvalidInput(f"hours are HH:MM-HH:MM: {part.strip()!r}")
        span = (_clock(start), _clock(end))
        if span[0] >= span[1]:
            raise InvalidInput(f"hours end before they start: {part.strip()!r}")
        spans.append(span)
    spans.sort()
    for earlier, later in itertools.pairwise(spans):
        if later[0] < earlier[1]:
            raise InvalidInput(f"hours overlap: {value!r}")
    return tuple(spans)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; InvalidInput when it does not exist."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown time zone {name!r}") from None


def read_week(value: Mapping[str, str]) -> dict[str, str]:
    """A week of hours as the settings keep it; InvalidInput when malformed."""
    out: dict[str, str] = {}
    for day, hours in dict(value).items():
        key = str(day).strip().lower()
        if key not in WEEKDAYS:
            raise InvalidInput(f"unknown weekday {day!r} (use {', '.join(WEEKDAYS)})")
        spans = _spans(str(hours))
        out[key] = ",".join(
            f"{a:%H:%M}-{'24:00' if b == time.max else f'{b:%H:%M}'}" for a, b in spans
        )
    return out


@dataclass(frozen=True, slots=True)
class BusinessHours:
    week: Mapping[int, tuple[Span, ...]]  # by weekday number, Monday = 0
    tz: ZoneInfo

    @classmethod
    def of(cls, week: Mapping[str, str], timezone: str = DEFAULT_TIMEZONE) -> BusinessHours:
        return cls(
            week={WEEKDAYS.index(day): _spans(hours) for day, hours in read_week(week).items()},
            tz=zone(timezone),
        )

    @property
    def always_open(self) -> bool:
        return not self.week

    def is_open(self, now: datetime) -> bool:
        if self.always_open:
            return True
        local = now.astimezone(self.tz)
        moment = local.time().replace(tzinfo=None)
        return any(a <= moment < b for a, b in self.week.get(local.weekday(), ()))

    def next_opening(self, now: datetime) -> datetime | None:
        """When it opens next, in the tenant's zone (None: always open, or never)."""
        if self.always_open:
            return None
        local = now.astimezone(self.tz)
        for days in range(8):
            date = (local + timedelta(days=days)).date()
            for start, _ in self.week.get(date.weekday(), ()):
                at = datetime.combine(date, start, tzinfo=self.tz)
                if at > local:
                    return at
        return None


def when_phrase(at: datetime, now: datetime) -> str:
    """`hoje às 14:00`, `amanhã às 09:00` or `segunda-feira às 09:00` (in `at`'s zone)."""
    today = now.astimezone(at.tzinfo).date()
    days = (at.date() - today).days
    day = "hoje" if days == 0 else "amanhã" if days == 1 else DAY_NAMES[at.weekday()]
    return f"{day} às {at:%H:%M}"


def expectation(
    hours: BusinessHours,
    now: datetime,
    *,
    overrides: Mapping[str, str] | None = None,
) -> str:
    """What the lead is told while waiting in the queue for a person (pt-BR).

    Open: someone answers as soon as one is free. Closed: when the attendance opens.
    The tenant overrides either through its bot messages; `{abertura}` in the closed
    one is replaced with when it opens.
    """
    if hours.is_open(now):
        return bot_message("expect_queue", overrides)
    opening = hours.next_opening(now)
    text = bot_message("expect_closed", overrides)
    when = when_phrase(opening, now) if opening is not None else "assim que possível"
    return text.replace("{abertura}", when)

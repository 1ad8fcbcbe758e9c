"""Working as a team: queues, where a handoff lands, who gets it, and ready replies.

Pure functions over plain values, so that the users' aggregate and the read models
that feed them stay outside the rules (see docs/architecture.md, Attendants).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from urbana.domain.errors import InvalidInput

MAX_QUEUE_NAME = 100
MAX_SHORTCUT = 32
_CODE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_SHORTCUT_IN_TEXT = re.compile(r"(?<![\w/])/([A-Za-z0-9][A-Za-z0-9_-]*)")


class Availability(StrEnum):
    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class Queue:
    """A tenant's queue (fila) of conversations waiting for a person, by subject."""

    name: str
    intents: tuple[str, ...] = ()  # the AI intents (or handoff reasons) that land here


@dataclass(frozen=True, slots=True)
class Candidate:
    """An attendant as the assignment policy sees them."""

    user_id: str
    availability: Availability
    queues: frozenset[str]
    open_count: int  # conversations they hold now
    last_assigned_at: datetime | None  # None: never assigned one


def codes(values: Iterable[str], what: str) -> tuple[str, ...]:
    """Intents and reasons as the rules compare them: lower case, each once, in order."""
    out: dict[str, None] = {}
    for value in values:
        code = value.strip().lower()
        if not _CODE.fullmatch(code):
            raise InvalidInput(f"not a valid {what}: {value!r}")
        out[code] = None
    return tuple(out)


def queue_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned:
        raise InvalidInput("queue name is required")
    if len(cleaned) > MAX_QUEUE_NAME:
        raise InvalidInput(f"queue name longer than {MAX_QUEUE_NAME} characters")
    return cleaned


def shortcut_code(shortcut: str) -> str:
    """`/Preco` or `preco` as stored: without the slash, lower case."""
    code = shortcut.strip().removeprefix("/").lower()
    if not _CODE.fullmatch(code) or len(code) > MAX_SHORTCUT:
        raise InvalidInput(
            f"a shortcut is 1 to {MAX_SHORTCUT} letters, digits, '-' or '_': {shortcut!r}"
        )
    return code


def route_handoff(
    *,
    intent: str | None,
    reason: str,
    queues: Mapping[str, Queue],
    rules: Mapping[str, str],
    default: str | None = None,
) -> str | None:
    """The queue a handoff lands in (None: the tenant's general queue).

    The tenant's rules come first (by handoff reason, then by intent), then the queue
    that lists the intent (or the reason), then the tenant's default queue. Rules and
    defaults that name a queue that no longer exists are skipped.
    """
    keys = [k.lower() for k in (reason, intent) if k]
    for key in keys:
        ruled = rules.get(key)
        if ruled in queues:
            return ruled
    for key in keys:
        for queue_id, queue in sorted(queues.items()):
            if key in queue.intents:
                return queue_id
    return default if default in queues else None


def pick_attendant(
    candidates: Iterable[Candidate], queue: str | None, *, exclude: Collection[str] = ()
) -> Candidate | None:
    """The online attendant of `queue` with the fewest open conversations; ties: idle longest.

    With no queue, any online attendant. None when nobody fits: the conversation waits.
    """
    fit = [
        c
        for c in candidates
        if c.availability is Availability.ONLINE
        and c.user_id not in exclude
        and (queue is None or queue in c.queues)
    ]
    if not fit:
        return None
    return min(
        fit,
        key=lambda c: (
            c.open_count,
            c.last_assigned_at is not None,
            c.last_assigned_at or datetime.min,
            c.user_id,
        ),
    )


def expand_shortcuts(text: str, canned: Mapping[str, str]) -> str:
    """Replace each `/shortcut` (at the start of a word) with its canned response.

    Unknown shortcuts, and slashes inside words or URLs, are left as they are.
    """
    if not canned or "/" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        return canned.get(match.group(1).lower(), match.group(0))

    return _SHORTCUT_IN_TEXT.sub(replace, text)

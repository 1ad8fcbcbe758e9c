"""When the Testar thread keeps asking for the conversation: while the bot may still add
to it. Each ask is a read that goes to the access log, so a tab left open must stop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from urbana.adapters.http.panel import testar
from urbana.adapters.http.panel.testar import still_coming

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def conversation(status: str, authors: list[str], changed_s_ago: float) -> dict[str, Any]:
    """A console conversation as the API reads it; the lead's messages are in:1, in:2, ..."""
    seqs = iter(range(1, len(authors) + 1))
    keys = [f"in:{next(seqs)}" if a == "lead" else f"out:{i}" for i, a in enumerate(authors)]
    return {
        "status": status,
        "messages": [{"author": a, "key": k} for a, k in zip(authors, keys, strict=True)],
        "updated_at": (NOW - timedelta(seconds=changed_s_ago)).isoformat(),
    }


def test_it_asks_until_the_conversation_is_in_the_view() -> None:
    assert still_coming(None, NOW)


def test_it_asks_while_the_lead_waits_for_the_ai_however_long() -> None:
    assert still_coming(conversation("ai", ["lead"], 3600), NOW)
    assert still_coming(conversation("ai", ["lead", "ai", "lead"], 3600), NOW)


@pytest.mark.parametrize(
    ("status", "authors"),
    [
        ("ai", ["lead", "ai"]),
        ("waiting_human", ["lead", "ai", "system"]),
        ("waiting_human", ["lead"]),  # a person is awaited: the bot says no more
    ],
)
def test_it_asks_for_a_while_after_the_last_change_then_stops(
    status: str, authors: list[str]
) -> None:
    # A handoff's summary may come after its transition: the quiet time covers it.
    assert still_coming(conversation(status, authors, testar.QUIET_S - 1), NOW)
    assert not still_coming(conversation(status, authors, testar.QUIET_S + 1), NOW)


def test_the_api_s_utc_timestamps_are_read() -> None:
    found = conversation("ai", ["lead", "ai"], 0)
    found["updated_at"] = (NOW - timedelta(seconds=testar.QUIET_S + 1)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )
    assert not still_coming(found, NOW)


def test_it_asks_while_the_view_lacks_the_message_the_admin_just_sent() -> None:
    # The read models were behind when the screen was drawn: the thread still shows the
    # bot's earlier answer, long quiet, but the admin's second message is on its way.
    before = conversation("ai", ["lead", "ai"], testar.QUIET_S + 60)
    assert not still_coming(before, NOW)
    assert still_coming(before, NOW, said=2)
    assert not still_coming(before, NOW, said=1)

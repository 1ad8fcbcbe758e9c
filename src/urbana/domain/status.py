"""Where a conversation stands (see docs/architecture.md, The conversation state machine)."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    AI = "ai"
    WAITING_HUMAN = "waiting_human"
    HUMAN = "human"
    CLOSED = "closed"

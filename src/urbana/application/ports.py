"""Ports the application owns; adapters implement them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol
from uuid import UUID


class SubjectCipher(Protocol):
    """Per-data-subject authenticated encryption (crypto-shredding)."""

    def seal(self, subject_id: UUID, plaintext: bytes) -> bytes:
        """Encrypt with the subject's data key, creating the key if it has none."""
        ...

    def open(self, subject_id: UUID, sealed: bytes) -> bytes | None:
        """Decrypt; None when the subject's key was destroyed (erased)."""
        ...

    def prepare(self, subject_ids: Iterable[UUID]) -> None:
        """Make sure these subjects have keys (one round trip for a whole batch)."""
        ...

    def shred(self, subject_id: UUID) -> None:
        """Destroy the subject's key: everything sealed with it becomes unreadable."""
        ...


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


class StreamIndex(Protocol):
    """Which streams exist: one query for a whole batch instead of one per stream."""

    def existing(self, stream_ids: Iterable[UUID]) -> set[UUID]:
        """The subset of `stream_ids` that have at least one stored event."""
        ...

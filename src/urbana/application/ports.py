"""Ports the application owns; adapters implement them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Protocol
from uuid import UUID

from eventsourcing.persistence import StoredEvent


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
    """Many streams read in one query instead of one query per stream."""

    def stored_after(self, versions: Mapping[UUID, int]) -> list[StoredEvent]:
        """Each stream's stored events after the given version, in stream order."""
        ...

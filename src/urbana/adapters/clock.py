"""The wall clock, for the `Clock` port."""

from __future__ import annotations

from datetime import UTC, datetime


class SystemClock:
    """`Clock` on the system's time, in UTC."""

    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        return datetime.now(UTC)

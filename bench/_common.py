"""Shared bench helpers: an embedded PostgreSQL and JSON output."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from typing import Any


def median_rate(runs: int, once: Callable[[], tuple[int, float]]) -> dict[str, float]:
    """Run `once` (returning (items, seconds)) `runs` times; median items/s and spread."""
    rates = []
    for _ in range(runs):
        items, seconds = once()
        rates.append(items / seconds)
    return {
        "median_per_s": round(statistics.median(rates), 1),
        "min_per_s": round(min(rates), 1),
        "max_per_s": round(max(rates), 1),
        "runs": runs,
    }


def emit(result: dict[str, Any]) -> None:
    """The last line of a bench's output is one JSON object."""
    sys.stdout.write(json.dumps(result) + "\n")

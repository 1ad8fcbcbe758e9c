"""Reading untrusted gateway JSON: the small checks every adapter shares."""

from __future__ import annotations

import math

import orjson

from urbana.errors import Rejected


def decode_json(body: bytes) -> object:
    """The parsed body; malformed JSON is the client's fault (400)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejected(400, f"body is not valid JSON: {exc}") from exc


def text(value: object) -> str | None:
    """A non-empty string, or None for anything else."""
    return value if isinstance(value, str) and value else None


def finite_number(value: object) -> float | None:
    """A JSON number that is finite (booleans are not numbers here), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None

"""The text a message or a note carries: the one check every command applies to it."""

from __future__ import annotations

from urbana.domain.errors import InvalidInput

MAX_TEXT = 65_536


def check_text(text: str | None, *, required: bool) -> None:
    if text is None:
        if required:
            raise InvalidInput("text is required")
        return
    if required and not text.strip():
        raise InvalidInput("text is empty")
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"text longer than {MAX_TEXT} characters")

"""Urbana's one exception tree, importable from every layer (it imports nothing).

Adapters turn the exceptions of the libraries they call (psycopg, redis, aiokafka,
httpx, openai) into these with `raise ... from exc`, so callers, and the HTTP layer
above all, only ever decide on our own classes (see docs/architecture.md, Failure
handling). The domain's refusals are `urbana.domain.errors.DomainError`, a branch of
this tree.
"""

from __future__ import annotations

DEFAULT_RETRY_AFTER_S = 5.0


class UrbanaError(Exception):
    """The root: every failure Urbana itself reports."""


class Unavailable(UrbanaError):
    """A dependency (store, broker, cache, embeddings server) is down or did not answer.

    A transient fault, not the caller's: it should try again in `retry_after` seconds
    (over HTTP, a 503 with that Retry-After).
    """

    def __init__(self, reason: str, *, retry_after: float = DEFAULT_RETRY_AFTER_S) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Rejected(UrbanaError):
    """The input is refused, the client's fault: `status` (a 4xx) and `reason` say why;
    `retry_after`, when the same request may succeed later (a 429's Retry-After)."""

    def __init__(self, status: int, reason: str, *, retry_after: float | None = None) -> None:
        if not 400 <= status < 500:
            raise ValueError(f"a rejection is a 4xx status, not {status}")
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class ConfigurationError(UrbanaError):
    """Settings are missing or inconsistent; the message says which."""

"""How many failed sign-ins an email, and a client address, may have in a window.

Every attempt is counted before its password is checked, so parallel guesses cannot slip
past the limit; a sign-in that succeeds is uncounted. Past either limit, every attempt
on that email (or from that address) is refused, the right password included, until the
oldest counted one leaves the window: `TooManyAttempts`, a 429 with Retry-After. Keys
are hashes, so the counter's store holds no email or address.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from urbana.application.ports import AttemptLimiter
from urbana.domain.errors import NotAuthenticated
from urbana.errors import Rejected

T = TypeVar("T")


class TooManyAttempts(Rejected):
    """Too many failed sign-ins for this email or from this address: try again later."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(429, "too many failed sign-ins; try again later", retry_after=retry_after)


@dataclass(frozen=True)
class LoginLimits:
    per_email: int  # failed attempts on one email in the window
    per_address: int  # failed attempts from one client address in the window
    window_s: float


def _key(kind: str, value: str) -> str:
    return f"login:{kind}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"


class LoginThrottle:
    """Limits failed sign-ins per email and per client address (see the module)."""

    def __init__(self, limiter: AttemptLimiter, limits: LoginLimits) -> None:
        self.limiter = limiter
        self.limits = limits

    async def attempt(
        self, email: str, address: str | None, sign_in: Callable[[], Awaitable[T]]
    ) -> T:
        """`sign_in()`, counted as an attempt on `email` from `address` when it raises
        NotAuthenticated; TooManyAttempts, without calling it, past a limit."""
        attempt = uuid.uuid4().hex
        counted: list[str] = []
        limits = [(_key("email", email.strip().lower()), self.limits.per_email)]
        if address:
            limits.append((_key("address", address), self.limits.per_address))
        for key, limit in limits:
            wait_s = await self.limiter.take(key, limit, self.limits.window_s, attempt)
            if wait_s > 0:
                for taken in counted:  # refused attempts do not count on the other key
                    await self.limiter.forget(taken, attempt)
                raise TooManyAttempts(wait_s)
            counted.append(key)
        failed = False
        try:
            return await sign_in()
        except NotAuthenticated:
            failed = True  # it stays counted
            raise
        finally:
            if not failed:  # signed in, or our own fault (a store outage): not a guess
                for key in counted:
                    await self.limiter.forget(key, attempt)

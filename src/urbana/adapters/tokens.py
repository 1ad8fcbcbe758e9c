"""Access tokens: short-lived JWTs (HS256, pyjwt) naming the tenant, the user and the role.

A token only says who signed in; whether the user may still act, and with which role,
is read from the user's current state on every request (`Access.user_principal`), so
the role claim is informative and a disabled user's token stops working at once. The
`ses` claim is the user's session generation at sign-in: a password change or a disable
starts the next one, which ends every token issued before it (a counter, not `iat`
against a time, so the clocks of the processes need not agree).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from uuid import UUID

import jwt

from urbana.application.access import Principal
from urbana.domain.errors import NotAuthenticated

ISSUER = "urbana"
ALGORITHM = "HS256"
MIN_SECRET = 32  # bytes: RFC 7518 wants an HS256 key at least as long as the hash
# Tokens whose signature and claims this process has checked, with their expiry: a
# client sends the same token on every request, and checking it again (base64, JSON,
# HMAC) was a tenth of a list's time in the API. Only what the token itself says is
# kept; whether its user may still act is read anew every time (`Access`).
READ_CACHE = 4096


@dataclass(frozen=True, slots=True)
class TokenClaims:
    tenant_id: UUID
    user_id: UUID
    sessions: int


class JwtTokens:
    """Issues and reads access tokens with one secret."""

    def __init__(self, secret: bytes, ttl_s: int) -> None:
        if len(secret) < MIN_SECRET:
            raise ValueError(f"the token secret needs at least {MIN_SECRET} bytes")
        self._secret = secret
        self.ttl_s = ttl_s
        self._read: dict[str, tuple[TokenClaims, int]] = {}  # token: (claims, exp)

    def issue(self, principal: Principal, *, now: float | None = None) -> str:
        """A token for a signed-in user, valid `ttl_s` seconds from `now`."""
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": ISSUER,
            "sub": str(principal.subject_id),
            "tid": str(principal.tenant_id),
            "role": principal.role.value,
            "ses": principal.sessions,
            "iat": issued,
            "exp": issued + self.ttl_s,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def read(self, token: str) -> TokenClaims:
        """The claims of a valid token; NotAuthenticated when forged, expired or malformed."""
        held = self._read.get(token)
        if held is not None:
            claims, expires = held
            # pyjwt's own test (no leeway): expired from the second `exp` on.
            if time.time() < expires:
                return claims
            self._read.pop(token, None)
        claims, expires = self._decode(token)
        if len(self._read) >= READ_CACHE:
            self._read.clear()  # rare: as many live tokens as that in one process
        self._read[token] = (claims, expires)
        return claims

    def _decode(self, token: str) -> tuple[TokenClaims, int]:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "iss", "sub", "tid", "ses"]},
            )
            sessions = claims["ses"]
            if not isinstance(sessions, int) or isinstance(sessions, bool):
                raise TypeError("the session claim is not an integer")
            expires = int(claims["exp"])  # as pyjwt read it
            read = TokenClaims(
                tenant_id=UUID(claims["tid"]), user_id=UUID(claims["sub"]), sessions=sessions
            )
            return read, expires
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise NotAuthenticated("invalid or expired token") from exc

"""Users, API keys and roles: who may act in a tenant's workspace.

A user belongs to one tenant and signs in with an email and a password; a script uses
an API key. Emails are unique across tenants (the login names no tenant), held by the
`UserEmail` index whose id comes from the email, as a conversation's comes from its
contact. The email, the name and the password hash are personal data, sealed under
the user's own key. The domain keeps hashes only: hashing is the application's port.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from urbana.domain.contacts import NAMESPACE
from urbana.domain.errors import InvalidInput, InvalidTransition, NotAuthenticated
from urbana.domain.events import TenantScoped
from urbana.domain.pii import personal

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_NAME = 200
MAX_QUEUES = 50


class Role(StrEnum):
    """What a user or key may do in its tenant (see docs/architecture.md, Access)."""

    ATTENDANT = "attendant"
    SUPERVISOR = "supervisor"
    ANALYST = "analyst"
    AUDITOR = "auditor"
    ADMIN = "admin"


OVERSEERS = frozenset({Role.SUPERVISOR, Role.ADMIN})  # may act on others' conversations
HOLDERS = frozenset({Role.ATTENDANT, *OVERSEERS})  # may be given a conversation


class Availability(StrEnum):
    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


def normalise_email(raw: str) -> str:
    """The email as the index keys it: trimmed, lower case; InvalidInput when malformed."""
    email = raw.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        raise InvalidInput("not an email address")
    return email


def user_email_id_for(email: str) -> UUID:
    return uuid5(NAMESPACE, f"user-email:{normalise_email(email)}")


def role_of(value: str) -> Role:
    """A role by name; InvalidInput naming the roles when it is none of them."""
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(f"unknown role {value!r} ({', '.join(Role)})") from None


def availability_of(value: str) -> Availability:
    try:
        return Availability(value)
    except ValueError:
        raise InvalidInput(f"unknown availability {value!r} ({', '.join(Availability)})") from None


def _checked_name(name: str) -> str:
    """A user's or key's name as stored: trimmed; InvalidInput when too long."""
    if len(name) > MAX_NAME:
        raise InvalidInput(f"name longer than {MAX_NAME} characters")
    return name.strip()


class User(TenantScoped):
    @classmethod
    def invite(
        cls, *, tenant_id: UUID, email: str, role: Role, password_hash: str, name: str = ""
    ) -> User:
        name = _checked_name(name)
        if not password_hash:
            raise InvalidInput("a user needs a password")
        return cls(
            tenant_id=tenant_id,
            email=normalise_email(email),
            name=name,
            role=role.value,
            password_hash=password_hash,
        )

    @event("UserInvited")
    def __init__(
        self, tenant_id: UUID, email: str, name: str, role: str, password_hash: str
    ) -> None:
        self.tenant_id = tenant_id
        self.email = email
        self.name = name
        self.role = Role(role)
        self.password_hash = password_hash
        self.disabled = False
        self.availability = Availability.OFFLINE
        self.queues: tuple[str, ...] = ()
        # The generation of the user's sessions: a token names the one it was issued in,
        # and a password change or a disable starts the next (see `require_session`).
        self.sessions = 0

    def require_active(self) -> None:
        """NotAuthenticated when the user may not act (disabled)."""
        if self.disabled:
            raise NotAuthenticated("user disabled")

    def require_session(self, sessions: int) -> None:
        """NotAuthenticated when a token of generation `sessions` no longer holds: the
        password changed, or the user was disabled, since it was issued."""
        self.require_active()
        if sessions != self.sessions:
            raise NotAuthenticated("session ended")

    def change_role(self, role: Role, *, by: str | None) -> None:
        if role == self.role:
            raise InvalidTransition(f"the user is already {role}")
        self._role_changed(role=role.value, by=by)

    def disable(self, *, by: str | None) -> None:
        if self.disabled:
            raise InvalidTransition("the user is already disabled")
        self._disabled(by=by)

    def enable(self, *, by: str | None) -> None:
        if not self.disabled:
            raise InvalidTransition("the user is not disabled")
        self._enabled(by=by)

    def change_password(self, password_hash: str) -> None:
        if not password_hash:
            raise InvalidInput("a user needs a password")
        self._password_changed(password_hash=password_hash)

    def set_availability(self, availability: Availability) -> None:
        if availability == self.availability:
            raise InvalidTransition(f"the user is already {availability}")
        if self.disabled and availability != Availability.OFFLINE:
            raise InvalidTransition("a disabled user cannot be available")
        self._availability_changed(availability=availability.value)

    def set_queues(self, queues: list[str]) -> None:
        cleaned = sorted({q.strip() for q in queues})
        if "" in cleaned:
            raise InvalidInput("a queue name is required")
        if len(cleaned) > MAX_QUEUES:
            raise InvalidInput(f"more than {MAX_QUEUES} queues")
        if tuple(cleaned) == self.queues:
            raise InvalidTransition("the user is already in exactly these queues")
        self._queues_changed(queues=cleaned)

    @event("UserRoleChanged")
    def _role_changed(self, role: str, by: str | None) -> None:
        self.role = Role(role)

    @event("UserDisabled")
    def _disabled(self, by: str | None) -> None:
        self.disabled = True
        self.sessions += 1  # enabled again, the user signs in again
        # A disabled user receives no conversations.
        self.availability = Availability.OFFLINE

    @event("UserEnabled")
    def _enabled(self, by: str | None) -> None:
        self.disabled = False

    @event("PasswordChanged")
    def _password_changed(self, password_hash: str) -> None:
        self.password_hash = password_hash
        self.sessions += 1

    @event("AvailabilityChanged")
    def _availability_changed(self, availability: str) -> None:
        self.availability = Availability(availability)

    @event("UserQueuesChanged")
    def _queues_changed(self, queues: list[str]) -> None:
        self.queues = tuple(queues)


class UserEmail(Aggregate):
    """Index: which user signs in with an email. Its id comes from the email."""

    @staticmethod
    def create_id(email: str, **_: Any) -> UUID:
        return user_email_id_for(email)

    @event("UserEmailClaimed")
    def __init__(self, email: str, user_id: UUID, tenant_id: UUID) -> None:
        self.user_id = user_id
        self.tenant_id = tenant_id


class ApiKey(TenantScoped):
    """A credential for scripts: a role in one tenant, revocable; only its hash is kept."""

    @classmethod
    def create(
        cls, *, tenant_id: UUID, name: str, role: Role, secret_hash: str, by: str | None
    ) -> ApiKey:
        name = _checked_name(name)
        if not secret_hash:
            raise InvalidInput("an API key needs its secret's hash")
        return cls(tenant_id=tenant_id, name=name, role=role.value, secret_hash=secret_hash, by=by)

    @event("ApiKeyCreated")
    def __init__(
        self, tenant_id: UUID, name: str, role: str, secret_hash: str, by: str | None
    ) -> None:
        self.tenant_id = tenant_id
        self.name = name
        self.role = Role(role)
        self.secret_hash = secret_hash
        self.revoked = False

    def require_active(self) -> None:
        if self.revoked:
            raise NotAuthenticated("API key revoked")

    def revoke(self, *, by: str | None) -> None:
        if self.revoked:
            raise InvalidTransition("the API key is already revoked")
        self._revoked(by=by)

    @event("ApiKeyRevoked")
    def _revoked(self, by: str | None) -> None:
        self.revoked = True


# The index's email (its id's source) is sealed under the user's key, as the user's own.
personal("UserEmail.UserEmailClaimed", "email", subject="user_id")
personal("User.UserInvited", "email", "name", "password_hash", subject="originator_id")
personal("User.PasswordChanged", "password_hash", subject="originator_id")

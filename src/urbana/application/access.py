"""Access: users and API keys as commands, and credentials checked against current state.

`AccessCommands` are the application's commands on users and keys (a mixin of
`UrbanaApp`). `Access` is what the HTTP edge and the CLI use on top of them: hashing
passwords through the `PasswordHasher` port, the login, and turning a credential into
a `Principal`.

A credential is checked against the user's or key's state as stored now, so a disabled
user, a revoked key or a changed role takes effect on the next request. Each process
keeps the aggregates it has read, and each check brings its copy up to date with one
indexed query on the event table (the events after the version it holds; usually none),
so a request costs one primary-key range scan and no decryption (see
docs/architecture.md, Access).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, Protocol, TypeVar
from uuid import UUID

from eventsourcing.application import LRUCache, project_aggregate
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent

from urbana.application.unit_of_work import StoreApp, UnitOfWork
from urbana.domain.errors import (
    DomainError,
    EmailTaken,
    InvalidInput,
    NotAuthenticated,
    NotFound,
)
from urbana.domain.events import TenantScoped
from urbana.domain.tenant import Tenant
from urbana.domain.user import (
    ApiKey,
    Availability,
    Role,
    User,
    UserEmail,
    normalise_email,
    user_email_id_for,
)

A = TypeVar("A", bound=Aggregate)
S = TypeVar("S", bound=TenantScoped)

API_KEY_PREFIX = "urb_"
MIN_PASSWORD, MAX_PASSWORD = 8, 256  # the upper bound keeps one hash from costing seconds
WRONG_LOGIN = "wrong email or password"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a user or an API key, acting with a role in one tenant."""

    tenant_id: UUID
    subject_id: UUID  # the user id or the API key id
    role: Role
    kind: Literal["user", "apikey"]
    sessions: int = 0  # a user's session generation at sign-in (their tokens carry it)


class PasswordHasher(Protocol):
    """A slow, salted password hash (argon2 in production)."""

    def hash(self, password: str) -> str:
        """The encoded hash of `password` (parameters and salt included)."""
        ...

    def verify(self, password_hash: str, password: str) -> bool:
        """Whether `password` matches; False for a malformed or erased hash too."""
        ...


def api_key_token(key_id: UUID, secret: str) -> str:
    """What a script sends: the key's id, so it is found in one read, and its secret."""
    return f"{API_KEY_PREFIX}{key_id.hex}_{secret}"


def parse_api_key(token: str) -> tuple[UUID, str]:
    """The key id and secret of an API key; NotAuthenticated when it is not one."""
    body = token.removeprefix(API_KEY_PREFIX)
    key_hex, _, secret = body.partition("_")
    if body == token or not secret:
        raise NotAuthenticated("not an API key")
    try:
        return UUID(hex=key_hex), secret
    except ValueError:
        raise NotAuthenticated("not an API key") from None


def secret_hash(secret: str) -> str:
    # The secret is 256 random bits: a fast hash cannot be reversed, and checking
    # it on every request must be cheap (unlike a password).
    return hashlib.sha256(secret.encode()).hexdigest()


def check_password_policy(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidInput(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")


def user_principal_of(user: User | None, tenant_id: UUID, sessions: int | None) -> Principal:
    """The principal of a signed-in user as `user` (current state) says: from a verified
    token of `tenant_id` whose session generation is `sessions` (None: only active)."""
    if user is None or user.tenant_id != tenant_id:
        raise NotAuthenticated("unknown user")
    if sessions is None:
        user.require_active()
    else:
        user.require_session(sessions)
    return Principal(user.tenant_id, user.id, user.role, "user", user.sessions)


def api_key_principal_of(key: ApiKey | None, secret: str) -> Principal:
    """The principal of an API key as `key` (current state) says, when `secret` is its."""
    if key is None or not hmac.compare_digest(key.secret_hash, secret_hash(secret)):
        raise NotAuthenticated("unknown API key")
    key.require_active()
    return Principal(key.tenant_id, key.id, key.role, "apikey")


def _scoped(uow: UnitOfWork, cls: type[S], aggregate_id: UUID, tenant_id: UUID | None) -> S:
    """The aggregate, when it belongs to `tenant_id` (None: the operator, any tenant).

    Another tenant's is NotFound, worded as a missing one: its existence is not revealed.
    """
    found = uow.get(cls, aggregate_id)
    if found is None or (tenant_id is not None and found.tenant_id != tenant_id):
        raise NotFound(f"no {cls.__name__.lower()} {aggregate_id}")
    return found


class AccessCommands(StoreApp):
    """Commands on users and API keys. `tenant_id` scopes a command to one tenant."""

    def add_user(
        self,
        tenant_id: UUID,
        *,
        email: str,
        role: Role,
        password_hash: str,
        name: str = "",
    ) -> UUID:
        """Invite a user into a tenant; EmailTaken when any user signs in with that email."""

        def work(uow: UnitOfWork) -> UUID:
            uow.require(Tenant, tenant_id)
            user = User.invite(
                tenant_id=tenant_id, email=email, role=role, password_hash=password_hash, name=name
            )
            if uow.get(UserEmail, user_email_id_for(user.email)) is not None:
                raise EmailTaken("another user already signs in with that email")
            uow.add(user)
            uow.add(UserEmail(email=user.email, user_id=user.id, tenant_id=tenant_id))
            return user.id

        return self._retrying(work)

    def update_user(
        self,
        tenant_id: UUID | None,
        user_id: UUID,
        *,
        by: str | None,
        role: Role | None = None,
        disabled: bool | None = None,
        password_hash: str | None = None,
    ) -> User:
        """Change what differs of role, disabled and password; the user as it is now."""

        def work(uow: UnitOfWork) -> User:
            user = _scoped(uow, User, user_id, tenant_id)
            if role is not None and role != user.role:
                user.change_role(role, by=by)
            if disabled is True and not user.disabled:
                user.disable(by=by)
            elif disabled is False and user.disabled:
                user.enable(by=by)
            if password_hash is not None:
                user.change_password(password_hash)
            return user

        return self._retrying(work)

    def set_availability(
        self, tenant_id: UUID | None, user_id: UUID, availability: Availability
    ) -> None:
        def work(uow: UnitOfWork) -> None:
            _scoped(uow, User, user_id, tenant_id).set_availability(availability)

        self._retrying(work)

    def set_user_queues(self, tenant_id: UUID | None, user_id: UUID, queues: list[str]) -> None:
        def work(uow: UnitOfWork) -> None:
            _scoped(uow, User, user_id, tenant_id).set_queues(queues)

        self._retrying(work)

    def create_api_key(
        self, tenant_id: UUID, *, role: Role, secret_hash: str, name: str = "", by: str | None
    ) -> UUID:
        def work(uow: UnitOfWork) -> UUID:
            uow.require(Tenant, tenant_id)
            key = ApiKey.create(
                tenant_id=tenant_id, name=name, role=role, secret_hash=secret_hash, by=by
            )
            uow.add(key)
            return key.id

        return self._retrying(work)

    def revoke_api_key(self, tenant_id: UUID | None, key_id: UUID, *, by: str | None) -> bool:
        """Revoke a key; False when it was revoked already (nothing recorded)."""

        def work(uow: UnitOfWork) -> bool:
            key = _scoped(uow, ApiKey, key_id, tenant_id)
            if key.revoked:
                return False
            key.revoke(by=by)
            return True

        return self._retrying(work)


@dataclass(frozen=True, slots=True)
class NewApiKey:
    key_id: UUID
    token: str  # shown once; only its secret's hash is stored


class Access:
    """Logins, credentials and the commands that need a password hashed."""

    def __init__(
        self, app: AccessCommands, hasher: PasswordHasher, *, cache_size: int = 10_000
    ) -> None:
        self.app = app
        self.hasher = hasher
        self._cache: LRUCache[UUID, Aggregate] = LRUCache(maxsize=cache_size)
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- commands

    def add_user(
        self,
        tenant_id: UUID,
        *,
        email: str,
        role: Role,
        password: str | None = None,
        name: str = "",
    ) -> tuple[UUID, str | None]:
        """Invite a user; (id, the generated password when none was given)."""
        normalise_email(email)  # refuse a bad email before paying for a hash
        generated = None if password is not None else secrets.token_urlsafe(12)
        plain = password if password is not None else generated
        assert plain is not None
        check_password_policy(plain)
        user_id = self.app.add_user(
            tenant_id, email=email, role=role, password_hash=self.hasher.hash(plain), name=name
        )
        return user_id, generated

    def update_user(
        self,
        tenant_id: UUID | None,
        user_id: UUID,
        *,
        by: str | None,
        role: Role | None = None,
        disabled: bool | None = None,
        password: str | None = None,
    ) -> User:
        password_hash = None
        if password is not None:
            check_password_policy(password)
            password_hash = self.hasher.hash(password)
        return self.app.update_user(
            tenant_id, user_id, by=by, role=role, disabled=disabled, password_hash=password_hash
        )

    def create_api_key(
        self, tenant_id: UUID, *, role: Role, name: str = "", by: str | None
    ) -> NewApiKey:
        secret = secrets.token_urlsafe(32)
        key_id = self.app.create_api_key(
            tenant_id, role=role, secret_hash=secret_hash(secret), name=name, by=by
        )
        return NewApiKey(key_id=key_id, token=api_key_token(key_id, secret))

    # ------------------------------------------------------------- credentials

    def login(self, email: str, password: str) -> Principal:
        """The user's principal; NotAuthenticated, saying nothing more, when it may not."""
        try:
            index = self.current(UserEmail, user_email_id_for(email))
        except InvalidInput:
            index = None
        user = self.current(User, index.user_id) if index is not None else None
        if user is None:
            # As long as a real check, so the answer's time does not tell which emails exist.
            self.hasher.verify(self._decoy_hash, password)
            raise NotAuthenticated(WRONG_LOGIN)
        if not self.hasher.verify(user.password_hash, password):
            raise NotAuthenticated(WRONG_LOGIN)
        user.require_active()
        return Principal(user.tenant_id, user.id, user.role, "user", user.sessions)

    def user_principal(
        self, user_id: UUID, tenant_id: UUID, sessions: int | None = None
    ) -> Principal:
        """The principal of a signed-in user, as the user is now: from a verified token,
        whose session generation is `sessions` (None checks only that the user is active)."""
        return user_principal_of(self.current(User, user_id), tenant_id, sessions)

    def api_key_principal(self, token: str) -> Principal:
        """The principal of an API key, as the key is now."""
        key_id, secret = parse_api_key(token)
        return api_key_principal_of(self.current(ApiKey, key_id), secret)

    def current(self, cls: type[A], aggregate_id: UUID) -> A | None:
        """The aggregate as stored now (None when there is none), from this process's copy
        brought up to date with one query."""
        held = self.held(aggregate_id)
        index = self.app.index
        if index is None:  # a store without the batch reader: read the whole stream
            try:
                return self.app.get(cls, aggregate_id)
            except DomainError:  # none, or not a `cls`
                return None
        stored = index.stored_after({aggregate_id: held.version if held is not None else 0})
        return self.caught_up(cls, aggregate_id, held, stored)

    def held(self, aggregate_id: UUID) -> Aggregate | None:
        """This process's copy of the aggregate, as last read (None when it has none):
        `caught_up` with the events stored after its version, it is the current one."""
        with self._lock:
            try:
                return self._cache.get(aggregate_id)
            except KeyError:
                return None

    def caught_up(
        self,
        cls: type[A],
        aggregate_id: UUID,
        held: Aggregate | None,
        stored: Sequence[StoredEvent],
    ) -> A | None:
        """`held` (from `held`) brought up to date with `stored`, every event of its
        stream after `held`'s version (after 0 when None), read in one query."""
        if stored:
            events = [self.app.mapper.to_domain_event(s) for s in stored]
            # Other threads may be reading the held copy: project onto a copy of it.
            fresh = project_aggregate(copy.deepcopy(held), events)
            with self._lock:
                try:
                    latest = self._cache.get(aggregate_id)
                except KeyError:
                    latest = None
                if fresh is not None and (latest is None or latest.version < fresh.version):
                    self._cache.put(aggregate_id, fresh)
            held = fresh
        return held if isinstance(held, cls) else None

    @cached_property
    def _decoy_hash(self) -> str:
        return self.hasher.hash(secrets.token_urlsafe(16))

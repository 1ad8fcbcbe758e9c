"""Users and API keys on the real store: logins, unique emails, sealed personal data, and
credentials that stop working at once in every process."""

from __future__ import annotations

import threading
from uuid import UUID, uuid4

import pytest
from argon2 import PasswordHasher

from urbana.adapters.passwords import Argon2Hasher
from urbana.adapters.postgres.schema import EVENTS_TABLE
from urbana.adapters.postgres.store import Store
from urbana.application.access import Access
from urbana.domain.errors import EmailTaken, NotAuthenticated, NotFound
from urbana.domain.user import Availability, Role, User

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
# The library's parameters cost ~0.1 s a hash; these tests check behaviour, not cost.
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def access_of(store: Store) -> Access:
    """What one API process holds: its own cache of users and keys."""
    return Access(store.app, Argon2Hasher(FAST))


def tenant(store: Store) -> UUID:
    tenant_id, _ = store.app.register_tenant(f"Access {uuid4().hex[:8]}")
    return tenant_id


def email() -> str:
    return f"ana.{uuid4().hex[:8]}@example.com"


def test_a_user_logs_in_with_the_email_in_any_case(store: Store) -> None:
    access, tid, address = access_of(store), tenant(store), email()
    user_id, generated = access.add_user(
        tid, email=address, role=Role.SUPERVISOR, password=PASSWORD
    )
    assert generated is None
    who = access.login(address.upper(), PASSWORD)
    assert (who.tenant_id, who.subject_id, who.role, who.kind) == (
        tid,
        user_id,
        Role.SUPERVISOR,
        "user",
    )


@pytest.mark.parametrize("wrong", ["password", "email", "malformed email"])
def test_a_wrong_login_says_nothing_more(store: Store, wrong: str) -> None:
    access, tid, address = access_of(store), tenant(store), email()
    access.add_user(tid, email=address, role=Role.ATTENDANT, password=PASSWORD)
    given = {
        "password": (address, "not the password"),
        "email": (email(), PASSWORD),
        "malformed email": ("not-an-email", PASSWORD),
    }[wrong]
    with pytest.raises(NotAuthenticated, match="wrong email or password"):
        access.login(*given)


def test_a_generated_password_signs_in(store: Store) -> None:
    access, tid, address = access_of(store), tenant(store), email()
    _, generated = access.add_user(tid, email=address, role=Role.ANALYST)
    assert generated is not None
    assert len(generated) >= 16
    assert access.login(address, generated).role == Role.ANALYST


def test_an_email_signs_in_one_user_across_all_tenants(store: Store) -> None:
    access, address = access_of(store), email()
    access.add_user(tenant(store), email=address, role=Role.ADMIN, password=PASSWORD)
    with pytest.raises(EmailTaken):
        access.add_user(tenant(store), email=address.upper(), role=Role.ADMIN, password=PASSWORD)


def test_two_users_added_at_once_with_one_email_one_is_refused(store: Store) -> None:
    tid, address = tenant(store), email()
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def add() -> None:
        barrier.wait()
        try:
            store.app.add_user(tid, email=address, role=Role.ATTENDANT, password_hash="h")
            outcomes.append("added")
        except EmailTaken:
            outcomes.append("taken")

    threads = [threading.Thread(target=add) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["added", "taken"]


def test_a_user_of_an_unknown_tenant_is_refused(store: Store) -> None:
    with pytest.raises(NotFound):
        access_of(store).add_user(uuid4(), email=email(), role=Role.ADMIN, password=PASSWORD)


def test_a_disabled_user_stops_working_at_once_in_another_process(store: Store) -> None:
    api_a, api_b, tid = access_of(store), access_of(store), tenant(store)
    user_id, _ = api_a.add_user(tid, email=email(), role=Role.ATTENDANT, password=PASSWORD)
    assert api_a.user_principal(user_id, tid).role == Role.ATTENDANT  # now in A's cache
    api_b.update_user(tid, user_id, by=None, disabled=True)
    with pytest.raises(NotAuthenticated):
        api_a.user_principal(user_id, tid)
    api_b.update_user(tid, user_id, by=None, disabled=False)
    assert api_a.user_principal(user_id, tid).subject_id == user_id


def test_a_changed_role_applies_at_once_in_another_process(store: Store) -> None:
    api_a, api_b, tid = access_of(store), access_of(store), tenant(store)
    user_id, _ = api_a.add_user(tid, email=email(), role=Role.ADMIN, password=PASSWORD)
    assert api_a.user_principal(user_id, tid).role == Role.ADMIN
    api_b.update_user(tid, user_id, by=None, role=Role.AUDITOR)
    assert api_a.user_principal(user_id, tid).role == Role.AUDITOR


def test_a_changed_password_replaces_the_old_one(store: Store) -> None:
    access, tid, address = access_of(store), tenant(store), email()
    user_id, _ = access.add_user(tid, email=address, role=Role.ATTENDANT, password=PASSWORD)
    access.update_user(tid, user_id, by=None, password="another long one")
    assert access.login(address, "another long one").subject_id == user_id
    with pytest.raises(NotAuthenticated):
        access.login(address, PASSWORD)


def test_a_token_of_one_tenant_does_not_name_a_user_of_another(store: Store) -> None:
    access = access_of(store)
    user_id, _ = access.add_user(tenant(store), email=email(), role=Role.ADMIN, password=PASSWORD)
    with pytest.raises(NotAuthenticated):
        access.user_principal(user_id, tenant(store))


def test_a_revoked_key_stops_working_at_once_in_another_process(store: Store) -> None:
    api_a, api_b, tid = access_of(store), access_of(store), tenant(store)
    created = api_a.create_api_key(tid, role=Role.ANALYST, name="relatórios", by=None)
    who = api_a.api_key_principal(created.token)
    assert (who.tenant_id, who.subject_id, who.role, who.kind) == (
        tid,
        created.key_id,
        Role.ANALYST,
        "apikey",
    )
    assert store.app.revoke_api_key(tid, created.key_id, by=None) is True
    with pytest.raises(NotAuthenticated):
        api_a.api_key_principal(created.token)
    with pytest.raises(NotAuthenticated):
        api_b.api_key_principal(created.token)
    assert store.app.revoke_api_key(tid, created.key_id, by=None) is False  # nothing recorded


def test_a_key_with_a_wrong_secret_is_refused(store: Store) -> None:
    access, tid = access_of(store), tenant(store)
    created = access.create_api_key(tid, role=Role.ADMIN, by=None)
    with pytest.raises(NotAuthenticated):
        access.api_key_principal(created.token[:-2] + "xx")


def test_another_tenants_user_or_key_is_not_found(store: Store) -> None:
    access, mine, theirs = access_of(store), tenant(store), tenant(store)
    user_id, _ = access.add_user(theirs, email=email(), role=Role.ATTENDANT, password=PASSWORD)
    key = access.create_api_key(theirs, role=Role.ADMIN, by=None)
    with pytest.raises(NotFound, match=f"no user {user_id}"):
        access.update_user(mine, user_id, by=None, disabled=True)
    with pytest.raises(NotFound, match=f"no apikey {key.key_id}"):
        store.app.revoke_api_key(mine, key.key_id, by=None)
    assert access.api_key_principal(key.token).tenant_id == theirs  # untouched


def test_email_name_and_password_hash_are_sealed_in_the_store(store: Store) -> None:
    access, tid, address = access_of(store), tenant(store), email()
    user_id, _ = access.add_user(
        tid, email=address, role=Role.ATTENDANT, password=PASSWORD, name="Ana Pereira"
    )
    user = access.current(User, user_id)
    assert user is not None
    with store.pool.connection() as conn:
        rows = conn.execute(f"SELECT state FROM {EVENTS_TABLE}").fetchall()  # noqa: S608
    raw = b"".join(bytes(r[0]) for r in rows)
    for secret in (address.encode(), b"Ana Pereira", user.password_hash.encode()):
        assert secret not in raw
    assert (user.email, user.name) == (address, "Ana Pereira")


def test_the_api_key_secret_is_never_stored(store: Store) -> None:
    access, tid = access_of(store), tenant(store)
    created = access.create_api_key(tid, role=Role.ADMIN, by=None)
    secret = created.token.rsplit("_", 1)[1]
    with store.pool.connection() as conn:
        rows = conn.execute(f"SELECT state FROM {EVENTS_TABLE}").fetchall()  # noqa: S608
    assert all(secret.encode() not in bytes(r[0]) for r in rows)


def test_availability_and_queues_are_kept_and_scoped_to_the_tenant(store: Store) -> None:
    access, tid = access_of(store), tenant(store)
    user_id, _ = access.add_user(tid, email=email(), role=Role.ATTENDANT, password=PASSWORD)
    store.app.set_availability(tid, user_id, Availability.ONLINE)
    store.app.set_user_queues(tid, user_id, ["vendas", "suporte"])
    user = access.current(User, user_id)
    assert user is not None
    assert (user.availability, user.queues) == (Availability.ONLINE, ("suporte", "vendas"))
    with pytest.raises(NotFound):
        store.app.set_availability(tenant(store), user_id, Availability.AWAY)
    with pytest.raises(NotFound):
        store.app.set_user_queues(tenant(store), user_id, ["outra"])

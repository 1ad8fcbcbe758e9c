"""Users and API keys: roles, disabling, availability and queues checked before recording."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import uuid4

import pytest

from urbana.domain.errors import InvalidInput, InvalidTransition, NotAuthenticated
from urbana.domain.pii import pii_spec
from urbana.domain.user import (
    ApiKey,
    Availability,
    Role,
    User,
    UserEmail,
    normalise_email,
    role_of,
    user_email_id_for,
)


def names(events: Sequence[object]) -> list[str]:
    return [type(e).__name__ for e in events]


def invited(role: Role = Role.ATTENDANT) -> User:
    user = User.invite(
        tenant_id=uuid4(), email=" Ana@Example.COM ", role=role, password_hash="hash", name=" Ana "
    )
    user.collect_events()
    return user


def test_invite_records_user_invited_with_the_email_normalised() -> None:
    tenant_id = uuid4()
    user = User.invite(
        tenant_id=tenant_id, email=" Ana@Example.COM ", role=Role.ADMIN, password_hash="h"
    )
    [event] = user.collect_events()
    assert type(event).__name__ == "UserInvited"
    assert (user.email, user.role, user.tenant_id) == ("ana@example.com", Role.ADMIN, tenant_id)
    assert not user.disabled
    assert user.availability == Availability.OFFLINE
    assert vars(event)["role"] == "admin"


@pytest.mark.parametrize("email", ["", "ana", "ana@", "@example.com", "a b@example.com", "a@b"])
def test_invite_refuses_a_malformed_email(email: str) -> None:
    with pytest.raises(InvalidInput):
        User.invite(tenant_id=uuid4(), email=email, role=Role.ANALYST, password_hash="h")


def test_invite_refuses_a_user_without_a_password_or_with_a_long_name() -> None:
    with pytest.raises(InvalidInput):
        User.invite(tenant_id=uuid4(), email="a@b.co", role=Role.ANALYST, password_hash="")
    with pytest.raises(InvalidInput):
        User.invite(
            tenant_id=uuid4(), email="a@b.co", role=Role.ANALYST, password_hash="h", name="x" * 201
        )


def test_every_event_of_a_user_carries_its_tenant() -> None:
    user = invited()
    user.change_role(Role.SUPERVISOR, by="admin-1")
    user.disable(by=None)
    assert {vars(e)["tenant_id"] for e in user.collect_events()} == {user.tenant_id}


def test_change_role_records_who_changed_it_and_refuses_the_same_role() -> None:
    user = invited()
    user.change_role(Role.SUPERVISOR, by="admin-1")
    [event] = user.collect_events()
    assert (type(event).__name__, vars(event)["by"]) == ("UserRoleChanged", "admin-1")
    assert user.role == Role.SUPERVISOR
    with pytest.raises(InvalidTransition):
        user.change_role(Role.SUPERVISOR, by="admin-1")


def test_a_disabled_user_is_not_active_until_enabled() -> None:
    user = invited()
    user.require_active()
    user.disable(by="admin-1")
    with pytest.raises(NotAuthenticated):
        user.require_active()
    with pytest.raises(InvalidTransition):
        user.disable(by="admin-1")
    user.enable(by="admin-1")
    user.require_active()
    assert names(user.collect_events()) == ["UserDisabled", "UserEnabled"]
    with pytest.raises(InvalidTransition):
        user.enable(by="admin-1")


def test_disabling_takes_the_user_offline_and_keeps_them_there() -> None:
    user = invited()
    user.set_availability(Availability.ONLINE)
    user.disable(by=None)
    assert user.availability == Availability.OFFLINE
    with pytest.raises(InvalidTransition):
        user.set_availability(Availability.ONLINE)


def test_availability_changes_only_when_it_differs() -> None:
    user = invited()
    with pytest.raises(InvalidTransition):
        user.set_availability(Availability.OFFLINE)
    user.set_availability(Availability.AWAY)
    assert names(user.collect_events()) == ["AvailabilityChanged"]
    assert user.availability == Availability.AWAY


def test_queues_are_replaced_whole_sorted_and_without_repeats() -> None:
    user = invited()
    user.set_queues(["vendas", " suporte ", "vendas"])
    [event] = user.collect_events()
    assert vars(event)["queues"] == ["suporte", "vendas"]
    assert user.queues == ("suporte", "vendas")
    with pytest.raises(InvalidTransition):
        user.set_queues(["suporte", "vendas"])
    with pytest.raises(InvalidInput):
        user.set_queues(["  "])


def test_change_password_records_the_new_hash() -> None:
    user = invited()
    user.change_password("new-hash")
    assert names(user.collect_events()) == ["PasswordChanged"]
    assert user.password_hash == "new-hash"
    with pytest.raises(InvalidInput):
        user.change_password("")


def test_a_password_change_or_a_disable_ends_the_sessions_before_it() -> None:
    user = invited()
    first = user.sessions
    user.require_session(first)
    user.change_role(Role.SUPERVISOR, by=None)
    user.set_availability(Availability.ONLINE)
    user.require_session(first)  # neither ends a session
    user.change_password("new-hash")
    with pytest.raises(NotAuthenticated):
        user.require_session(first)
    second = user.sessions
    user.disable(by=None)
    user.enable(by=None)
    with pytest.raises(NotAuthenticated):
        user.require_session(second)
    user.require_session(user.sessions)


def test_email_index_id_comes_from_the_normalised_email() -> None:
    index = UserEmail(email="ana@example.com", user_id=uuid4(), tenant_id=uuid4())
    assert index.id == user_email_id_for(" ANA@example.com") == user_email_id_for("ana@example.com")
    assert user_email_id_for("ana@example.com") != user_email_id_for("bia@example.com")
    assert normalise_email(" Ana@Example.Com") == "ana@example.com"


def test_api_key_is_revoked_once_and_then_not_active() -> None:
    key = ApiKey.create(tenant_id=uuid4(), name="crm", role=Role.ANALYST, secret_hash="s", by=None)
    key.require_active()
    key.revoke(by="admin-1")
    with pytest.raises(NotAuthenticated):
        key.require_active()
    with pytest.raises(InvalidTransition):
        key.revoke(by="admin-1")
    assert names(key.collect_events()) == ["ApiKeyCreated", "ApiKeyRevoked"]


def test_role_of_names_the_roles_when_it_is_none_of_them() -> None:
    assert role_of("auditor") == Role.AUDITOR
    with pytest.raises(InvalidInput, match="attendant, supervisor, analyst, auditor, admin"):
        role_of("root")


def test_email_name_and_password_hash_are_declared_personal_data_of_the_user() -> None:
    spec = pii_spec(User.UserInvited)  # type: ignore[attr-defined]
    assert spec is not None
    assert set(spec.fields) == {"email", "name", "password_hash"}
    assert spec.subject_field == "originator_id"
    index_spec = pii_spec(UserEmail.UserEmailClaimed)  # type: ignore[attr-defined]
    assert index_spec is not None
    assert (index_spec.fields, index_spec.subject_field) == (("email",), "user_id")

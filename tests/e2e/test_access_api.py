"""The access routes over HTTP: login, who am I, users and API keys, and the 401/403/404s."""

from __future__ import annotations

from uuid import uuid4

import httpx
import jwt
import pytest

from tests.e2e.access_helpers import (
    PASSWORD,
    Team,
    access,
    bearer,
    login,
    new_email,
    team,
)
from tests.e2e.conftest import ADMIN_KEY, JWT_SECRET, Api
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"


def me(api: Api, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{api.url}/v1/me", headers=headers)


def assert_unauthorized(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert answer.headers["www-authenticate"] == "Bearer"


@pytest.fixture(scope="module")
def crew(api: Api) -> Team:
    return team(api)


def test_login_returns_a_short_lived_bearer_token_that_names_the_user(api: Api) -> None:
    tid, _ = api.store.app.register_tenant(f"Login {uuid4().hex[:8]}")
    email = new_email()
    user_id, _ = access(api).add_user(tid, email=email, role=Role.ATTENDANT, password=PASSWORD)
    answer = login(api, email.upper())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["token_type"], body["expires_in"]) == ("bearer", 900)
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"], issuer="urbana")
    assert (claims["sub"], claims["tid"], claims["role"]) == (str(user_id), str(tid), "attendant")
    assert claims["exp"] - claims["iat"] == 900
    who = me(api, bearer(body["access_token"]))
    assert who.status_code == 200, who.text
    assert who.json()["kind"] == "user"
    assert who.json()["user"]["email"] == email
    assert who.json()["user"]["role"] == "attendant"


def test_a_wrong_password_and_an_unknown_email_get_the_same_401(api: Api, crew: Team) -> None:
    tid, _ = api.store.app.register_tenant(f"Wrong {uuid4().hex[:8]}")
    email = new_email()
    access(api).add_user(tid, email=email, role=Role.ATTENDANT, password=PASSWORD)
    before = api.event_count()
    wrong_password = login(api, email, "not the password")
    unknown_email = login(api, new_email())
    for answer in (wrong_password, unknown_email):
        assert_unauthorized(answer)
    assert wrong_password.json() == unknown_email.json()
    assert api.event_count() == before


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="none"),
        pytest.param({"Authorization": "Bearer garbage"}, id="garbage"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic"),
        pytest.param(bearer(ADMIN_KEY), id="operator-key"),
        pytest.param(bearer("urb_" + "0" * 32 + "_secret"), id="unknown-api-key"),
    ],
)
def test_missing_or_wrong_credentials_are_401(api: Api, headers: dict[str, str]) -> None:
    assert_unauthorized(me(api, headers))


def test_an_expired_or_forged_token_is_401(api: Api, crew: Team) -> None:
    claims = jwt.decode(crew.tokens[Role.ADMIN], options={"verify_signature": False})
    expired = jwt.encode({**claims, "exp": claims["iat"] - 1}, JWT_SECRET, algorithm="HS256")
    forged = jwt.encode(claims, "another-secret-" + "z" * 32, algorithm="HS256")
    assert_unauthorized(me(api, bearer(expired)))
    assert_unauthorized(me(api, bearer(forged)))


def test_an_admin_adds_a_user_who_signs_in_with_the_generated_password(
    api: Api, crew: Team
) -> None:
    email = new_email()
    answer = httpx.post(
        f"{api.url}/v1/users",
        json={"email": email, "role": "supervisor", "name": "Bia"},
        headers=crew.headers(Role.ADMIN),
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["email"], body["role"]) == (email, "supervisor")
    signed_in = login(api, email, body["password"])
    assert signed_in.status_code == 200, signed_in.text
    who = me(api, bearer(signed_in.json()["access_token"])).json()
    assert (who["tenant_id"], who["subject_id"]) == (str(crew.tenant_id), body["user_id"])
    assert who["user"]["name"] == "Bia"


def test_an_email_already_taken_is_409_and_appends_nothing(api: Api, crew: Team) -> None:
    email = new_email()
    body = {"email": email, "role": "attendant", "password": PASSWORD}
    first = httpx.post(f"{api.url}/v1/users", json=body, headers=crew.headers(Role.ADMIN))
    assert first.status_code == 201, first.text
    before = api.event_count()
    other = team(api)
    after_team = api.event_count()
    again = httpx.post(
        f"{api.url}/v1/users",
        json={**body, "email": email.upper()},
        headers=other.headers(Role.ADMIN),
    )
    assert again.status_code == 409, again.text
    assert again.headers["content-type"] == PROBLEM
    assert api.event_count() == after_team > before


@pytest.mark.parametrize("role", [r for r in Role if r != Role.ADMIN])
def test_only_an_admin_adds_users_and_keys(api: Api, crew: Team, role: Role) -> None:
    before = api.event_count()
    user = httpx.post(
        f"{api.url}/v1/users",
        json={"email": new_email(), "role": "admin", "password": PASSWORD},
        headers=crew.headers(role),
    )
    key = httpx.post(f"{api.url}/v1/api-keys", json={"role": "admin"}, headers=crew.headers(role))
    for answer in (user, key):
        assert answer.status_code == 403, answer.text
        assert answer.headers["content-type"] == PROBLEM
    assert api.event_count() == before


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"email": "not-an-email", "role": "attendant"}, id="email"),
        pytest.param({"email": "a@example.com", "role": "root"}, id="role"),
        pytest.param({"email": "a@example.com", "role": "attendant", "password": "x"}, id="short"),
        pytest.param({"role": "attendant"}, id="missing-email"),
    ],
)
def test_a_malformed_user_is_422_and_appends_nothing(
    api: Api, crew: Team, body: dict[str, str]
) -> None:
    before = api.event_count()
    answer = httpx.post(f"{api.url}/v1/users", json=body, headers=crew.headers(Role.ADMIN))
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert api.event_count() == before


def test_a_disabled_user_is_refused_at_once_and_signs_in_again_when_enabled(
    api: Api, crew: Team
) -> None:
    email = new_email()
    user_id, _ = access(api).add_user(
        crew.tenant_id, email=email, role=Role.ATTENDANT, password=PASSWORD
    )
    token = login(api, email).json()["access_token"]
    assert me(api, bearer(token)).status_code == 200
    patch = f"{api.url}/v1/users/{user_id}"
    disabled = httpx.patch(patch, json={"disabled": True}, headers=crew.headers(Role.ADMIN))
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["disabled"] is True
    assert_unauthorized(me(api, bearer(token)))
    assert_unauthorized(login(api, email))
    enabled = httpx.patch(patch, json={"disabled": False}, headers=crew.headers(Role.ADMIN))
    assert enabled.json()["disabled"] is False
    assert_unauthorized(me(api, bearer(token)))  # the disable ended that session
    again = login(api, email).json()["access_token"]
    assert me(api, bearer(again)).status_code == 200


def test_the_reads_check_credentials_as_every_route_does(api: Api, crew: Team) -> None:
    # The /v1 reads check the caller inside their own read transaction
    # (`tenant_reads.allow_reading`): a role change, a disable, a revoke apply to the next read.
    email = new_email()
    user_id, _ = access(api).add_user(
        crew.tenant_id, email=email, role=Role.ATTENDANT, password=PASSWORD
    )
    token = login(api, email).json()["access_token"]
    conversations, leads = f"{api.url}/v1/conversations", f"{api.url}/v1/leads"
    assert httpx.get(conversations, headers=bearer(token)).status_code == 200
    patch = f"{api.url}/v1/users/{user_id}"
    made = httpx.patch(patch, json={"role": "analyst"}, headers=crew.headers(Role.ADMIN))
    assert made.status_code == 200, made.text
    assert httpx.get(conversations, headers=bearer(token)).status_code == 403
    assert httpx.get(leads, headers=bearer(token)).status_code == 200
    made = httpx.patch(patch, json={"disabled": True}, headers=crew.headers(Role.ADMIN))
    assert made.status_code == 200, made.text
    assert_unauthorized(httpx.get(leads, headers=bearer(token)))
    key = access(api).create_api_key(crew.tenant_id, role=Role.ANALYST, by=None)
    assert httpx.get(leads, headers=bearer(key.token)).status_code == 200
    revoked = httpx.delete(f"{api.url}/v1/api-keys/{key.key_id}", headers=crew.headers(Role.ADMIN))
    assert revoked.status_code == 204
    assert_unauthorized(httpx.get(leads, headers=bearer(key.token)))
    assert_unauthorized(httpx.get(leads, headers=bearer(token.rsplit(".", 1)[0] + ".forged")))
    assert_unauthorized(httpx.get(leads, headers=bearer("urb_not-a-key")))
    assert_unauthorized(httpx.get(leads))


def test_a_password_change_ends_every_session_signed_in_before_it(api: Api, crew: Team) -> None:
    email = new_email()
    user_id, _ = access(api).add_user(
        crew.tenant_id, email=email, role=Role.ATTENDANT, password=PASSWORD
    )
    phone, laptop = (login(api, email).json()["access_token"] for _ in range(2))
    assert me(api, bearer(phone)).status_code == 200
    changed = httpx.patch(
        f"{api.url}/v1/users/{user_id}",
        json={"password": "a brand new secret"},
        headers=crew.headers(Role.ADMIN),
    )
    assert changed.status_code == 200, changed.text
    assert_unauthorized(me(api, bearer(phone)))
    assert_unauthorized(me(api, bearer(laptop)))
    assert_unauthorized(login(api, email))  # the old password
    fresh = login(api, email, "a brand new secret")
    assert fresh.status_code == 200, fresh.text
    assert me(api, bearer(fresh.json()["access_token"])).status_code == 200
    # The role changing (or the admin's own requests) ends no session.
    patch = f"{api.url}/v1/users/{user_id}"
    httpx.patch(patch, json={"role": "supervisor"}, headers=crew.headers(Role.ADMIN))
    assert me(api, bearer(fresh.json()["access_token"])).status_code == 200


def test_a_changed_role_applies_to_the_next_request(api: Api, crew: Team) -> None:
    email = new_email()
    user_id, _ = access(api).add_user(
        crew.tenant_id, email=email, role=Role.ATTENDANT, password=PASSWORD
    )
    token = login(api, email).json()["access_token"]
    add = {"email": new_email(), "role": "analyst", "password": PASSWORD}
    assert httpx.post(f"{api.url}/v1/users", json=add, headers=bearer(token)).status_code == 403
    promoted = httpx.patch(
        f"{api.url}/v1/users/{user_id}", json={"role": "admin"}, headers=crew.headers(Role.ADMIN)
    )
    assert promoted.json()["role"] == "admin"
    answer = httpx.post(f"{api.url}/v1/users", json=add, headers=bearer(token))
    assert answer.status_code == 201, answer.text


def test_a_patch_that_changes_nothing_appends_nothing(api: Api, crew: Team) -> None:
    before = api.event_count()
    same = httpx.patch(
        f"{api.url}/v1/users/{crew.user_ids[Role.ANALYST]}",
        json={"role": "analyst", "disabled": False},
        headers=crew.headers(Role.ADMIN),
    )
    assert same.status_code == 200, same.text
    assert api.event_count() == before


def test_another_tenants_user_is_404_like_one_that_does_not_exist(api: Api, crew: Team) -> None:
    other = team(api)
    before = api.event_count()
    theirs = httpx.patch(
        f"{api.url}/v1/users/{other.user_ids[Role.ATTENDANT]}",
        json={"disabled": True},
        headers=crew.headers(Role.ADMIN),
    )
    missing = httpx.patch(
        f"{api.url}/v1/users/{uuid4()}", json={"disabled": True}, headers=crew.headers(Role.ADMIN)
    )
    for answer in (theirs, missing):
        assert answer.status_code == 404, answer.text
        assert answer.headers["content-type"] == PROBLEM
    assert theirs.json()["title"] == missing.json()["title"]
    assert api.event_count() == before
    assert me(api, other.headers(Role.ATTENDANT)).status_code == 200


def test_an_api_key_works_until_revoked(api: Api, crew: Team) -> None:
    created = httpx.post(
        f"{api.url}/v1/api-keys",
        json={"role": "analyst", "name": "relatórios"},
        headers=crew.headers(Role.ADMIN),
    )
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["key_id"]
    who = me(api, bearer(key))
    assert who.status_code == 200, who.text
    assert who.json() == {
        "kind": "apikey",
        "subject_id": key_id,
        "tenant_id": str(crew.tenant_id),
        "role": "analyst",
        "user": None,
    }
    revoke = f"{api.url}/v1/api-keys/{key_id}"
    assert httpx.delete(revoke, headers=crew.headers(Role.ADMIN)).status_code == 204
    assert_unauthorized(me(api, bearer(key)))
    before = api.event_count()
    assert httpx.delete(revoke, headers=crew.headers(Role.ADMIN)).status_code == 204
    assert api.event_count() == before


def test_an_admin_key_may_manage_users(api: Api, crew: Team) -> None:
    key = access(api).create_api_key(crew.tenant_id, role=Role.ADMIN, by=None).token
    answer = httpx.post(
        f"{api.url}/v1/users",
        json={"email": new_email(), "role": "attendant", "password": PASSWORD},
        headers=bearer(key),
    )
    assert answer.status_code == 201, answer.text


def test_another_tenants_key_is_404_and_keeps_working(api: Api, crew: Team) -> None:
    other = team(api)
    theirs = access(api).create_api_key(other.tenant_id, role=Role.ANALYST, by=None)
    answer = httpx.delete(
        f"{api.url}/v1/api-keys/{theirs.key_id}", headers=crew.headers(Role.ADMIN)
    )
    assert answer.status_code == 404, answer.text
    assert me(api, bearer(theirs.token)).status_code == 200


def test_every_v1_route_documents_its_roles(api: Api) -> None:
    spec = httpx.get(f"{api.url}/openapi.json").json()
    operations = {
        (method.upper(), path): op
        for path, item in spec["paths"].items()
        if path.startswith("/v1/")
        for method, op in item.items()
    }
    assert operations[("POST", "/v1/auth/login")]["x-public"] is True
    assert operations[("GET", "/v1/me")]["x-roles"] == [r.value for r in Role]
    for route in [
        ("POST", "/v1/users"),
        ("PATCH", "/v1/users/{user_id}"),
        ("POST", "/v1/api-keys"),
        ("DELETE", "/v1/api-keys/{key_id}"),
    ]:
        assert operations[route]["x-roles"] == ["admin"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"

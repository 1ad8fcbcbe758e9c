"""The panel's session cookie on /v1: read with it, change with it only from our origin.

A browser attaches a cookie to any request to our host, so a change (not GET) made with
the cookie alone must say it comes from a page of our origin (`Sec-Fetch-Site:
same-origin`, or an `Origin` equal to our own); refused, it is a 403 that appends
nothing. Bearer tokens (scripts) are not affected.
"""

from __future__ import annotations

from uuid import UUID

import httpx
import pytest

from tests.e2e.access_helpers import PASSWORD, access, login, new_email
from tests.e2e.conftest import Api
from urbana.adapters.http.auth import SESSION_COOKIE
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

ONLINE = {"availability": "online"}


@pytest.fixture
def token(api: Api) -> str:
    tenant_id, _ = api.store.app.register_tenant(f"Sessão {new_email()}")
    email = new_email()
    access(api).add_user(tenant_id, email=email, role=Role.ATTENDANT, password=PASSWORD)
    answer = login(api, email)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def with_cookie(api: Api, token: str) -> httpx.Client:
    return httpx.Client(base_url=api.url, cookies={SESSION_COOKIE: token}, timeout=10)


def test_the_cookie_reads_like_a_bearer_token(api: Api, token: str) -> None:
    with with_cookie(api, token) as client:
        me = client.get("/v1/me")
    assert me.status_code == 200, me.text
    assert me.json()["role"] == "attendant"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
    ],
    ids=["no-origin", "cross-site", "same-site", "other-origin"],
)
def test_a_change_with_the_cookie_from_elsewhere_is_refused_and_appends_nothing(
    api: Api, token: str, headers: dict[str, str]
) -> None:
    before = api.event_count()
    with with_cookie(api, token) as client:
        answer = client.put("/v1/me/availability", json=ONLINE, headers=headers)
    assert answer.status_code == 403, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert api.event_count() == before


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "same-origin"}, {"Origin": "ORIGIN"}],
    ids=["same-origin", "own-origin"],
)
def test_a_change_with_the_cookie_from_our_pages_is_done(
    api: Api, token: str, headers: dict[str, str]
) -> None:
    sent = {k: v.replace("ORIGIN", api.url) for k, v in headers.items()}
    with with_cookie(api, token) as client:
        answer = client.put("/v1/me/availability", json=ONLINE, headers=sent)
        me = client.get("/v1/me")
    assert answer.status_code == 200, answer.text
    assert me.json()["user"]["availability"] == "online"


def test_a_bearer_token_needs_no_origin(api: Api, token: str) -> None:
    answer = httpx.put(
        f"{api.url}/v1/me/availability",
        json=ONLINE,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text


def test_panel_forms_from_elsewhere_are_refused(api: Api, token: str) -> None:
    with with_cookie(api, token) as client:
        out = client.post("/panel/logout", headers={"Origin": "https://evil.example"})
        signed_in = client.post(
            "/panel/login", data={"email": "a@b.c", "password": "x"}, headers={}
        )
    assert (out.status_code, signed_in.status_code) == (403, 403)


def test_the_login_form_sets_an_httponly_strict_cookie(api: Api) -> None:
    tenant_id, _ = api.store.app.register_tenant(f"Sessão {new_email()}")
    email = new_email()
    user_id, _ = access(api).add_user(tenant_id, email=email, role=Role.ADMIN, password=PASSWORD)
    answer = httpx.post(
        f"{api.url}/panel/login",
        data={"email": email, "password": PASSWORD},
        headers={"Sec-Fetch-Site": "same-origin"},
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/panel/"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    token = answer.cookies[SESSION_COOKIE]
    with with_cookie(api, token) as client:
        me = client.get("/v1/me")
    assert UUID(me.json()["subject_id"]) == user_id

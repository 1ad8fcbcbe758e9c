"""The panel's live redraws when the read models lag: a fragment asked to wait for an
event they do not have by the end of the wait says so (`X-Urbana-Behind`), so that
panel.js asks again instead of keeping a screen from before the event."""

from __future__ import annotations

from uuid import uuid4

import httpx
import pytest

from tests.e2e.access_helpers import PASSWORD, access, login, new_email
from tests.e2e.conftest import Api
from urbana.adapters.http.auth import SESSION_COOKIE
from urbana.adapters.http.panel import v1 as panel_v1
from urbana.adapters.http.panel.common import BEHIND
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e


@pytest.fixture
def panel(api: Api) -> httpx.Client:
    tenant_id, _ = api.store.app.register_tenant(f"Painel {new_email()}")
    email = new_email()
    access(api).add_user(tenant_id, email=email, role=Role.ATTENDANT, password=PASSWORD)
    answer = login(api, email)
    assert answer.status_code == 200, answer.text
    token = str(answer.json()["access_token"])
    return httpx.Client(base_url=api.url, cookies={SESSION_COOKIE: token}, timeout=10)


def test_the_list_waited_on_an_event_the_read_models_lack_says_it_is_behind(
    panel: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This API runs no projector: the read models never get the conversation.
    monkeypatch.setattr(panel_v1, "CATCH_UP_S", 0.2)
    with panel:
        waited = panel.get("/panel/fragments/list", params={"wait": f"{uuid4()}:7"})
        plain = panel.get("/panel/fragments/list")
    assert waited.status_code == plain.status_code == 200, waited.text
    assert waited.headers[BEHIND] == "1"
    assert BEHIND not in plain.headers
    assert 'aria-label="Conversas"' in waited.text  # drawn all the same, as it is

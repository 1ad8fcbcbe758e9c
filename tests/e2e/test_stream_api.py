"""/v1/stream over HTTP: live events after a webhook, scoped by tenant and role, and a
resume with Last-Event-ID that misses nothing and repeats nothing, also across a restart.

What a client should receive is read from the store's log itself (the events of its
tenant that its role sees, in position order), so each test compares the stream with
the source of truth rather than with a count.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import httpx
import orjson
import pytest
from psycopg import AsyncConnection

from tests.e2e.access_helpers import PASSWORD, access, bearer, login, new_email
from tests.e2e.conftest import Api, start_api, stop_api
from tests.e2e.webhook_helpers import CloudTenant, cloud_tenant, cloud_text, post_cloud
from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.http.auth import SESSION_COOKIE
from urbana.adapters.postgres.log import AsyncLogReader
from urbana.application.live import LIVE_SOURCES, live_event, visible_to
from urbana.config import conninfo
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
HEARTBEAT_S = 0.3  # short, so an idle stream shows its heartbeat at once


@dataclass(frozen=True)
class Sse:
    """One server-sent event as a client parses it; a heartbeat is a comment."""

    id: int | None = None
    type: str | None = None
    data: dict[str, Any] | None = None
    heartbeat: bool = False


def events(
    api: Api,
    token: str,
    *,
    last_event_id: int | None = None,
    until: Callable[[Sse], bool],
    on_heartbeat: Callable[[], None] | None = None,
    path: str = "/v1/stream",
) -> list[Sse]:
    """Read the stream at `path` until `until` holds for an event (which is included),
    then hang up.

    `on_heartbeat` runs at the first heartbeat: by then the subscription is in place.
    """
    headers = bearer(token)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    got: list[Sse] = []
    fields: dict[str, str] = {}
    timeout = httpx.Timeout(10.0, read=20.0)
    with httpx.stream("GET", f"{api.url}{path}", headers=headers, timeout=timeout) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if line.startswith(":"):
                if on_heartbeat is not None:
                    on_heartbeat()
                    on_heartbeat = None
                continue
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
                continue
            if not fields:
                continue
            event = Sse(int(fields["id"]), fields["event"], orjson.loads(fields["data"]))
            fields = {}
            got.append(event)
            if until(event):
                return got
    raise AssertionError(f"the stream ended after {got}")


def live_log(api: Api, tenant_id: str, role: Role, after: int) -> list[tuple[int, str]]:
    """(id, type) of every live event after `after` that this tenant's `role` sees."""

    async def read() -> list[tuple[int, str]]:
        reader = AsyncLogReader(api.settings.database_schema, handles=LIVE_SOURCES)
        url = conninfo(api.settings.database_url or "", api.settings.database_schema)
        out: list[tuple[int, str]] = []
        position = after
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            while (page := await reader.page(conn, position)) is not None:
                position = page.last
                for envelope in page.envelopes:
                    event = live_event(envelope)
                    if event is None or event.tenant_id != tenant_id:
                        continue
                    if visible_to(role, event.type):
                        out.append((event.id, event.type))
        return out

    return asyncio.run(read())


def pairs(got: list[Sse]) -> list[tuple[int, str]]:
    return [(e.id or 0, e.type or "") for e in got]


def upto(last: int) -> Callable[[Sse], bool]:
    return lambda event: (event.id or 0) >= last


@dataclass
class Shop:
    tenant: CloudTenant
    tokens: dict[Role, str]


def shop(api: Api) -> Shop:
    """A Cloud API tenant with a signed-in user of every role."""
    tenant = cloud_tenant(api)
    tokens = {}
    for role in Role:
        email = new_email()
        access(api).add_user(UUID(tenant.tenant_id), email=email, role=role, password=PASSWORD)
        answer = login(api, email)
        assert answer.status_code == 200, answer.text
        tokens[role] = answer.json()["access_token"]
    return Shop(tenant, tokens)


def write(api: Api, shop: Shop, text: str, contact: str | None = None) -> None:
    wa_id = contact or f"55119{uuid4().int % 10**8:08d}"
    payload = cloud_text(shop.tenant.phone_number_id, wa_id, text, name="Maria Sigilosa")
    with httpx.Client(timeout=15) as client:
        answer = post_cloud(client, api, shop.tenant, payload)
    assert answer.status_code == 200, answer.text


@dataclass
class Running:
    api: Api
    schema: str
    master_key: bytes


def _start(services: ServiceUrls, schema: str, master_key: bytes) -> Api:
    return start_api(services, schema, master_key, live_heartbeat_s=HEARTBEAT_S)


@pytest.fixture(scope="module")
def running(services: ServiceUrls) -> Iterator[Running]:
    schema, key = f"e2e_sse_{uuid4().hex[:8]}", os.urandom(32)
    made = Running(_start(services, schema, key), schema, key)
    try:
        yield made
    finally:
        stop_api(made.api)


def test_a_client_sees_a_webhooks_events_as_they_happen(running: Running) -> None:
    api = running.api
    mine = shop(api)
    before = api.event_count()
    got = events(
        api,
        mine.tokens[Role.ATTENDANT],
        until=lambda e: e.type == "message.created",
        on_heartbeat=lambda: write(api, mine, "Quero saber o preço"),
    )
    expected = live_log(api, mine.tenant.tenant_id, Role.ATTENDANT, before)
    assert "message.created" in {t for _, t in expected}
    assert "conversation.updated" in {t for _, t in expected}
    assert pairs(got) == expected[: len(got)]
    (created,) = [e for e in got if e.type == "message.created"]
    assert created.data is not None
    assert created.data["author"] == "lead"
    raw = orjson.dumps([e.data for e in got]).decode()
    assert "Maria" not in raw  # no personal data on the stream
    assert "preço" not in raw


def test_each_role_and_tenant_gets_only_its_own_events(running: Running) -> None:
    api = running.api
    mine, theirs = shop(api), shop(api)
    before = api.event_count()
    write(api, mine, "Oi")
    write(api, theirs, "Olá")
    for who, role in [(mine, Role.ATTENDANT), (mine, Role.ANALYST), (theirs, Role.AUDITOR)]:
        expected = live_log(api, who.tenant.tenant_id, role, before)
        assert expected
        got = events(api, who.tokens[role], last_event_id=before, until=upto(expected[-1][0]))
        assert pairs(got) == expected
    assert {t for _, t in live_log(api, mine.tenant.tenant_id, Role.ANALYST, before)} == {
        "lead.updated"
    }


def test_a_reconnecting_client_gets_exactly_what_it_missed(running: Running) -> None:
    api = running.api
    mine = shop(api)
    token = mine.tokens[Role.SUPERVISOR]
    before = api.event_count()
    write(api, mine, "Primeira mensagem")
    first = events(api, token, last_event_id=before, until=lambda e: True)
    write(api, mine, "Enquanto estava desconectado")  # missed: nobody is connected
    expected = live_log(api, mine.tenant.tenant_id, Role.SUPERVISOR, before)
    assert len(expected) > 2
    rest = events(api, token, last_event_id=first[-1].id, until=upto(expected[-1][0]))
    assert pairs(first + rest) == expected  # no gap, no repeat


def test_a_resume_after_the_api_restarted_misses_nothing(services: ServiceUrls) -> None:
    schema, key = f"e2e_sse_restart_{uuid4().hex[:8]}", os.urandom(32)
    api = _start(services, schema, key)
    try:
        mine = shop(api)
        token = mine.tokens[Role.ATTENDANT]
        before = api.event_count()
        write(api, mine, "Antes do reinício")
        first = events(api, token, last_event_id=before, until=lambda e: True)
        write(api, mine, "Antes do reinício, de novo")
    finally:
        stop_api(api)
    api = _start(services, schema, key)  # a new process: the feed's memory is gone
    try:
        write(api, mine, "Depois do reinício")
        expected = live_log(api, mine.tenant.tenant_id, Role.ATTENDANT, before)
        rest = events(api, token, last_event_id=first[-1].id, until=upto(expected[-1][0]))
        assert pairs(first + rest) == expected
    finally:
        stop_api(api)


def test_a_panel_page_streams_from_where_it_was_drawn_so_nothing_between_is_missed(
    running: Running,
) -> None:
    # A page is drawn, then the browser connects to its stream: what happened in between
    # would be lost by a stream that starts "from now".
    api = running.api
    mine = shop(api)
    token = mine.tokens[Role.ATTENDANT]
    page = httpx.get(f"{api.url}/panel/", cookies={SESSION_COOKIE: token}, timeout=10)
    assert page.status_code == 200, page.text
    found = re.search(r'data-stream="(/v1/stream\?after=([0-9]+))"', page.text)
    assert found is not None, "the page names no stream position"
    stream_path, drawn_at = found.group(1), int(found.group(2))
    assert 0 < drawn_at <= api.event_count()  # where the feed stood (it trails the log)
    write(api, mine, "Escrevi enquanto a página carregava")
    expected = live_log(api, mine.tenant.tenant_id, Role.ATTENDANT, drawn_at)
    assert "message.created" in {t for _, t in expected}
    got = events(api, token, path=stream_path, until=upto(expected[-1][0]))
    assert pairs(got) == expected


def test_last_event_id_wins_over_the_pages_position(running: Running) -> None:
    # EventSource reconnects to the same URL with Last-Event-ID: it resumes from there.
    api = running.api
    mine = shop(api)
    token = mine.tokens[Role.ATTENDANT]
    before = api.event_count()
    write(api, mine, "Oi")
    expected = live_log(api, mine.tenant.tenant_id, Role.ATTENDANT, before)
    got = events(
        api, token, last_event_id=before, path="/v1/stream?after=0", until=upto(expected[-1][0])
    )
    assert pairs(got) == expected


@pytest.mark.parametrize("after", ["abc", "-1", "1.5"])
def test_an_after_that_is_not_a_position_is_a_problem(running: Running, after: str) -> None:
    mine = shop(running.api)
    answer = httpx.get(
        f"{running.api.url}/v1/stream",
        params={"after": after},
        headers=bearer(mine.tokens[Role.ATTENDANT]),
    )
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("header", ["abc", "-1", "1.5", "1e3"])
def test_a_last_event_id_that_is_not_a_position_is_a_problem(running: Running, header: str) -> None:
    api = running.api
    mine = shop(api)
    headers = {**bearer(mine.tokens[Role.ATTENDANT]), "Last-Event-ID": header}
    answer = httpx.get(f"{api.url}/v1/stream", headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == PROBLEM


def test_the_stream_needs_credentials(running: Running) -> None:
    answer = httpx.get(f"{running.api.url}/v1/stream", headers=bearer("nope"))
    assert answer.status_code == 401
    assert answer.headers["content-type"] == PROBLEM


def test_the_live_feed_reports_on_status(running: Running) -> None:
    api = running.api
    mine = shop(api)
    figures: list[dict[str, Any]] = []

    def look() -> None:
        answer = httpx.get(f"{api.url}/v1/status", headers=bearer(mine.tokens[Role.ADMIN]))
        assert answer.status_code == 200
        figures.append(answer.json()["live"])
        write(api, mine, "Oi")

    events(api, mine.tokens[Role.ADMIN], until=lambda e: True, on_heartbeat=look)
    (live,) = figures
    assert live["following"] is True
    assert live["subscribers"] >= 1
    assert live["position"] > 0

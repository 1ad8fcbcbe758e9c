"""The `assigner` role on the real embedded services: a handoff goes at once to the online
attendant, or waits in its queue (the lead told when to expect a person) until an
attendant comes online. Roster and finder are the production ones (the event table and
the conversation view), fed by the relay and the projector."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.access_helpers import Team, team
from tests.e2e.conftest import Api, start_api, stop_api
from tests.e2e.workspace_helpers import conversation
from urbana.adapters.embedded import ServiceUrls
from urbana.domain.conversation import Conversation, Status
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(services: ServiceUrls) -> Iterator[Api]:
    run = uuid4().hex[:8]
    running = start_api(
        services,
        f"assign_{run}",
        os.urandom(32),
        roles=("relay", "projector", "assigner"),
        events_topic=f"e2e.events.{run}",
        consumer_group_prefix=f"e2e.{run}",
        inactivity_sweep_s=0.5,
    )
    try:
        yield running
    finally:
        stop_api(running)


def wait_until(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def go_online(api: Api, crew: Team) -> None:
    answer = httpx.put(
        f"{api.url}/v1/me/availability",
        json={"availability": "online"},
        headers=crew.headers(Role.ATTENDANT),
    )
    assert answer.status_code == 200, answer.text


def holder(api: Api, cid: UUID) -> str | None:
    conv = api.store.app.get(Conversation, cid)
    return conv.assignee if conv.status is Status.HUMAN else None


def test_a_handoff_goes_at_once_to_the_online_attendant(api: Api) -> None:
    crew = team(api)
    go_online(api, crew)
    cid = conversation(api, crew.tenant_id)
    api.store.app.request_handoff(cid, reason="explicit_request")
    assert wait_until(lambda: holder(api, cid)) == str(crew.user_ids[Role.ATTENDANT])


def test_with_nobody_online_it_waits_then_goes_to_who_comes_online(api: Api) -> None:
    crew = team(api)
    cid = conversation(api, crew.tenant_id)
    api.store.app.request_handoff(cid, reason="explicit_request")

    def told() -> list[Any]:
        return [
            e
            for e in api.store.app.stream(cid)
            if type(e).__name__ == "OutboundMessageQueued" and e.author == "system"
        ]

    (expectation,) = wait_until(told)
    assert expectation.text  # when to expect a person, in the tenant's words

    def listed_as_waiting() -> bool:
        with api.store.pool.connection() as conn:
            row = conn.execute(
                "SELECT status FROM rm_conversations WHERE id = %s", (cid,)
            ).fetchone()
        return row is not None and row[0] == "waiting_human"

    wait_until(listed_as_waiting)
    assert holder(api, cid) is None
    go_online(api, crew)
    assert wait_until(lambda: holder(api, cid)) == str(crew.user_ids[Role.ATTENDANT])


def test_the_attendant_with_fewer_open_conversations_gets_the_next(api: Api) -> None:
    crew = team(api)
    busy, free = crew.user_ids[Role.ATTENDANT], crew.user_ids[Role.SUPERVISOR]
    for role in (Role.ATTENDANT, Role.SUPERVISOR):
        answer = httpx.put(
            f"{api.url}/v1/me/availability",
            json={"availability": "online"},
            headers=crew.headers(role),
        )
        assert answer.status_code == 200, answer.text
    held = conversation(api, crew.tenant_id)
    api.store.app.assign(held, assignee=str(busy))
    # `free` was given one later and closed it: idle for less time, but holding none.
    done = conversation(api, crew.tenant_id)
    api.store.app.assign(done, assignee=str(free))
    api.store.app.close_conversation(done, by=str(free))

    def projected() -> bool:
        with api.store.pool.connection() as conn:
            row = conn.execute(
                "SELECT assignee FROM rm_conversations WHERE id = %s", (held,)
            ).fetchone()
            closed = conn.execute(
                "SELECT status FROM rm_conversations WHERE id = %s", (done,)
            ).fetchone()
        return row is not None and row[0] == str(busy) and closed == ("closed",)

    wait_until(projected)
    cid = conversation(api, crew.tenant_id)
    api.store.app.request_handoff(cid, reason="explicit_request")
    assert wait_until(lambda: holder(api, cid)) == str(free)


def test_a_conversation_its_attendant_leaves_unanswered_goes_to_someone_else(api: Api) -> None:
    crew = team(api)
    api.store.app.change_settings(crew.tenant_id, inactivity_limit_s=1)
    lapsing, other = crew.user_ids[Role.SUPERVISOR], crew.user_ids[Role.ATTENDANT]
    cid = conversation(api, crew.tenant_id)
    answer = httpx.post(
        f"{api.url}/v1/conversations/{cid}/assign", headers=crew.headers(Role.SUPERVISOR)
    )
    assert answer.status_code == 200, answer.text
    go_online(api, crew)  # someone to give it to once the sweep takes it back
    assert wait_until(lambda: holder(api, cid) == str(other))
    (released,) = [e for e in api.store.app.stream(cid) if type(e).__name__ == "ReturnedToQueue"]
    assert released.reason == "inactivity"
    assigned = [
        e.assignee for e in api.store.app.stream(cid) if type(e).__name__ == "ConversationAssigned"
    ]
    assert assigned == [str(lapsing), str(other)]

"""The /v1 attendant commands over HTTP on the real embedded services.

Each route's success and its refusals (403, 404, 409, 422 as problem+json), with nothing
appended on a refusal; every event names the user who acted.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.access_helpers import Team, access, bearer, team
from tests.e2e.conftest import Api
from tests.e2e.workspace_helpers import (
    closed,
    conversation,
    held,
    inbound,
    post,
    queue,
    waiting,
)
from urbana.domain.conversation import Conversation, Status
from urbana.domain.lead import Lead, Stage
from urbana.domain.tenant import Tenant
from urbana.domain.user import Availability, Role, User

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def crew(api: Api) -> Team:
    return team(api)


@pytest.fixture(scope="module")
def others(api: Api) -> Team:
    return team(api)


def events(api: Api, stream_id: UUID, name: str) -> list[Any]:
    return [e for e in api.store.app.stream(stream_id) if type(e).__name__ == name]


def uid(crew: Team, role: Role) -> str:
    return str(crew.user_ids[role])


def refused(api: Api, answer: httpx.Response, status: int, before: int) -> dict[str, Any]:
    """The answer is a `status` problem and the store holds no new event."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert api.event_count() == before
    body: dict[str, Any] = answer.json()
    return body


# ------------------------------------------------------------------ assign


def test_assign_takes_the_conversation_for_the_caller(api: Api, crew: Team) -> None:
    cid = waiting(api, crew.tenant_id)
    answer = post(api, f"/v1/conversations/{cid}/assign", crew.headers(Role.ATTENDANT))
    assert answer.status_code == 200, answer.text
    me = uid(crew, Role.ATTENDANT)
    assert (answer.json()["status"], answer.json()["assignee"]) == ("human", me)
    (assigned,) = events(api, cid, "ConversationAssigned")
    assert (assigned.assignee, assigned.by) == (me, me)
    again = post(api, f"/v1/conversations/{cid}/assign", crew.headers(Role.ATTENDANT), {})
    assert again.status_code == 200, again.text
    assert len(events(api, cid, "ConversationAssigned")) == 1


def test_a_supervisor_assigns_someone_else_and_an_attendant_may_not(api: Api, crew: Team) -> None:
    cid = waiting(api, crew.tenant_id)
    target = {"user_id": uid(crew, Role.ATTENDANT)}
    before = api.event_count()
    other = {"user_id": uid(crew, Role.SUPERVISOR)}
    refused(
        api,
        post(api, f"/v1/conversations/{cid}/assign", crew.headers(Role.ATTENDANT), other),
        403,
        before,
    )
    answer = post(api, f"/v1/conversations/{cid}/assign", crew.headers(Role.SUPERVISOR), target)
    assert answer.status_code == 200, answer.text
    (assigned,) = events(api, cid, "ConversationAssigned")
    assert (assigned.assignee, assigned.by) == (target["user_id"], uid(crew, Role.SUPERVISOR))


def test_assigning_a_conversation_someone_else_holds_is_409(api: Api, crew: Team) -> None:
    cid = held(api, crew.tenant_id, uid(crew, Role.SUPERVISOR))
    before = api.event_count()
    body = refused(
        api, post(api, f"/v1/conversations/{cid}/assign", crew.headers(Role.ATTENDANT)), 409, before
    )
    assert body["title"] == "already assigned"


def test_assigning_to_a_user_of_another_tenant_or_an_analyst_is_422(
    api: Api, crew: Team, others: Team
) -> None:
    cid = waiting(api, crew.tenant_id)
    before = api.event_count()
    for user_id in (others.user_ids[Role.ATTENDANT], uuid4(), crew.user_ids[Role.ANALYST]):
        answer = post(
            api,
            f"/v1/conversations/{cid}/assign",
            crew.headers(Role.SUPERVISOR),
            {"user_id": str(user_id)},
        )
        refused(api, answer, 422, before)


def test_two_attendants_assigning_at_once_one_gets_it_the_other_409(api: Api) -> None:
    crew = team(api)
    second, _ = access(api).add_user(
        crew.tenant_id,
        email=f"b.{uuid4().hex[:8]}@example.com",
        role=Role.ATTENDANT,
        password="x" * 12,
    )
    token = httpx.post(
        f"{api.url}/v1/auth/login",
        json={"email": api.store.app.get(User, second).email, "password": "x" * 12},
    ).json()["access_token"]
    callers = [crew.headers(Role.ATTENDANT), bearer(token)]
    for _ in range(5):
        cid = waiting(api, crew.tenant_id)
        start = threading.Barrier(2)

        def take(headers: dict[str, str], cid: UUID = cid, start: threading.Barrier = start) -> int:
            start.wait()
            return post(api, f"/v1/conversations/{cid}/assign", headers).status_code

        with ThreadPoolExecutor(2) as pool:
            statuses = sorted(pool.map(take, callers))
        assert statuses == [200, 409]
        (assigned,) = events(api, cid, "ConversationAssigned")
        assert assigned.assignee in (uid(crew, Role.ATTENDANT), str(second))


# ------------------------------------------------------------------- reply


def test_a_reply_is_queued_by_its_attendant_and_202(api: Api, crew: Team) -> None:
    me = uid(crew, Role.ATTENDANT)
    cid = held(api, crew.tenant_id, me)
    answer = post(
        api, f"/v1/conversations/{cid}/messages", crew.headers(Role.ATTENDANT), {"text": "Olá!"}
    )
    assert answer.status_code == 202, answer.text
    (queued,) = events(api, cid, "OutboundMessageQueued")
    assert queued.outbound_id == answer.json()["outbound_id"]
    assert (queued.author, queued.attendant, queued.text) == ("human", me, "Olá!")


def test_a_reply_retried_with_its_idempotency_key_appends_once(api: Api, crew: Team) -> None:
    cid = held(api, crew.tenant_id, uid(crew, Role.ATTENDANT))
    headers = {**crew.headers(Role.ATTENDANT), "Idempotency-Key": uuid4().hex}
    ids = set()
    for _ in range(5):
        answer = post(api, f"/v1/conversations/{cid}/messages", headers, {"text": "Um momento."})
        assert answer.status_code == 202, answer.text
        ids.add(answer.json()["outbound_id"])
    (queued,) = events(api, cid, "OutboundMessageQueued")
    assert ids == {queued.outbound_id}


def test_a_reply_expands_canned_responses(api: Api, crew: Team) -> None:
    shortcut = f"p{uuid4().hex[:6]}"
    saved = httpx.put(
        f"{api.url}/v1/canned-responses/{shortcut.upper()}",
        json={"text": "O aluguel é R$ 2.500,00."},
        headers=crew.headers(Role.SUPERVISOR),
    )
    assert saved.status_code == 200, saved.text
    assert saved.json() == {"shortcut": shortcut, "text": "O aluguel é R$ 2.500,00."}
    cid = held(api, crew.tenant_id, uid(crew, Role.ATTENDANT))
    answer = post(
        api,
        f"/v1/conversations/{cid}/messages",
        crew.headers(Role.ATTENDANT),
        {"text": f"Oi! /{shortcut}"},
    )
    assert answer.status_code == 202, answer.text
    (queued,) = events(api, cid, "OutboundMessageQueued")
    assert queued.text == "Oi! O aluguel é R$ 2.500,00."


def test_a_reply_outside_the_24_hour_window_needs_a_template(api: Api, crew: Team) -> None:
    cid = conversation(api, crew.tenant_id, at=datetime.now(UTC) - timedelta(hours=25))
    api.store.app.assign(cid, assignee=uid(crew, Role.ATTENDANT))
    before = api.event_count()
    body = refused(
        api,
        post(
            api, f"/v1/conversations/{cid}/messages", crew.headers(Role.ATTENDANT), {"text": "Oi"}
        ),
        409,
        before,
    )
    assert body["title"] == "template required"
    assert "template" in body["detail"]


def test_a_reply_to_a_conversation_held_by_someone_else_is_409(api: Api, crew: Team) -> None:
    cid = held(api, crew.tenant_id, uid(crew, Role.SUPERVISOR))
    before = api.event_count()
    answer = post(
        api, f"/v1/conversations/{cid}/messages", crew.headers(Role.ATTENDANT), {"text": "Oi"}
    )
    assert refused(api, answer, 409, before)["title"] == "not assignee"
    by_supervisor = post(
        api, f"/v1/conversations/{cid}/messages", crew.headers(Role.ADMIN), {"text": "Oi"}
    )
    assert by_supervisor.status_code == 202, by_supervisor.text


def test_a_reply_to_a_conversation_with_the_ai_is_409_and_empty_text_422(
    api: Api, crew: Team
) -> None:
    cid = conversation(api, crew.tenant_id)
    before = api.event_count()
    headers = crew.headers(Role.ATTENDANT)
    refused(
        api, post(api, f"/v1/conversations/{cid}/messages", headers, {"text": "Oi"}), 409, before
    )
    refused(api, post(api, f"/v1/conversations/{cid}/messages", headers, {"text": ""}), 422, before)


# ------------------------------------------------- notes, labels, transfer


def test_notes_are_recorded_with_their_author(api: Api, crew: Team) -> None:
    cid = conversation(api, crew.tenant_id)
    headers = {**crew.headers(Role.ATTENDANT), "Idempotency-Key": "n1"}
    first = post(api, f"/v1/conversations/{cid}/notes", headers, {"text": "Quer visitar sábado."})
    again = post(api, f"/v1/conversations/{cid}/notes", headers, {"text": "Quer visitar sábado."})
    assert first.status_code == again.status_code == 201, first.text
    assert first.json() == again.json()
    (note,) = events(api, cid, "NoteAdded")
    assert (note.note_id, note.author, note.text) == (
        first.json()["note_id"],
        uid(crew, Role.ATTENDANT),
        "Quer visitar sábado.",
    )


def test_labels_change_and_a_label_both_added_and_removed_is_422(api: Api, crew: Team) -> None:
    cid = conversation(api, crew.tenant_id)
    path, headers = f"/v1/conversations/{cid}/labels", crew.headers(Role.ATTENDANT)
    answer = post(api, path, headers, {"add": ["VIP", "financiamento"]})
    assert answer.status_code == 200, answer.text
    answer = post(api, path, headers, {"add": [], "remove": ["vip"]})
    assert answer.json() == {"labels": ["financiamento"]}
    changed = events(api, cid, "LabelsChanged")
    assert [(c.added, c.removed, c.by) for c in changed] == [
        (["financiamento", "vip"], [], uid(crew, Role.ATTENDANT)),
        ([], ["vip"], uid(crew, Role.ATTENDANT)),
    ]
    before = api.event_count()
    refused(api, post(api, path, headers, {"add": ["x"], "remove": ["x"]}), 422, before)


def test_transfer_to_a_queue_with_a_note_and_then_to_a_user(api: Api, crew: Team) -> None:
    me = uid(crew, Role.ATTENDANT)
    cid, fila = held(api, crew.tenant_id, me), queue(api, crew.tenant_id)
    path = f"/v1/conversations/{cid}/transfer"
    answer = post(
        api, path, crew.headers(Role.ATTENDANT), {"to_queue": fila, "note": "Financiamento"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["status"], body["queue"], body["assignee"]) == ("waiting_human", fila, None)
    (moved,) = events(api, cid, "ConversationTransferred")
    assert (moved.to_queue, moved.by, moved.note_id) == (fila, me, body["note_id"])
    (note,) = events(api, cid, "NoteAdded")
    assert note.text == "Financiamento"
    to_user = {"to_user": uid(crew, Role.SUPERVISOR)}
    answer = post(api, path, crew.headers(Role.SUPERVISOR), to_user)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["assignee"]) == ("human", to_user["to_user"])


def test_transfer_refusals_append_nothing(api: Api, crew: Team, others: Team) -> None:
    cid = held(api, crew.tenant_id, uid(crew, Role.SUPERVISOR))
    path = f"/v1/conversations/{cid}/transfer"
    mine, theirs = queue(api, crew.tenant_id), queue(api, others.tenant_id)
    attendant, supervisor = crew.headers(Role.ATTENDANT), crew.headers(Role.SUPERVISOR)
    before = api.event_count()
    refused(api, post(api, path, attendant, {"to_queue": mine}), 409, before)  # not the holder
    for body in (
        {},
        {"to_queue": theirs},
        {"to_user": str(others.user_ids[Role.ATTENDANT])},
        {"to_user": str(uuid4())},
    ):
        refused(api, post(api, path, supervisor, body), 422, before)


# -------------------------------------------- return to AI, close, reopen


def test_return_to_ai_close_and_reopen_record_who_did_it(api: Api, crew: Team) -> None:
    me, headers = uid(crew, Role.ATTENDANT), crew.headers(Role.ATTENDANT)
    cid = waiting(api, crew.tenant_id)
    back = post(api, f"/v1/conversations/{cid}/return-to-ai", headers)
    assert (back.status_code, back.json()["status"]) == (200, "ai"), back.text
    shut = post(api, f"/v1/conversations/{cid}/close", headers, {"resolution": "sold"})
    assert (shut.status_code, shut.json()["status"]) == (200, "closed"), shut.text
    opened = post(api, f"/v1/conversations/{cid}/reopen", headers)
    assert (opened.status_code, opened.json()["status"]) == (200, "ai"), opened.text
    assert events(api, cid, "ReturnedToAI")[0].by == me
    closing = events(api, cid, "ConversationClosed")[0]
    assert (closing.by, closing.resolution) == (me, "sold")
    assert events(api, cid, "ConversationReopened")[0].by == me


def test_bad_transitions_are_409_and_append_nothing(api: Api, crew: Team) -> None:
    headers = crew.headers(Role.ATTENDANT)
    shut, with_ai = closed(api, crew.tenant_id), conversation(api, crew.tenant_id)
    before = api.event_count()
    for path in (
        f"/v1/conversations/{shut}/close",
        f"/v1/conversations/{shut}/assign",
        f"/v1/conversations/{with_ai}/reopen",
        f"/v1/conversations/{with_ai}/return-to-ai",
    ):
        refused(api, post(api, path, headers), 409, before)


# ------------------------------------------------------- tenant isolation


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("assign", None),
        ("messages", {"text": "Oi"}),
        ("notes", {"text": "nota"}),
        ("labels", {"add": ["x"]}),
        ("transfer", {"to_user": None, "to_queue": None}),
        ("return-to-ai", None),
        ("close", None),
        ("reopen", None),
    ],
)
def test_another_tenants_conversation_is_404_like_a_missing_one(
    api: Api, crew: Team, others: Team, path: str, body: dict[str, Any] | None
) -> None:
    theirs = held(api, others.tenant_id, uid(crew, Role.SUPERVISOR))
    before = api.event_count()
    headers = crew.headers(Role.SUPERVISOR)
    foreign = post(api, f"/v1/conversations/{theirs}/{path}", headers, body)
    missing = post(api, f"/v1/conversations/{uuid4()}/{path}", headers, body)
    for answer in (foreign, missing):
        refused(api, answer, 404, before)
    assert foreign.json()["title"] == missing.json()["title"]
    assert api.store.app.get(Conversation, theirs).status is Status.HUMAN


# -------------------------------------------------------------- lead stage


def test_moving_a_lead_records_the_user_and_refuses_the_same_stage(
    api: Api, crew: Team, others: Team
) -> None:
    lead_id = inbound(api, crew.tenant_id).lead_id
    path, headers = f"/v1/leads/{lead_id}/stage", crew.headers(Role.ATTENDANT)
    answer = post(api, path, headers, {"stage": "qualified"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["stage"] == "qualified"
    (changed,) = events(api, lead_id, "LeadStageChanged")
    assert (changed.to_stage, changed.by) == ("qualified", uid(crew, Role.ATTENDANT))
    before = api.event_count()
    refused(api, post(api, path, headers, {"stage": "qualified"}), 409, before)
    refused(api, post(api, path, headers, {"stage": "rich"}), 422, before)
    theirs = inbound(api, others.tenant_id).lead_id
    before = api.event_count()
    refused(api, post(api, f"/v1/leads/{theirs}/stage", headers, {"stage": "hot"}), 404, before)
    assert api.store.app.get(Lead, theirs).stage is Stage.NEW


# ------------------------------------------------------------------- team


def test_queues_are_created_and_changed(api: Api, crew: Team, others: Team) -> None:
    headers = crew.headers(Role.SUPERVISOR)
    name = f"Crédito {uuid4().hex[:6]}"
    made = post(api, "/v1/queues", headers, {"name": name, "intents": ["Financing"]})
    assert made.status_code == 201, made.text
    queue_id = made.json()["queue_id"]
    assert made.json() == {"queue_id": queue_id, "name": name, "intents": ["financing"]}
    before = api.event_count()
    refused(api, post(api, "/v1/queues", headers, {"name": name.upper()}), 422, before)
    changed = httpx.patch(f"{api.url}/v1/queues/{queue_id}", json={"intents": []}, headers=headers)
    assert changed.status_code == 200, changed.text
    assert api.store.app.get(Tenant, crew.tenant_id).queues[queue_id].intents == ()
    theirs = queue(api, others.tenant_id)
    before = api.event_count()
    answer = httpx.patch(f"{api.url}/v1/queues/{theirs}", json={"name": "x"}, headers=headers)
    refused(api, answer, 404, before)


def test_availability_is_the_signed_in_users(api: Api, crew: Team) -> None:
    answer = httpx.put(
        f"{api.url}/v1/me/availability",
        json={"availability": "online"},
        headers=crew.headers(Role.ATTENDANT),
    )
    assert answer.status_code == 200, answer.text
    user = api.store.app.get(User, crew.user_ids[Role.ATTENDANT])
    assert user.availability is Availability.ONLINE
    before = api.event_count()
    bad = httpx.put(
        f"{api.url}/v1/me/availability",
        json={"availability": "sleeping"},
        headers=crew.headers(Role.ATTENDANT),
    )
    refused(api, bad, 422, before)


def test_a_users_queues_are_set_by_a_supervisor(api: Api, crew: Team, others: Team) -> None:
    fila, user_id = queue(api, crew.tenant_id), crew.user_ids[Role.ATTENDANT]
    headers = crew.headers(Role.SUPERVISOR)
    answer = httpx.put(
        f"{api.url}/v1/users/{user_id}/queues", json={"queues": [fila]}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    assert list(api.store.app.get(User, user_id).queues) == [fila]
    before = api.event_count()
    unknown = httpx.put(
        f"{api.url}/v1/users/{user_id}/queues", json={"queues": ["nope"]}, headers=headers
    )
    refused(api, unknown, 422, before)
    theirs = others.user_ids[Role.ATTENDANT]
    foreign = httpx.put(f"{api.url}/v1/users/{theirs}/queues", json={"queues": []}, headers=headers)
    refused(api, foreign, 404, before)


def test_canned_responses_are_saved_and_removed(api: Api, crew: Team) -> None:
    headers, shortcut = crew.headers(Role.ADMIN), f"s{uuid4().hex[:6]}"
    url = f"{api.url}/v1/canned-responses/{shortcut}"
    assert httpx.put(url, json={"text": "Pronto."}, headers=headers).status_code == 200
    assert api.store.app.get(Tenant, crew.tenant_id).canned[shortcut] == "Pronto."
    assert httpx.delete(url, headers=headers).status_code == 204
    before = api.event_count()
    refused(api, httpx.delete(url, headers=headers), 404, before)
    refused(
        api,
        httpx.put(f"{api.url}/v1/canned-responses/a b", json={"text": "x"}, headers=headers),
        422,
        before,
    )


# ---------------------------------------------------------------- settings


def test_settings_are_read_and_changed_by_an_admin(api: Api) -> None:
    crew = team(api)
    headers = crew.headers(Role.ADMIN)
    shown = httpx.get(f"{api.url}/v1/settings", headers=headers)
    assert shown.status_code == 200, shown.text
    assert shown.json()["inactivity_limit_s"] == 900
    assert shown.json()["handoff_intents"] == ["complaint", "cancel", "human"]
    changes = {
        "prompt": "Você é a assistente da Imobiliária Sol.",
        "confidence_threshold": 0.7,
        "business_hours": {"mon": "08:00-18:00"},
        "include_groups": True,
    }
    changed = httpx.patch(f"{api.url}/v1/settings", json=changes, headers=headers)
    assert changed.status_code == 200, changed.text
    assert {k: changed.json()[k] for k in changes} == changes
    settings = api.store.app.get(Tenant, crew.tenant_id).settings
    assert (settings.prompt, settings.confidence_threshold) == (changes["prompt"], 0.7)
    assert httpx.get(f"{api.url}/v1/settings", headers=headers).json() == changed.json()
    admin = uid(crew, Role.ADMIN)
    (prompt,) = events(api, crew.tenant_id, "PromptChanged")
    (rules,) = events(api, crew.tenant_id, "HandoffRulesChanged")
    assert (prompt.by, rules.by) == (admin, admin)
    assert set(rules.changes) == {"confidence_threshold", "business_hours", "include_groups"}


@pytest.mark.parametrize(
    "changes",
    [
        {"no_such_setting": 1},
        {"confidence_threshold": 0.9, "inactivity_limit": 60},
        {"debounce_ms": "soon"},
        {"include_groups": "false"},
        {"confidence_threshold": 7},
        {"business_hours": {"someday": "08:00-18:00"}},
        {"timezone": "Mars/Olympus"},
        {"prompt": 42},
        {},
    ],
)
def test_a_bad_settings_change_is_422_and_changes_nothing(
    api: Api, crew: Team, changes: dict[str, Any]
) -> None:
    before = api.event_count()
    answer = httpx.patch(f"{api.url}/v1/settings", json=changes, headers=crew.headers(Role.ADMIN))
    refused(api, answer, 422, before)

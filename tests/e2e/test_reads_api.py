"""The /v1 read routes over HTTP: conversations, the queue, leads, KPIs, the team.

A tenant's work is recorded through the application (as the webhooks and the attendant
commands record it), the read models are rebuilt from the store by a replay, and every
answer is checked as the API serves it: filtered, paginated, decrypted, scoped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.access_helpers import Team, team
from tests.e2e.conftest import Api
from tests.helpers import ai_reply
from urbana.adapters.postgres.replay import replay
from urbana.application.app import ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.domain.user import Availability, Role

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"


def inbound(contact: str, text: str, name: str, sent_at: datetime) -> InboundMessage:
    return InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=contact,
        phone=contact,
        sent_at=sent_at,
        kind="text",
        text=text,
        contact_name=name,
    )


@dataclass
class World:
    crew: Team
    attendant: str  # the attendant's user id
    maria: UUID  # AI reply, handoff with a summary, assigned, replied, a note, labels
    maria_lead: UUID
    joao: UUID  # waiting for a person since first
    lia: UUID  # waiting since later
    quiet: list[UUID]  # with the AI
    stranger: UUID  # another tenant's conversation
    stranger_lead: UUID
    outbound_id: str  # the attendant's reply
    queue: str  # the tenant's queue "vendas" (its id)

    @property
    def everyone(self) -> set[UUID]:
        return {self.maria, self.joao, self.lia, *self.quiet}


def build(api: Api) -> World:
    app = api.store.app
    crew = team(api)
    tenant = crew.tenant_id
    attendant = str(crew.user_ids[Role.ATTENDANT])
    app.set_availability(tenant, crew.user_ids[Role.ATTENDANT], Availability.ONLINE)
    queue = app.create_queue(tenant, "vendas", ("pricing",))
    app.set_user_queues(tenant, crew.user_ids[Role.ATTENDANT], [queue])
    app.save_canned_response(tenant, "/ola", "Olá! Em que posso ajudar?")
    start = datetime.now(UTC) - timedelta(minutes=30)

    def talk(n: int, name: str, text: str, owner: UUID = tenant) -> Any:
        contact = f"55119{uuid4().int % 10**8:08d}"
        message = inbound(contact, text, name, start + timedelta(seconds=n))
        return app.receive_message(ReceiveMessage(owner, "cloud", message))

    maria = talk(0, "Maria", "Quanto custa o plano?")
    ai_reply(
        app,
        maria.conversation_id,
        reply_to_seq=1,
        text="O plano custa R$ 100",
        intent="pricing",
        confidence=0.9,
        score_delta=45,
    )
    app.request_handoff(maria.conversation_id, reason="hot_lead", summary="Quer o plano anual")
    app.assign(maria.conversation_id, assignee=attendant, queue=queue)
    outbound_id = app.attendant_reply(
        maria.conversation_id, attendant=attendant, text="Oi Maria, sou a atendente"
    )
    app.add_note(maria.conversation_id, author=attendant, text="Cliente antiga")
    app.change_labels(maria.conversation_id, by=attendant, add=["VIP", "anual"])
    joao = talk(1, "João", "Quero falar com alguém")
    app.request_handoff(joao.conversation_id, reason="asked_for_human")
    lia = talk(2, "Lia", "Meu pedido não chegou")
    app.request_handoff(lia.conversation_id, reason="complaint")
    quiet = [talk(3 + i, f"Contato {i}", "Oi").conversation_id for i in range(3)]
    other, _ = app.register_tenant(f"Outra {uuid4().hex[:8]}")
    stranger = talk(9, "Zé", "Olá", owner=other)
    replay(api.settings.database_url or "", api.settings.database_schema)
    return World(
        crew=crew,
        attendant=attendant,
        maria=maria.conversation_id,
        maria_lead=maria.lead_id,
        joao=joao.conversation_id,
        lia=lia.conversation_id,
        quiet=quiet,
        stranger=stranger.conversation_id,
        stranger_lead=stranger.lead_id,
        outbound_id=outbound_id,
        queue=queue,
    )


@pytest.fixture(scope="module")
def world(api: Api) -> World:
    return build(api)


def get(api: Api, world: World, path: str, role: Role = Role.SUPERVISOR, **params: Any) -> Any:
    answer = httpx.get(f"{api.url}{path}", params=params, headers=world.crew.headers(role))
    assert answer.status_code == 200, answer.text
    return answer.json()


def ids(page: dict[str, Any]) -> list[UUID]:
    return [UUID(item["id"]) for item in page["items"]]


def walk(api: Api, world: World, path: str, **params: Any) -> list[UUID]:
    """Every item of a paginated list, following next_cursor to the end."""
    seen: list[UUID] = []
    cursor: str | None = None
    while True:
        query: dict[str, Any] = {**params, **({"cursor": cursor} if cursor else {})}
        page = get(api, world, path, Role.SUPERVISOR, **query)
        assert len(page["items"]) <= params.get("limit", 50)
        seen += ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def test_next_cursor_walks_every_conversation_exactly_once(api: Api, world: World) -> None:
    seen = walk(api, world, "/v1/conversations", limit=2)
    assert len(seen) == len(set(seen)) == len(world.everyone)
    assert set(seen) == world.everyone
    first = get(api, world, "/v1/conversations")
    assert ids(first) == seen  # pages are slices of one order
    assert first["next_cursor"] is None


def test_conversations_filter_by_status_assignee_label_and_queue(api: Api, world: World) -> None:
    def listed(role: Role = Role.SUPERVISOR, **params: Any) -> set[UUID]:
        return set(ids(get(api, world, "/v1/conversations", role, **params)))

    assert listed(status="waiting_human") == {world.joao, world.lia}
    assert listed(status="human") == {world.maria}
    assert listed(status="ai") == set(world.quiet)
    assert listed(Role.ATTENDANT, assignee="me") == {world.maria}
    assert listed(Role.SUPERVISOR, assignee="me") == set()
    assert listed(assignee=world.attendant) == {world.maria}
    assert listed(assignee="none") == world.everyone - {world.maria}
    assert listed(label="vip") == {world.maria}
    assert listed(label="VIP") == {world.maria}  # labels are kept in lower case
    assert listed(queue=world.queue) == {world.maria}
    assert listed(status="closed") == set()


def test_a_listed_conversation_shows_its_lead_last_message_and_assignee(
    api: Api, world: World
) -> None:
    (maria,) = get(api, world, "/v1/conversations", label="vip")["items"]
    assert maria["contact_name"] == "Maria"
    assert maria["channel"] == "cloud"
    assert UUID(maria["lead_id"]) == world.maria_lead
    assert (maria["lead_score"], maria["lead_stage"]) == (45, "qualified")
    assert maria["assignee"] == world.attendant
    assert maria["labels"] == ["anual", "vip"]
    assert maria["last_message"]["author"] == "human"
    assert maria["last_message"]["preview"] == "Oi Maria, sou a atendente"
    assert maria["position"] > 0
    (joao,) = get(api, world, "/v1/conversations", status="waiting_human", limit=1)["items"]
    assert joao["waiting_since"] is not None
    assert joao["last_message"]["author"] == "lead"
    assert joao["unread"] >= 1


def test_the_detail_has_decrypted_messages_notes_and_the_handoff(api: Api, world: World) -> None:
    body = get(api, world, f"/v1/conversations/{world.maria}", Role.ATTENDANT)
    assert UUID(body["id"]) == world.maria
    texts = [(m["author"], m["text"]) for m in body["messages"]]
    assert texts == [
        ("lead", "Quanto custa o plano?"),
        ("ai", "O plano custa R$ 100"),
        ("human", "Oi Maria, sou a atendente"),
    ]
    reply = body["messages"][-1]
    assert reply["attendant"] == world.attendant
    assert reply["status"] is not None  # the delivery status of an outbound message
    notes = [(n["author"], n["text"]) for n in body["notes"]]
    assert notes == [(world.attendant, "Cliente antiga")]
    assert body["handoff_reason"] == "hot_lead"
    assert body["handoff_summary"] == "Quer o plano anual"
    assert body["older_messages"] is None


def test_the_queue_puts_the_longest_wait_first(api: Api, world: World) -> None:
    assert ids(get(api, world, "/v1/queue", Role.ATTENDANT)) == [world.joao, world.lia]
    first = get(api, world, "/v1/queue", limit=1)
    assert ids(first) == [world.joao]
    second = get(api, world, "/v1/queue", limit=1, cursor=first["next_cursor"])
    assert ids(second) == [world.lia]
    assert second["next_cursor"] is None


def test_leads_filter_by_stage_and_score(api: Api, world: World) -> None:
    every = walk(api, world, "/v1/leads", limit=2)
    assert len(every) == len(set(every)) == len(world.everyone)
    assert ids(get(api, world, "/v1/leads", Role.ANALYST, min_score=40)) == [world.maria_lead]
    assert ids(get(api, world, "/v1/leads", stage="qualified")) == [world.maria_lead]
    assert world.maria_lead not in ids(get(api, world, "/v1/leads", stage="new"))
    lead = get(api, world, f"/v1/leads/{world.maria_lead}", Role.ANALYST)
    assert (lead["name"], lead["score"], lead["stage"]) == ("Maria", 45, "qualified")
    assert [UUID(c["id"]) for c in lead["conversation_list"]] == [world.maria]
    assert "last_message" not in lead["conversation_list"][0]  # no text for analysts


def test_kpis_give_each_day_and_the_totals(api: Api, world: World) -> None:
    today = datetime.now(UTC).date()
    since = (today - timedelta(days=1)).isoformat()
    body = get(api, world, "/v1/kpis", Role.ANALYST, **{"from": since, "to": today.isoformat()})
    assert (body["from"], body["to"]) == (since, today.isoformat())
    totals = body["totals"]
    assert totals["day"] is None
    assert totals["conversations"] == sum(d["conversations"] for d in body["days"]) == 6
    assert totals["inbound"] == 6
    assert totals["ai_replies"] == 1
    assert totals["human_replies"] == 1
    assert totals["handoffs"] == 3
    for figures in (*body["days"], totals):
        assert set(figures["first_response_ai"]) == {"p50_s", "p90_s"}
        assert set(figures["first_response_human"]) == {"p50_s", "p90_s"}
        assert {"handoff_rate", "ai_resolution_rate", "avg_resolution_s", "cost_usd"} <= set(
            figures
        )
    assert totals["first_response_ai"]["p50_s"] is not None


def test_team_queues_and_canned_responses(api: Api, world: World) -> None:
    members = get(api, world, "/v1/users", Role.ATTENDANT)["items"]
    assert {UUID(m["id"]) for m in members} == set(world.crew.user_ids.values())
    (attendant,) = [m for m in members if m["id"] == world.attendant]
    assert (attendant["role"], attendant["availability"]) == ("attendant", "online")
    assert (attendant["queues"], attendant["open_conversations"]) == ([world.queue], 1)
    (vendas,) = get(api, world, "/v1/queues", Role.ANALYST)
    assert vendas["id"] == world.queue
    assert (vendas["name"], vendas["intents"], vendas["online"]) == ("vendas", ["pricing"], 1)
    canned = get(api, world, "/v1/canned-responses", Role.ATTENDANT)
    assert [(c["shortcut"], c["text"]) for c in canned] == [("ola", "Olá! Em que posso ajudar?")]
    assert get(api, world, "/v1/canned-responses", prefix="x") == []


@pytest.mark.parametrize(
    "path", ["/v1/conversations/{conversation}", "/v1/leads/{lead}", "/v1/leads/{unknown}"]
)
def test_another_tenants_resource_is_not_found(api: Api, world: World, path: str) -> None:
    url = path.format(conversation=world.stranger, lead=world.stranger_lead, unknown=uuid4())
    answer = httpx.get(f"{api.url}{url}", headers=world.crew.headers(Role.ADMIN))
    assert answer.status_code == 404, answer.text
    assert answer.headers["content-type"] == PROBLEM


def test_another_tenants_rows_are_not_listed(api: Api, world: World) -> None:
    assert world.stranger not in walk(api, world, "/v1/conversations", limit=200)
    assert world.stranger_lead not in walk(api, world, "/v1/leads", limit=200)


def test_kpis_up_to_the_first_representable_day_start_on_it(api: Api, world: World) -> None:
    body = get(api, world, "/v1/kpis", Role.ANALYST, to="0001-01-01")
    assert (body["from"], body["to"], body["days"]) == ("0001-01-01", "0001-01-01", [])


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/v1/conversations", {"limit": "0"}, 422),
        ("/v1/conversations", {"limit": "201"}, 422),
        ("/v1/conversations", {"status": "sleeping"}, 422),
        ("/v1/conversations", {"assignee": "somebody"}, 422),
        ("/v1/conversations", {"cursor": "not-a-cursor"}, 400),
        ("/v1/conversations", {"cursor": "WzEsMiwzXQ"}, 400),  # [1,2,3]: not this list's key
        ("/v1/queue", {"cursor": "WyJ4IiwieSJd"}, 400),  # ["x","y"]: not a time and an id
        ("/v1/leads", {"min_score": "-1"}, 422),
        ("/v1/leads", {"stage": "cold"}, 422),
        ("/v1/kpis", {"from": "2026-13-01"}, 422),
        ("/v1/kpis", {"from": "2026-11-30", "to": "2026-11-01"}, 422),
        ("/v1/kpis", {"from": "2020-01-01", "to": "2026-01-01"}, 422),
        ("/v1/conversations/not-a-uuid", {}, 422),
        ("/v1/conversations", {"label": "a\x00b"}, 422),
        ("/v1/queue", {"queue": "\x00"}, 422),
        ("/v1/canned-responses", {"prefix": "\x00"}, 422),
    ],
)
def test_bad_query_parameters_are_problems(
    api: Api, world: World, path: str, params: dict[str, str], status: int
) -> None:
    before = api.event_count()
    answer = httpx.get(f"{api.url}{path}", params=params, headers=world.crew.headers(Role.ADMIN))
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert api.event_count() == before

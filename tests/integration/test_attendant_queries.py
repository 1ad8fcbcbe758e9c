"""The ConversationFinder port: the read-model adapter and the tests' fake keep one contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from psycopg import AsyncConnection
from tests.fakes import InMemoryFinder
from tests.helpers import ai_reply

from urbana.adapters.postgres.replay import replay
from urbana.adapters.postgres.store import Store
from urbana.application.app import ReceiveMessage, UrbanaApp
from urbana.application.channels import InboundMessage
from urbana.application.ports import ConversationFinder
from urbana.config import conninfo
from urbana.projections.attendant_queries import ReadModelFinder

pytestmark = pytest.mark.integration


def write(app: UrbanaApp, tenant_id: UUID, phone: str, text: str = "oi") -> UUID:
    message = InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=phone,
        phone=phone,
        sent_at=datetime.now(UTC),
        kind="text",
        text=text,
    )
    return app.receive_message(ReceiveMessage(tenant_id, "cloud", message)).conversation_id


def new_phone() -> str:
    return f"55119{uuid4().int % 10**8:08d}"


def conversation(app: UrbanaApp, tenant_id: UUID, phone: str | None = None) -> UUID:
    cid = write(app, tenant_id, phone or new_phone())
    ai_reply(app, cid, reply_to_seq=1, text="Olá!", intent="chat", confidence=0.9)
    return cid


def finder_on(store: Store, kind: str, known: list[tuple[UUID, UUID]]) -> ConversationFinder:
    """The finder under test; the fake is told the conversations the test made."""
    if kind == "fake":
        fake = InMemoryFinder(store.app)
        for tenant_id, conversation_id in known:
            fake.add(tenant_id, conversation_id)
        return fake
    replay(store.url, store.schema)

    @asynccontextmanager
    async def connect(_: UUID) -> AsyncIterator[AsyncConnection[Any]]:
        async with await AsyncConnection.connect(conninfo(store.url, store.schema)) as conn:
            yield conn

    return ReadModelFinder(connect)


@pytest.mark.parametrize("kind", ["read_model", "fake"])
async def test_waiting_lists_the_tenants_waiting_conversations_oldest_first(
    store: Store, kind: str
) -> None:
    app = store.app
    tid, _ = app.register_tenant(f"Fila {uuid4().hex[:8]}")
    other, _ = app.register_tenant(f"Outra {uuid4().hex[:8]}")
    first, second, held, ai = (conversation(app, tid) for _ in range(4))
    foreign = conversation(app, other)
    for cid in (first, second, held, foreign):
        app.request_handoff(cid, reason="explicit_request")
    app.assign(held, assignee="ana")
    known = [(tid, c) for c in (first, second, held, ai)] + [(other, foreign)]
    finder = finder_on(store, kind, known)
    assert await finder.waiting(tid) == [first, second]
    assert ai not in await finder.waiting(tid)
    assert await finder.waiting(other) == [foreign]


@pytest.mark.parametrize("kind", ["read_model", "fake"])
async def test_maybe_unanswered_includes_every_held_conversation_whose_lead_waits(
    store: Store, kind: str
) -> None:
    app = store.app
    tid, _ = app.register_tenant(f"Inativos {uuid4().hex[:8]}")
    phone = new_phone()
    just_taken, answered = conversation(app, tid), conversation(app, tid)
    lead_wrote_again = conversation(app, tid, phone)
    for cid in (just_taken, answered, lead_wrote_again):
        app.request_handoff(cid, reason="explicit_request")
        app.assign(cid, assignee="ana")
    for cid in (answered, lead_wrote_again):
        app.attendant_reply(cid, attendant="ana", text="Oi, sou a Ana")
    write(app, tid, phone, "alô?")
    known = [(tid, c) for c in (just_taken, answered, lead_wrote_again)]
    found = await finder_on(store, kind, known).maybe_unanswered(tid)
    assert sorted(found) == sorted([just_taken, lead_wrote_again])
    assert answered not in found

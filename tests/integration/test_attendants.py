"""The attendants' commands on the real event store: races, retries, sealed notes, assignment."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from tests.fakes import FakeClock, InMemoryFinder, InMemoryRoster
from tests.helpers import ai_reply

from urbana.adapters.postgres.store import Store
from urbana.application.app import ReceiveMessage, UrbanaApp
from urbana.application.assignment import AutoAssigner
from urbana.application.channels import InboundMessage
from urbana.domain.attendance import Availability
from urbana.domain.conversation import Conversation, Status
from urbana.domain.errors import AlreadyAssigned
from urbana.domain.pii import ERASED

pytestmark = pytest.mark.integration


def handed_off(app: UrbanaApp, intent: str = "pricing") -> tuple[UUID, UUID]:
    """A new tenant and one conversation of it waiting for a person."""
    tid, _ = app.register_tenant(f"Atendentes {uuid4().hex[:8]}")
    phone = f"55119{uuid4().int % 10**8:08d}"
    message = InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=phone,
        phone=phone,
        sent_at=datetime.now(UTC),
        kind="text",
        text="boleto vencido, quero falar com alguém",
    )
    cid = app.receive_message(ReceiveMessage(tid, "cloud", message)).conversation_id
    out = ai_reply(app, cid, reply_to_seq=1, text="Vou verificar.", intent=intent, confidence=0.3)
    app.mark_sent(cid, out, f"wamid.out.{uuid4().hex}")  # as the dispatcher would
    app.request_handoff(cid, reason="explicit_request")
    return tid, cid


def at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` in `count` threads released together; each result or exception."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # the race's loser: kept as its result
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def stored_types(store: Store, cid: UUID) -> list[str]:
    return [r.topic.rpartition(".")[2] for r in store.app.recorder.select_events(cid)]


def test_two_attendants_assigning_at_once_one_wins_one_is_refused(store: Store) -> None:
    _, cid = handed_off(store.app)
    users = ("ana", "bia")
    results = at_once(2, lambda i: store.app.assign(cid, assignee=users[i]))
    refused = [r for r in results if isinstance(r, AlreadyAssigned)]
    assert len(refused) == 1
    assert results.count(None) == 1
    assert stored_types(store, cid).count("ConversationAssigned") == 1
    winner = users[results.index(None)]
    assert store.app.get(Conversation, cid).assignee == winner


def test_a_reply_retried_five_times_at_once_is_stored_once(store: Store) -> None:
    _, cid = handed_off(store.app)
    store.app.assign(cid, assignee="ana")
    results = at_once(
        5,
        lambda _: store.app.attendant_reply(
            cid, attendant="ana", text="Oi, sou a Ana", idempotency_key="req-7"
        ),
    )
    assert len(set(results)) == 1
    assert all(isinstance(r, str) for r in results)
    assert stored_types(store, cid).count("OutboundMessageQueued") == 2  # the AI's + this one


def test_a_note_is_sealed_in_the_store_and_erased_with_the_leads_key(store: Store) -> None:
    _, cid = handed_off(store.app)
    note_id = store.app.add_note(cid, author="ana", text="CPF 123.456.789-00 no boleto")
    (record,) = [r for r in store.app.recorder.select_events(cid) if r.topic.endswith(".NoteAdded")]
    assert b"123.456.789" not in record.state
    state = orjson.loads(record.state)
    lead_id = store.app.get(Conversation, cid).lead_id
    assert state["_pii_"]["k"] == str(lead_id)
    (note,) = [e for e in store.app.stream(cid) if type(e).__name__ == "NoteAdded"]
    assert (note.note_id, note.text) == (note_id, "CPF 123.456.789-00 no boleto")
    store.cipher.shred(lead_id)
    (erased,) = [e for e in store.app.stream(cid) if type(e).__name__ == "NoteAdded"]
    assert erased.text == ERASED


def test_every_new_command_survives_a_reload_from_the_store(store: Store) -> None:
    app = store.app
    tid, cid = handed_off(app)
    queue = app.create_queue(tid, "Financeiro", ("billing",))
    app.save_canned_response(tid, "/boleto", "Segue a segunda via do boleto.")
    app.assign(cid, assignee="ana")
    app.change_labels(cid, by="ana", add=["Financeiro"])
    app.transfer(cid, by="ana", to_user="bia", to_queue=queue, note="ela resolve")
    out = app.attendant_reply(cid, attendant="bia", text="/boleto")
    conv = app.get(Conversation, cid)
    assert (conv.status, conv.assignee, conv.queue, conv.labels) == (
        Status.HUMAN,
        "bia",
        queue,
        ("financeiro",),
    )
    assert conv.message(out).text == "Segue a segunda via do boleto."
    app.return_to_ai(cid, by="bia")
    assert app.get(Conversation, cid).status is Status.AI


async def test_the_assigner_routes_assigns_and_sweeps_on_the_real_store(store: Store) -> None:
    app = store.app
    tid, cid = handed_off(app, intent="billing")
    queue = app.create_queue(tid, "Financeiro", ("billing",))
    app.change_settings(tid, inactivity_limit_s=300)
    finder = InMemoryFinder(app)
    finder.add(tid, cid)
    roster = InMemoryRoster(app, finder)
    roster.set(tid, "ana", Availability.ONLINE, [queue])
    clock = FakeClock(datetime.now(UTC))
    assigner = AutoAssigner(app, roster, finder, clock)

    placement = await assigner.handoff_requested(cid)
    assert (placement.action, placement.assignee, placement.queue) == ("assigned", "ana", queue)

    roster.set(tid, "bia", Availability.ONLINE, [queue])
    since = app.get(Conversation, cid).awaiting_attendant_since
    assert since is not None
    clock.current = since + timedelta(seconds=300)
    (moved,) = await assigner.sweep_inactive([tid])
    assert (moved.action, moved.assignee) == ("assigned", "bia")
    assert stored_types(store, cid)[-2:] == ["ReturnedToQueue", "ConversationAssigned"]

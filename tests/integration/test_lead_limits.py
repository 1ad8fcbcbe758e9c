"""Lead limits on real PostgreSQL: two writers racing for the last slot admit exactly one.

Each `Store` here is what one API process holds (its own pool, its own ingest writer
and cache), on one schema, so two of them are two processes writing at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from urbana.adapters.postgres.replay import replay
from urbana.adapters.postgres.store import Store, open_store
from urbana.application.app import Received, ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.application.inbound import _receive_one
from urbana.application.unit_of_work import UnitOfWork
from urbana.config import conninfo
from urbana.domain.lead import Lead
from urbana.projections import queries

pytestmark = pytest.mark.integration


@pytest.fixture
def other(store: Store, master_key: bytes) -> Iterator[Store]:
    """A second process's store on the same schema."""
    opened = open_store(store.url, master_key, schema=store.schema, pool_size=2)
    try:
        yield opened
    finally:
        opened.close()


def new_lead(tenant_id: UUID) -> ReceiveMessage:
    phone = f"55119{uuid4().int % 10**8:08d}"
    message = InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=phone,
        phone=phone,
        sent_at=datetime.now(UTC),
        kind="text",
        text="Oi, vi o anúncio",
    )
    return ReceiveMessage(tenant_id, "cloud", message)


def tenant_with_slots(store: Store, limit: int, used: int) -> UUID:
    tenant_id, _ = store.app.register_tenant(f"Plano {uuid4().hex[:8]}")
    store.app.change_plan(tenant_id, "custom", limit)
    for _ in range(used):
        store.app.receive_message(new_lead(tenant_id))
    return tenant_id


def over(store: Store, lead_id: UUID) -> bool:
    return store.app.get(Lead, lead_id).over_plan_limit


def test_a_count_taken_before_another_writer_committed_is_refused_and_retried(
    store: Store, other: Store
) -> None:
    tid = tenant_with_slots(store, limit=2, used=1)
    first, second = new_lead(tid), new_lead(tid)
    # This process counts its lead into the last slot, but has not committed yet...
    pending = UnitOfWork(store.app)
    assert isinstance(_receive_one(pending, first), Received)
    # ...when the other process takes that slot and commits.
    won = other.app.receive_message(second)
    assert not over(other, won.lead_id)
    # The store refuses the count that was taken from the older state: nothing of it lands.
    with pytest.raises(IntegrityError):
        pending.save()
    # The command's retry reloads the quota, finds it full, and records the lead as over.
    late = store.app.receive_message(first)
    assert over(store, late.lead_id)
    usage = store.app.plan_usage(tid, datetime.now(UTC))
    assert (usage.leads, usage.over_limit) == (2, 1)


def race(writers: tuple[Store, Store], commands: list[ReceiveMessage]) -> list[Received]:
    """Each writer receives its command, both released at the same instant."""
    start = threading.Barrier(len(writers))
    outcomes: dict[int, Received] = {}
    errors: list[BaseException] = []

    def write(i: int, writer: Store, command: ReceiveMessage) -> None:
        try:
            start.wait(timeout=30)
            outcomes[i] = writer.app.receive_message(command)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(i, w, c))
        for i, (w, c) in enumerate(zip(writers, commands, strict=True))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    return [outcomes[i] for i in range(len(writers))]


def test_two_processes_racing_for_the_last_slot_admit_exactly_one(
    store: Store, other: Store
) -> None:
    for _ in range(8):
        tid = tenant_with_slots(store, limit=3, used=2)
        outcomes = race((store, other), [new_lead(tid), new_lead(tid)])
        flags = sorted(over(store, got.lead_id) for got in outcomes)
        assert flags == [False, True]  # one admitted, one recorded over the limit
        usage = store.app.plan_usage(tid, datetime.now(UTC))
        assert (usage.leads, usage.over_limit) == (3, 1)


async def test_the_lead_pipeline_flags_the_lead_past_the_limit(store: Store) -> None:
    tid = tenant_with_slots(store, limit=1, used=0)
    admitted = store.app.receive_message(new_lead(tid)).lead_id
    flagged = store.app.receive_message(new_lead(tid)).lead_id
    replay(store.url, store.schema)
    conn = await psycopg.AsyncConnection.connect(conninfo(store.url, store.schema), autocommit=True)
    try:
        leads = (await queries.list_leads(conn, tid)).items
    finally:
        await conn.close()
    assert {lead.id: lead.over_plan_limit for lead in leads} == {admitted: False, flagged: True}

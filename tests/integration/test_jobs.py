"""Scheduled jobs on the real store: candidates from the read models, decisions on the
aggregates, a period run once, and one scheduler leading at a time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import psycopg
import pytest
from prometheus_client import REGISTRY
from tests.helpers import ai_reply

from urbana.adapters.metrics import observe_job
from urbana.adapters.postgres.erasure import PostgresSubjectRows
from urbana.adapters.postgres.jobs import PgJobLedger, PgJobSources, PgLeadership
from urbana.adapters.postgres.replay import replay
from urbana.adapters.postgres.store import Store
from urbana.application.app import ReceiveMessage, UrbanaApp
from urbana.application.channels import InboundMessage
from urbana.application.erasure import Erasure
from urbana.application.jobs import catalogue, close_stale, decay_scores, follow_up
from urbana.application.scheduler import Scheduler
from urbana.config import conninfo
from urbana.domain.conversation import Conversation, Status
from urbana.domain.lead import Lead

pytestmark = pytest.mark.integration


def write(app: UrbanaApp, tenant_id: UUID, phone: str, sent_at: datetime) -> UUID:
    message = InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=phone,
        phone=phone,
        sent_at=sent_at,
        kind="text",
        text="quero saber o preço",
    )
    return app.receive_message(ReceiveMessage(tenant_id, "cloud", message)).conversation_id


def warm_conversation(app: UrbanaApp, tenant_id: UUID, sent_at: datetime) -> UUID:
    """A conversation whose lead scored 50 and then went quiet after `sent_at`."""
    cid = write(app, tenant_id, f"55119{uuid4().int % 10**8:08d}", sent_at)
    ai_reply(
        app, cid, reply_to_seq=1, text="Olá!", intent="pricing", confidence=0.9, score_delta=50
    )
    return cid


def lead_of(app: UrbanaApp, cid: UUID) -> Lead:
    return app.get(Lead, app.get(Conversation, cid).lead_id)


def notification_max(store: Store) -> int:
    with store.pool.connection() as conn:
        row = conn.execute("SELECT max(notification_id) FROM urbana_events").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def test_decay_cools_a_silent_lead_once_per_step(store: Store) -> None:
    app = store.app
    tid, _ = app.register_tenant(f"Decay {uuid4().hex[:8]}")
    t0 = datetime.now(UTC).replace(microsecond=0)
    cid = warm_conversation(app, tid, t0)
    fresh = warm_conversation(app, tid, t0 + timedelta(hours=20))  # wrote later
    replay(store.url, store.schema)
    sources = PgJobSources(store.pool)

    dry = decay_scores(app, sources, tid, t0 + timedelta(hours=25), True)
    assert (dry.examined, dry.changed) == (1, 1)
    assert lead_of(app, cid).score == 50  # a dry run changes nothing

    report = decay_scores(app, sources, tid, t0 + timedelta(hours=25), False)
    assert (report.examined, report.changed) == (1, 1)
    lead = lead_of(app, cid)
    assert lead.score == 40
    scored = app.stream(lead.id)[-1]
    assert (scored.reason, scored.decay) == ("no reply for 24 h", f"{t0.isoformat()}/24h")

    before = notification_max(store)
    again = decay_scores(app, sources, tid, t0 + timedelta(hours=26), False)
    assert again.changed == 0
    assert notification_max(store) == before

    decay_scores(app, sources, tid, t0 + timedelta(hours=49), False)
    assert lead_of(app, cid).score == 20  # the 48 h step: -20 more
    assert lead_of(app, fresh).score == 40  # 29 h quiet at that time: only the first step


def test_a_lead_who_wrote_after_the_read_model_is_not_cooled(store: Store) -> None:
    app = store.app
    tid, _ = app.register_tenant(f"Decay {uuid4().hex[:8]}")
    t0 = datetime.now(UTC).replace(microsecond=0)
    cid = warm_conversation(app, tid, t0)
    replay(store.url, store.schema)
    conversation = app.get(Conversation, cid)
    write(app, tid, conversation.contact, t0 + timedelta(hours=24))  # the view does not know yet
    report = decay_scores(app, PgJobSources(store.pool), tid, t0 + timedelta(hours=25), False)
    assert (report.examined, report.changed) == (1, 0)
    assert lead_of(app, cid).score == 50


def test_close_stale_closes_an_inactive_conversation_once(store: Store) -> None:
    app = store.app
    tid, _ = app.register_tenant(f"Stale {uuid4().hex[:8]}")
    other, _ = app.register_tenant(f"Other {uuid4().hex[:8]}")
    cid = warm_conversation(app, tid, datetime.now(UTC))
    foreign = warm_conversation(app, other, datetime.now(UTC))
    replay(store.url, store.schema)
    sources = PgJobSources(store.pool)
    now = datetime.now(UTC)

    assert close_stale(app, sources, tid, now + timedelta(days=6), False).examined == 0
    report = close_stale(app, sources, tid, now + timedelta(days=8), False)
    assert (report.examined, report.changed) == (1, 1)
    assert app.get(Conversation, cid).status is Status.CLOSED
    closed = app.stream(cid)[-1]
    assert (type(closed).__name__, closed.by, closed.resolution) == (
        "ConversationClosed",
        "scheduler",
        "stale",
    )
    assert app.get(Conversation, foreign).status is not Status.CLOSED  # another tenant's

    before = notification_max(store)
    again = close_stale(app, sources, tid, now + timedelta(days=8), False)  # view is behind
    assert again.changed == 0
    assert notification_max(store) == before


def test_the_tenants_settings_turn_jobs_off(store: Store) -> None:
    app = store.app
    tid, _ = app.register_tenant(f"Off {uuid4().hex[:8]}")
    app.change_settings(tid, stale_after_days=0, decay_steps={})
    cid = warm_conversation(app, tid, datetime.now(UTC))
    replay(store.url, store.schema)
    sources, later = PgJobSources(store.pool), datetime.now(UTC) + timedelta(days=30)
    assert close_stale(app, sources, tid, later, False).changed == 0
    assert decay_scores(app, sources, tid, later, False).changed == 0
    assert app.get(Conversation, cid).status is not Status.CLOSED


def queued(app: UrbanaApp, cid: UUID) -> list[object]:
    return [e for e in app.stream(cid) if type(e).__name__ == "OutboundMessageQueued"]


def test_follow_up_is_off_by_default_and_goes_once_per_silence(store: Store) -> None:
    app = store.app
    tid, _ = app.register_tenant(f"Follow {uuid4().hex[:8]}")
    cid = warm_conversation(app, tid, datetime.now(UTC))
    replay(store.url, store.schema)
    sources, later = PgJobSources(store.pool), datetime.now(UTC) + timedelta(hours=5)
    assert follow_up(app, sources, tid, later, False).examined == 0  # off by default
    app.change_settings(tid, follow_up_after_hours=4)
    before = len(queued(app, cid))
    assert follow_up(app, sources, tid, later, True).changed == 1
    assert len(queued(app, cid)) == before  # a dry run queues nothing
    report = follow_up(app, sources, tid, later, False)
    assert (report.examined, report.changed) == (1, 1)
    message = queued(app, cid)[-1]
    assert message.author == "system"  # type: ignore[attr-defined]
    assert message.text == "Oi! Ficou alguma dúvida? Estou por aqui se quiser continuar."  # type: ignore[attr-defined]
    assert follow_up(app, sources, tid, later + timedelta(hours=1), False).changed == 0


def test_after_the_window_a_follow_up_is_only_the_approved_template(store: Store) -> None:
    app = store.app
    tid, _ = app.register_tenant(f"Follow {uuid4().hex[:8]}")
    app.change_settings(tid, follow_up_after_hours=4)
    cid = warm_conversation(app, tid, datetime.now(UTC))
    replay(store.url, store.schema)
    sources, after = PgJobSources(store.pool), datetime.now(UTC) + timedelta(hours=30)
    assert follow_up(app, sources, tid, after, False).changed == 0  # no template: nothing
    app.register_template(
        tid, "retomar_conversa", language="pt_BR", parameters=[], text="Podemos continuar?"
    )
    app.change_settings(tid, follow_up_template="retomar_conversa")
    assert follow_up(app, sources, tid, after, False).changed == 1
    message = queued(app, cid)[-1]
    template = {"name": "retomar_conversa", "language": "pt_BR", "values": []}
    assert message.template == template  # type: ignore[attr-defined]


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


def counted(name: str) -> float:
    """The decay-scores job's figure in this process's Prometheus registry."""
    labels = {"job": "decay-scores"} | ({"outcome": "ok"} if "runs" in name else {})
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_period_runs_once_however_many_ticks_see_it(store: Store) -> None:
    app = store.app
    tid, _ = app.register_tenant(f"Ticks {uuid4().hex[:8]}")
    # Midday in São Paulo, so the hour the test moves on never reaches a daily job's time.
    midday = datetime.now(ZoneInfo("America/Sao_Paulo")).replace(hour=12, minute=10)
    at = midday.astimezone(UTC) - timedelta(days=1)
    cid = warm_conversation(app, tid, at - timedelta(hours=30))
    replay(store.url, store.schema)
    ledger, sources = PgJobLedger(store.pool, store.schema), PgJobSources(store.pool)
    clock = FixedClock(at)
    jobs = catalogue(app, sources, Erasure(app, PostgresSubjectRows(store.pool), None, clock))
    scheduler = Scheduler(
        app,
        sources,
        ledger,
        PgLeadership(conninfo(store.url, store.schema), store.schema),
        jobs=jobs,
        clock=clock,
        on_run=observe_job,
    )
    before = {name: counted(name) for name in ("urbana_job_runs_total", "urbana_job_changed_total")}
    first = await scheduler.tick()
    assert {(r.job, r.tenant_id) for r in first} == {(j.name, tid) for j in jobs}
    # Each run is counted in /metrics, with what it changed.
    assert counted("urbana_job_runs_total") - before["urbana_job_runs_total"] == 1
    assert counted("urbana_job_changed_total") - before["urbana_job_changed_total"] == 1
    assert {j.name for j in jobs} == {"decay-scores", "close-stale", "follow-up", "retention"}
    assert lead_of(app, cid).score == 40
    assert await scheduler.tick() == []  # same periods: nothing runs again
    runs = {(r["job"], r["tenant_id"]): r for r in ledger.last_runs()}
    assert runs[("decay-scores", str(tid))]["counts"] == {"examined": 1, "changed": 1}
    clock.at += timedelta(hours=1)  # the next hourly period (and quarter hour of follow-up)
    assert sorted(r.job for r in await scheduler.tick()) == ["decay-scores", "follow-up"]


async def test_the_retention_job_erases_subjects_past_the_tenants_days(store: Store) -> None:
    app = store.app
    tid, _ = app.register_tenant(f"Retention {uuid4().hex[:8]}")
    app.change_settings(tid, retention_days=30)
    cid = warm_conversation(app, tid, datetime.now(UTC))
    replay(store.url, store.schema)
    sources = PgJobSources(store.pool)
    clock = FixedClock(datetime.now(UTC) + timedelta(days=31))
    erasure = Erasure(app, PostgresSubjectRows(store.pool), None, clock)
    (retention,) = [j for j in catalogue(app, sources, erasure) if j.name == "retention"]
    dry = await retention.run(tid, clock.at, True)
    assert (dry.examined, dry.changed) == (1, 1)
    assert not lead_of(app, cid).erased
    done = await retention.run(tid, clock.at, False)
    assert (done.examined, done.changed) == (1, 1)
    assert lead_of(app, cid).erased
    again = await retention.run(tid, clock.at, False)
    assert again.changed == 0


async def test_one_scheduler_leads_and_another_takes_over_when_it_dies(store: Store) -> None:
    info = conninfo(store.url, store.schema)
    first, second = (PgLeadership(info, store.schema, poll_s=0.2) for _ in range(2))
    stop = asyncio.Event()
    assert await first.acquire(stop)
    waiting = asyncio.create_task(second.acquire(stop))
    await asyncio.sleep(1.0)
    assert not waiting.done()  # the lock is held: the second one waits
    # The leader's process dies: its session ends (as a crash or a lost connection would).
    with psycopg.connect(info, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() "
            "AND objid = hashtext(%s)::oid",
            (first.lock_name,),
        )
    assert await asyncio.wait_for(waiting, timeout=30)
    with pytest.raises(Exception, match="leadership lost"):
        await first.check()
    await second.check()
    await second.release()

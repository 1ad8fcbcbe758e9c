"""Plans and lead limits: São Paulo months, the count, and what a lead over the limit gets."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest
from tests.fakes import ScriptedLLM, in_memory_app

from urbana.application.app import ReceiveMessage, UrbanaApp
from urbana.application.channels import InboundMessage
from urbana.application.responder import Responder
from urbana.domain.errors import InvalidInput
from urbana.domain.lead import Lead
from urbana.domain.plans import LeadQuota, Plan, billing_month, lead_quota_id_for
from urbana.domain.reply import AIDecision
from urbana.domain.tenant import Tenant


def test_a_month_begins_on_the_first_at_midnight_in_sao_paulo() -> None:
    # São Paulo is UTC-3 (no daylight saving since 2019): its midnight is 03:00 UTC.
    assert billing_month(datetime(2026, 12, 1, 2, 59, 59, tzinfo=UTC)) == "2026-11"
    assert billing_month(datetime(2026, 12, 1, 3, 0, tzinfo=UTC)) == "2026-12"
    assert billing_month(datetime(2027, 1, 1, 2, 59, tzinfo=UTC)) == "2026-12"
    assert billing_month(datetime(2027, 1, 1, 3, 0, tzinfo=UTC)) == "2027-01"


def test_a_time_without_a_zone_has_no_month() -> None:
    with pytest.raises(InvalidInput):
        billing_month(datetime(2026, 12, 1, 3, 0))


def test_plans_come_from_the_catalogue_or_are_custom_with_a_limit() -> None:
    assert Plan.of("starter") == Plan("starter", 100)
    assert Plan.of(" Unlimited ") == Plan("unlimited", None)
    assert Plan.of("custom", 1) == Plan("custom", 1)
    for bad in (("gold", None), ("custom", None), ("custom", -1), ("starter", 5)):
        with pytest.raises(InvalidInput):
            Plan.of(*bad)


def test_the_quota_admits_up_to_the_limit_and_counts_the_rest_apart() -> None:
    tenant_id = uuid4()
    quota = LeadQuota(tenant_id=tenant_id, month="2026-12")
    assert quota.id == lead_quota_id_for(tenant_id, "2026-12")
    assert [quota.count(uuid4(), 2) for _ in range(3)] == [True, True, False]
    assert (quota.admitted, quota.over_limit) == (2, 1)


def tenant_on(app: UrbanaApp, plan: str, limit: int | None = None) -> UUID:
    tenant_id, _ = app.register_tenant(f"Loja {uuid4().hex[:8]}")
    app.change_plan(tenant_id, plan, limit)
    return tenant_id


def receive(
    app: UrbanaApp, tenant_id: UUID, contact: str, at: datetime, channel: str = "cloud"
) -> tuple[UUID, UUID]:
    got = app.receive_message(
        ReceiveMessage(
            tenant_id,
            channel,
            InboundMessage(
                provider_message_id=f"wamid.{uuid4().hex}",
                contact=contact,
                phone=contact if channel != "console" else None,
                sent_at=at,
                kind="text",
                text="Oi, quero saber o preço",
            ),
        )
    )
    return got.conversation_id, got.lead_id


def names(app: UrbanaApp, stream: UUID) -> list[str]:
    return [type(e).__name__ for e in app.stream(stream)]


def test_the_lead_past_the_limit_is_recorded_and_flagged() -> None:
    app = in_memory_app()
    tid = tenant_on(app, "custom", 1)
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    _, first = receive(app, tid, "5511988880001", now)
    conversation, second = receive(app, tid, "5511988880002", now)

    assert not app.get(Lead, first).over_plan_limit
    assert app.get(Lead, second).over_plan_limit
    assert names(app, second) == ["LeadCreated", "LeadOverPlanLimit"]
    assert names(app, conversation) == ["ConversationStarted", "MessageReceived"]
    usage = app.plan_usage(tid, now)
    assert (usage.plan, usage.lead_limit, usage.month) == ("custom", 1, "2026-12")
    assert (usage.leads, usage.over_limit) == (1, 1)


def test_a_lead_that_writes_again_is_not_counted_again() -> None:
    app = in_memory_app()
    tid = tenant_on(app, "custom", 1)
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    receive(app, tid, "5511988880001", now)
    _, lead = receive(app, tid, "5511988880001", now)
    assert not app.get(Lead, lead).over_plan_limit
    assert app.plan_usage(tid, now).leads == 1


def test_the_month_of_a_lead_is_its_first_message_in_sao_paulo() -> None:
    app = in_memory_app()
    tid = tenant_on(app, "custom", 1)
    late_november = datetime(2026, 12, 1, 2, 59, tzinfo=UTC)
    december = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    _, november_lead = receive(app, tid, "5511988880001", late_november)
    _, december_lead = receive(app, tid, "5511988880002", december)
    assert not app.get(Lead, november_lead).over_plan_limit
    assert not app.get(Lead, december_lead).over_plan_limit  # a new month, a new count
    assert app.plan_usage(tid, late_november).leads == 1
    assert app.plan_usage(tid, december).leads == 1


def test_console_leads_and_unlimited_plans_count_nothing() -> None:
    app = in_memory_app()
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    limited = tenant_on(app, "custom", 0)
    _, console_lead = receive(app, limited, "console:s1", now, channel="console")
    assert not app.get(Lead, console_lead).over_plan_limit
    unlimited = tenant_on(app, "unlimited")
    receive(app, unlimited, "5511988880001", now)
    assert app.plan_usage(unlimited, now).leads == 0
    assert app.plan_usage(limited, now).leads == 0


def test_the_plan_is_the_operators_and_the_same_plan_records_nothing() -> None:
    app = in_memory_app()
    tid = tenant_on(app, "starter")
    version = len(app.stream(tid))
    app.change_plan(tid, "starter")
    assert len(app.stream(tid)) == version
    assert app.get(Tenant, tid).plan == Plan("starter", 100)
    assert names(app, tid)[-1] == "PlanChanged"


async def test_the_ai_does_not_answer_a_lead_over_the_limit() -> None:
    app = in_memory_app()
    tid = tenant_on(app, "custom", 0)
    conversation, _ = receive(app, tid, "5511988880009", datetime.now(UTC))
    llm = ScriptedLLM(
        AIDecision(reply="Custa 10.", intent="pricing", confidence=0.9, should_handoff=False)
    )
    done = await Responder(app, llm).respond(conversation)
    assert (done.action, done.detail) == ("skipped", "lead over the plan's monthly limit")
    assert llm.prompts == []  # no LLM call, so no reply and no spend
    assert names(app, conversation)[-1] == "MessageReceived"

"""GET /metrics in the Prometheus text format, its token, and /v1/status for admins."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.access_helpers import bearer, team
from tests.e2e.conftest import Api, running_api
from tests.e2e.metrics_helpers import parse, scrape, value
from tests.e2e.webhook_helpers import cloud_tenant, cloud_text, post_cloud
from urbana.adapters.embedded import ServiceUrls
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

TOKEN = "metrics-" + uuid4().hex
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def api(services: ServiceUrls) -> Iterator[Api]:
    """The API with the relay and the projector in the process, behind a metrics token."""
    with running_api(services, "e2e_metrics", ("relay", "projector"), metrics_token=TOKEN) as a:
        yield a


def test_a_webhook_moves_the_ingest_figures(api: Api) -> None:
    t = cloud_tenant(api)
    before = scrape(api.url, TOKEN)
    with httpx.Client(timeout=30) as client:
        answer = post_cloud(client, api, t, cloud_text(t.phone_number_id, "5511987650001", "Oi"))
    assert answer.status_code == 200, answer.text
    after = scrape(api.url, TOKEN)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("urbana_ingest_outcomes_total", outcome="received") == 1
    assert moved("urbana_ingest_seconds_count") == 1
    assert moved("urbana_ingest_seconds_sum") > 0
    assert moved("urbana_ingest_batches_total") >= 1  # this item's group commit
    assert moved("urbana_ingest_items_total") >= 1
    webhook = {"method": "POST", "route": "/webhooks/whatsapp-cloud", "status": "200"}
    assert moved("urbana_http_request_seconds_count", **webhook) == 1


def test_the_process_state_families_are_there(api: Api) -> None:
    t = cloud_tenant(api)
    with httpx.Client(timeout=30) as client:
        post_cloud(client, api, t, cloud_text(t.phone_number_id, "5511987650002", "Oi"))
    samples = scrape(api.url, TOKEN)
    names = {name for name, _ in samples}
    assert {
        "urbana_store_down",
        "urbana_store_refused_total",
        "urbana_live_subscribers",
        "urbana_live_following",
        "urbana_relay_lag_events",
        "urbana_relay_position",
        "urbana_relay_published_total",
        "urbana_projection_lag_records",
        "urbana_projection_applied_total",
    } <= names
    assert value(samples, "urbana_store_down") == 0
    projections = {
        dict(labels)["projection"]
        for name, labels in samples
        if name == "urbana_projection_lag_records"
    }
    assert "conversation_view" in projections


def test_the_text_parses_as_prometheus_does(api: Api) -> None:
    answer = httpx.get(f"{api.url}/metrics", headers=bearer(TOKEN))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    families = list(text_string_to_metric_families(answer.text))
    ours = [f for f in families if f.name.startswith("urbana_")]
    assert len({f.name for f in families}) == len(families), "a family is exposed twice"
    assert {f.name for f in ours} >= {
        "urbana_ingest_batches",
        "urbana_ingest_seconds",
        "urbana_http_request_seconds",
        "urbana_llm_seconds",
        "urbana_llm_tokens",
        "urbana_llm_cost_usd",
        "urbana_sends",
        "urbana_job_runs",
        "urbana_relay_lag_events",
    }
    assert all(f.documentation for f in ours)
    histogram = next(f for f in ours if f.name == "urbana_ingest_seconds")
    assert histogram.type == "histogram"
    assert any(
        s.name == "urbana_ingest_seconds_bucket" and s.labels["le"] == "+Inf"
        for s in histogram.samples
    )
    assert parse(answer.text)  # the helper's reading agrees


def test_the_metrics_token_is_enforced(api: Api) -> None:
    missing = httpx.get(f"{api.url}/metrics")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == PROBLEM
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.get(f"{api.url}/metrics", headers=bearer("not-the-token"))
    assert wrong.status_code == 403
    assert wrong.headers["content-type"] == PROBLEM
    assert httpx.get(f"{api.url}/metrics", headers=bearer(TOKEN)).status_code == 200


def test_status_is_for_a_tenants_admin(api: Api) -> None:
    crew = team(api)
    assert httpx.get(f"{api.url}/v1/status").status_code == 401
    for role in (Role.ATTENDANT, Role.SUPERVISOR, Role.ANALYST):
        refused = httpx.get(f"{api.url}/v1/status", headers=crew.headers(role))
        assert refused.status_code == 403, role
        assert refused.headers["content-type"] == PROBLEM
    answer = httpx.get(f"{api.url}/v1/status", headers=crew.headers(Role.ADMIN))
    assert answer.status_code == 200
    figures = answer.json()
    assert set(figures["ingest"]) == {
        "batches",
        "items",
        "mean_batch",
        "store_down",
        "refused_while_down",
    }
    assert {"relay", "projections", "live"} <= set(figures)

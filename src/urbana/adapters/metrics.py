"""Prometheus metrics: what `GET /metrics` (and a worker's metrics port) exposes.

Two kinds of figures, all named `urbana_*`:
- what happens (ingest commits, LLM calls, sends, job runs, HTTP requests) is counted
  by prometheus-client instruments where it happens. Under `serve --workers N` the
  instruments write to PROMETHEUS_MULTIPROC_DIR and a scrape of any worker sums them
  all (prometheus-client's multiprocess mode); elsewhere they live in the process.
- the state of the process's roles (relay and projection lag, circuit breakers, the
  scheduler's lead, the live feed) is read from the roles when scraped (`StateCollector`).

The instruments are process-wide by nature (Prometheus scrapes processes), so they are
made once, when this module is first imported; nothing else here runs at import.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SLOW = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)

INGEST_BATCHES = Counter("urbana_ingest_batches", "Group commits of webhook items into the store")
INGEST_ITEMS = Counter("urbana_ingest_items", "Webhook items committed by the group commits")
INGEST_SECONDS = Histogram(
    "urbana_ingest_seconds", "One webhook request's items, from parsed to durable", buckets=_FAST
)
INGEST_OUTCOMES = Counter(
    "urbana_ingest_outcomes",
    "Webhook items by outcome (received, duplicate, status, refused)",
    ["outcome"],
)
INGEST_UNAVAILABLE = Counter(
    "urbana_ingest_unavailable", "Webhook requests answered 503: the store did not answer"
)
HTTP_SECONDS = Histogram(
    "urbana_http_request_seconds",
    "HTTP requests by method, route template and status",
    ["method", "route", "status"],
    buckets=_FAST,
)
LLM_SECONDS = Histogram(
    "urbana_llm_seconds",
    "LLM completions (fallback model and retries included) by answering model and outcome",
    ["model", "outcome"],
    buckets=_SLOW,
)
LLM_TOKENS = Counter(
    "urbana_llm_tokens", "LLM tokens by model and direction", ["model", "direction"]
)
LLM_COST = Counter("urbana_llm_cost_usd", "Estimated LLM spend in USD by model", ["model"])
SENDS = Counter("urbana_sends", "Outbound dispatches by outcome", ["outcome"])
JOB_RUNS = Counter("urbana_job_runs", "Scheduled job runs by job and outcome", ["job", "outcome"])
JOB_EXAMINED = Counter("urbana_job_examined", "Candidates the job runs examined", ["job"])
JOB_CHANGED = Counter(
    "urbana_job_changed", "Aggregates the job runs changed (appended events to)", ["job"]
)

_BREAKER_STATES = ("closed", "half_open", "open")


def observe_llm(
    model: str, outcome: str, seconds: float, tokens_in: int, tokens_out: int, cost: float
) -> None:
    """One LLM completion, as the adapter saw it."""
    LLM_SECONDS.labels(model, outcome).observe(seconds)
    if tokens_in:
        LLM_TOKENS.labels(model, "in").inc(tokens_in)
    if tokens_out:
        LLM_TOKENS.labels(model, "out").inc(tokens_out)
    if cost:
        LLM_COST.labels(model).inc(cost)


def observe_job(job: str, outcome: str, examined: int = 0, changed: int = 0) -> None:
    """One scheduled job run for one tenant."""
    JOB_RUNS.labels(job, outcome).inc()
    JOB_EXAMINED.labels(job).inc(examined)
    JOB_CHANGED.labels(job).inc(changed)


def observe_batch(items: int) -> None:
    """One group commit of `items` webhook items."""
    INGEST_BATCHES.inc()
    INGEST_ITEMS.inc(items)


class StateCollector(Collector):
    """This process's roles, read when scraped from the figures they keep (`Runtime.metrics`)."""

    def __init__(self, figures: Callable[[], Mapping[str, Any]]) -> None:
        self._figures = figures

    def collect(self) -> Iterable[Metric]:
        f = self._figures()
        yield from _relay(f.get("relay"))
        yield from _projections(f.get("projections") or {})
        yield from _workers(f)
        yield from _breakers(f)
        yield from _scheduler(f.get("scheduler"))
        yield from _live(f.get("live"))
        yield from _store(f.get("store"))


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _store(store: Mapping[str, Any] | None) -> Iterable[Metric]:
    if store is None:
        return
    yield _gauge("urbana_store_down", "1 while the store is taken as down", store["down"])
    yield CounterMetricFamily(
        "urbana_store_refused",
        "Calls refused at once while the store was taken as down",
        value=store["refused"],
    )


def _relay(r: Mapping[str, Any] | None) -> Iterable[Metric]:
    if not r:
        return
    yield _gauge("urbana_relay_lag_events", "Stored events not yet on the broker", r["lag_events"])
    yield _gauge(
        "urbana_relay_lag_seconds",
        "Age of the oldest event not yet on the broker",
        r["lag_seconds"],
    )
    yield _gauge(
        "urbana_relay_position", "Every event up to here is on the broker", r["last_position"]
    )
    yield CounterMetricFamily(
        "urbana_relay_published", "Records the broker acknowledged", value=r["published"]
    )
    yield CounterMetricFamily(
        "urbana_relay_errors", "Failed publish attempts (each retried)", value=r["errors"]
    )


def _projections(p: Mapping[str, Any]) -> Iterable[Metric]:
    if not p:
        return
    lag = GaugeMetricFamily(
        "urbana_projection_lag_records", "Records behind the topic's end", labels=["projection"]
    )
    applied = CounterMetricFamily(
        "urbana_projection_applied", "Events applied to the read model", labels=["projection"]
    )
    dead = CounterMetricFamily(
        "urbana_projection_dead_lettered",
        "Events sent to the dead-letter topic",
        labels=["projection"],
    )
    for name, m in sorted(p.items()):
        lag.add_metric([name], m["lag_records"])
        applied.add_metric([name], m["applied"])
        dead.add_metric([name], m["dead_lettered"])
    yield from (lag, applied, dead)


_WORKER_ROLES = ("responder", "dispatcher", "knowledge", "notifier", "assigner")


def _workers(f: Mapping[str, Any]) -> Iterable[Metric]:
    present = [(role, f[role]) for role in _WORKER_ROLES if role in f]
    if not present:
        return
    events = CounterMetricFamily(
        "urbana_worker_events", "Events a worker role took, by outcome", labels=["role", "outcome"]
    )
    retries = CounterMetricFamily(
        "urbana_worker_retries", "Transient faults a worker role retried", labels=["role"]
    )
    for role, m in present:
        for outcome in ("handled", "skipped", "failed"):
            events.add_metric([role, outcome], m[outcome])
        retries.add_metric([role], m["retries"])
    yield from (events, retries)
    vectors = (f.get("responder") or {}).get("query_vectors")
    if vectors is not None:
        lookups = CounterMetricFamily(
            "urbana_query_vector_lookups",
            "The responder's query-vector cache: bursts whose vector was cached (hit) or "
            "embedded (miss)",
            labels=["outcome"],
        )
        lookups.add_metric(["hit"], vectors["hits"])
        lookups.add_metric(["miss"], vectors["misses"])
        yield lookups
        yield _gauge(
            "urbana_query_vector_entries", "Vectors the responder's cache holds", vectors["entries"]
        )


def _breakers(f: Mapping[str, Any]) -> Iterable[Metric]:
    family = GaugeMetricFamily(
        "urbana_circuit_breakers",
        "Circuit breakers by kind (llm: per model; channel: per tenant channel) and state",
        labels=["kind", "state"],
    )
    found = False
    for kind, role in (("llm", "responder"), ("channel", "dispatcher")):
        counts = (f.get(role) or {}).get("breakers")
        if counts is None:
            continue
        found = True
        for state in _BREAKER_STATES:
            family.add_metric([kind, state], counts.get(state, 0))
    if found:
        yield family


def _scheduler(s: Mapping[str, Any] | None) -> Iterable[Metric]:
    if s is None:
        return
    yield _gauge("urbana_scheduler_leading", "1 while this process runs the jobs", s["leading"])
    yield CounterMetricFamily("urbana_scheduler_ticks", "Scheduler ticks", value=s["ticks"])


def _live(live: Mapping[str, Any] | None) -> Iterable[Metric]:
    if live is None:
        return
    yield _gauge("urbana_live_subscribers", "Clients on /v1/stream", live["subscribers"])
    yield _gauge("urbana_live_position", "Newest log position the live feed read", live["position"])
    yield _gauge(
        "urbana_live_following", "1 while the live feed follows the log", live["following"]
    )


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def exposition(state: Callable[[], Mapping[str, Any]]) -> bytes:
    """The text format: the instruments (of every worker, in multiprocess mode), then this
    process's state."""
    if multiprocess_mode():
        shared = CollectorRegistry()
        multiprocess.MultiProcessCollector(shared)  # type: ignore[no-untyped-call]
    else:
        shared = REGISTRY
    own = CollectorRegistry(auto_describe=True)
    own.register(StateCollector(state))
    return generate_latest(shared) + generate_latest(own)


def process_ended() -> None:
    """Let the multiprocess files know this worker is gone (its live gauges stop counting)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

"""OpenTelemetry traces: one trace per inbound message, across every process.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
set. Then `start(role)`, called once per process, installs a tracer provider named
`urbana-<role>` that batches spans to that OTLP/HTTP endpoint (the SDK's own
`OTEL_BSP_*` and `OTEL_EXPORTER_OTLP_*` variables apply). Off, no provider and no
exporter exist, and every helper here returns at its first line.

A trace crosses processes as a W3C `traceparent` (see docs/architecture.md, Traces): the
writer stores the current span's with each event it appends, the relay publishes each
event under a span that continues the stored one and puts that span's in the Kafka
record's headers, and consumers continue it from there. Spans carry ids, event types,
counts, models, tokens and outcomes: never message text, phones, names, or URLs (a
webhook or gateway URL may carry a secret), which is why no library instrumentation is
used.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind as SpanKind
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
Attributes = Mapping[str, str | int | float | bool]
# How long a stopping process waits for its last spans to go out: a collector that does
# not answer must not hold up a shutdown (a container's stop grace is about 10 s).
SHUTDOWN_WAIT_S = 3.0

_provider: TracerProvider | None = None
_tracer: Tracer | None = None
_propagator = TraceContextTextMapPropagator()


def traces_endpoint(environ: Mapping[str, str]) -> str | None:
    """Where spans go (the OTLP/HTTP traces URL), or None: tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if specific := environ.get(TRACES_ENDPOINT, "").strip():
        return specific
    if base := environ.get(ENDPOINT, "").strip():
        return base.rstrip("/") + "/v1/traces"
    return None


def build_provider(role: str, environ: Mapping[str, str]) -> TracerProvider | None:
    """A provider exporting to the environment's endpoint, not installed; None when off."""
    endpoint = traces_endpoint(environ)
    if endpoint is None:
        return None
    # Imported only when tracing is on: a process that does not trace never loads them.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME, when the operator set one, names the process instead.
    name = environ.get("OTEL_SERVICE_NAME") or f"urbana-{role}"
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: name}),
        shutdown_on_exit=False,  # `shutdown`, bounded, does it
    )
    exporter: SpanExporter = OTLPSpanExporter(endpoint=endpoint)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def start(role: str, environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Install this process's tracer provider (once; later calls return the first one).

    None, and nothing installed, when no OTLP endpoint is configured.
    """
    global _provider, _tracer
    if _provider is not None:
        return _provider
    provider = build_provider(role, os.environ if environ is None else environ)
    if provider is None:
        return None
    trace.set_tracer_provider(provider)
    _provider, _tracer = provider, provider.get_tracer("urbana")
    return provider


def shutdown(wait_s: float = SHUTDOWN_WAIT_S) -> None:
    """Export what is buffered and stop, waiting at most `wait_s` (the process ends)."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, None
    if provider is None:
        return
    stopping = threading.Thread(target=provider.shutdown, name="traces-shutdown", daemon=True)
    stopping.start()
    stopping.join(wait_s)
    if stopping.is_alive():
        log.warning(
            "traces: the OTLP endpoint took over %.0f s; the spans still buffered are dropped",
            wait_s,
        )


def enabled() -> bool:
    return _tracer is not None


def current_traceparent() -> str | None:
    """The W3C traceparent of the span in progress (stored with the events appended now)."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def traceparent_of(s: Span) -> str:
    context = s.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def _parent(traceparent: str | None) -> Context | None:
    if not traceparent:
        return None
    return _propagator.extract({"traceparent": traceparent})


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: str | None = None,
    attributes: Attributes | None = None,
    entry: bool = False,
) -> Iterator[Span | None]:
    """A span around the block (a child of `parent`, else of the current span); None off.

    `entry`: the span starts the process's part of a trace (an HTTP request, a consumed
    event), so without a `parent` it starts a new trace. It never continues the current
    context, which may have leaked from the task that scheduled this one (uvicorn reads
    a connection's next request in the previous request's context).
    """
    if _tracer is None:
        yield None
        return
    context = _parent(parent)
    if context is None and entry:
        context = Context()
    # The SDK would record an exception's message, which may name a person: we record
    # its type only.
    with _tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as s:
        try:
            yield s
        except BaseException as exc:
            failed(s, exc)
            raise


@contextmanager
def fan_out(
    name: str,
    parents: Iterable[str | None],
    *,
    kind: SpanKind,
    attributes: Attributes | None = None,
) -> Iterator[dict[str, str]]:
    """One span per distinct parent (a batch of many traces' events), all around the block.

    Yields each parent's span as a traceparent (empty when off). Events without a parent
    get no span: they were written by a process that does not trace.
    """
    if _tracer is None:
        yield {}
        return
    spans = {
        p: _tracer.start_span(name, context=_parent(p), kind=kind, attributes=attributes)
        for p in dict.fromkeys(parents)
        if p
    }
    try:
        yield {p: traceparent_of(s) for p, s in spans.items()}
    except BaseException as exc:
        for s in spans.values():
            failed(s, exc)
        raise
    finally:
        for s in spans.values():
            s.end()


def failed(s: Span | None, exc: BaseException) -> None:
    """Mark the span as failed with the exception's type (its message may name a person)."""
    if s is not None:
        s.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def header(headers: Iterable[tuple[str, bytes]] | None, name: str = "traceparent") -> str | None:
    """A Kafka record header's value as text (None when absent, or when tracing is off)."""
    if _tracer is None or not headers:
        return None
    for key, value in headers:
        if key == name:
            return value.decode("ascii", "replace")
    return None


def note(s: Span | None, **attributes: Any) -> None:
    """Set attributes on a span (nothing when off); None values are left out."""
    if s is None:
        return
    for key, value in attributes.items():
        if value is not None:
            s.set_attribute(f"urbana.{key}", value)


class TracedRequests:
    """ASGI middleware: a server span per HTTP request, named by its route's template.

    The span has the method, the route template and the status, not the path: a path
    may carry a webhook secret or a phone (`/webhooks/evolution/{secret}`, `?phone=`).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if _tracer is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "HTTP"))
        status: list[int] = []

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        with span(
            method, kind=SpanKind.SERVER, attributes={"http.request.method": method}, entry=True
        ) as s:
            assert s is not None
            try:
                await self.app(scope, receive, sending)
            finally:
                template = getattr(scope.get("route"), "path", None)
                if template:
                    s.update_name(f"{method} {template}")
                    s.set_attribute("http.route", str(template))
                if status:
                    s.set_attribute("http.response.status_code", status[0])
                    if status[0] >= 500:
                        s.set_status(Status(StatusCode.ERROR))

"""The JSON log lines: fields, the current span's trace id, what a unit of work binds."""

from __future__ import annotations

import contextvars
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from urbana.adapters import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    sink = io.StringIO()
    logs.configure("relay", stream=sink)
    try:
        yield sink
    finally:
        root.handlers, root.level = saved[0], saved[1]


def lines(sink: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in sink.getvalue().splitlines()]


def test_a_standard_logging_line_is_json_with_the_fields(stream: io.StringIO) -> None:
    logging.getLogger("urbana.test").warning("relay %s lags %d", "main", 3, extra={"lag": 3})
    (line,) = lines(stream)
    assert line["event"] == "relay main lags 3"
    assert line["level"] == "warning"
    assert line["role"] == "relay"
    assert line["logger"] == "urbana.test"
    assert line["lag"] == 3
    assert line["time"].endswith("Z")
    assert "trace_id" not in line  # no span is current


def test_the_current_spans_trace_id_is_on_the_line(stream: io.StringIO) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("webhook") as span:
        logging.getLogger("urbana.test").info("inside")
        expected = format(span.get_span_context().trace_id, "032x")
    logging.getLogger("urbana.test").info("outside")
    inside, outside = lines(stream)
    assert inside["trace_id"] == expected
    assert "trace_id" not in outside


def test_bound_fields_join_the_lines_of_their_unit_of_work(stream: io.StringIO) -> None:
    logs.bind(tenant="ignored")  # no unit of work began: nothing to bind to
    logging.getLogger("urbana.test").info("before")

    def request() -> None:
        logs.begin()
        logs.bind(tenant="t-1")
        logs.get_logger("urbana.test").info("structured", count=2)

    contextvars.copy_context().run(request)  # as each request runs in a context of its own
    before, structured = lines(stream)
    assert "tenant" not in before
    assert structured["tenant"] == "t-1"
    assert structured["count"] == 2
    assert structured["event"] == "structured"
    assert structured["role"] == "relay"


def test_an_exception_is_rendered_inside_the_line(stream: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("urbana.test").exception("failed")
    (line,) = lines(stream)
    assert "RuntimeError: boom" in line["exception"]

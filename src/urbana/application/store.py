"""How events become stored records: orjson payloads, personal fields sealed per subject.

The eventsourcing `Mapper` is the persistence boundary. `PiiMapper` seals the
fields that `urbana.domain.pii` declares personal with the data subject's key
before the transcoder runs, so nothing downstream (store, notification log,
Kafka envelope, backups) sees them in clear. A sealed value is stored as

    "_pii_": {"k": "<subject id>", "f": ["text", ...], "c": "<base64 nonce+ciphertext>"}

and reads back as the original fields, or as `ERASED` once the key is destroyed.

An event appended while a trace is in progress also carries its W3C traceparent,
`"_trace_": "00-<trace id>-<span id>-01"`, so the relay can continue the trace in
another process (see docs/architecture.md, Traces). It is read into the envelope's
`traceparent`, never into the event's data.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from datetime import datetime
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from eventsourcing.utils import get_topic

from urbana.application.ports import SubjectCipher
from urbana.domain.pii import ERASED, pii_spec

PII_KEY = "_pii_"
TRACE_KEY = "_trace_"

# The traceparent of each event of a save, by (stream id, version), when one unit of work
# saves the commands of several requests (the ingest writer's batches); set around the
# save by `UnitOfWork.save`.
EVENT_TRACES: ContextVar[Mapping[tuple[UUID, int], str] | None] = ContextVar(
    "urbana_event_traces", default=None
)


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _tag(value: Any) -> Any:
    """Replace the types JSON lacks with tagged objects, recursively."""
    if type(value) in _PLAIN:  # most values: skip the isinstance chain
        return value
    if isinstance(value, dict):
        return {k: _tag(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tag(v) for v in value]
    if isinstance(value, UUID):
        return {"_type_": "uuid", "_data_": value.hex}
    if isinstance(value, datetime):
        return {"_type_": "datetime", "_data_": value.isoformat()}
    if isinstance(value, Decimal):
        return {"_type_": "decimal", "_data_": str(value)}
    return value


def _untag(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 2 and "_type_" in value and "_data_" in value:
            kind, data = value["_type_"], value["_data_"]
            if kind == "uuid":
                return UUID(data)
            if kind == "datetime":
                return datetime.fromisoformat(data)
            if kind == "decimal":
                return Decimal(data)
        return {k: _untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untag(v) for v in value]
    return value


class OrjsonTranscoder(Transcoder):
    """JSON with orjson; UUID, datetime and Decimal survive the round trip."""

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(_tag(obj))

    def decode(self, data: bytes) -> Any:
        return _untag(orjson.loads(data))


def _subject_of(event_state: dict[str, Any], originator_id: UUID, field: str) -> UUID:
    if field == "originator_id":
        return originator_id
    value = event_state[field]
    return value if isinstance(value, UUID) else UUID(str(value))


def subjects_of(events: Iterable[object]) -> set[UUID]:
    """The data subjects whose keys sealing these events will need."""
    subjects: set[UUID] = set()
    for domain_event in events:
        spec = pii_spec(type(domain_event))
        if spec is not None:
            state = vars(domain_event)
            subjects.add(_subject_of(state, state["originator_id"], spec.subject_field))
    return subjects


class PiiMapper(Mapper[UUID]):
    """A Mapper that seals personal fields with the subject's own key."""

    def __init__(
        self,
        transcoder: Transcoder,
        cipher: SubjectCipher,
        trace: Callable[[], str | None] | None = None,
    ) -> None:
        """`trace` gives the traceparent of the work in progress (None: not traced)."""
        super().__init__(transcoder=transcoder)
        self.subject_cipher = cipher
        self._trace = trace

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        spec = pii_spec(type(domain_event))
        event_state = dict(vars(domain_event))
        originator_id = cast(UUID, event_state.pop("originator_id"))
        originator_version = cast(int, event_state.pop("originator_version"))
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:
            event_state["class_version"] = class_version
        if spec is not None:
            subject = _subject_of(event_state, originator_id, spec.subject_field)
            personal = {f: event_state.pop(f) for f in spec.fields if f in event_state}
            sealed = self.subject_cipher.seal(subject, orjson.dumps(_tag(personal)))
            event_state[PII_KEY] = {
                "k": str(subject),
                "f": list(personal),
                "c": base64.b64encode(sealed).decode("ascii"),
            }
        if self._trace is not None:
            traces = EVENT_TRACES.get()
            trace = traces.get((originator_id, originator_version)) if traces else None
            if trace := trace or self._trace():
                event_state[TRACE_KEY] = trace
        return StoredEvent(
            originator_id=originator_id,
            originator_version=originator_version,
            topic=get_topic(type(domain_event)),
            state=self.transcoder.encode(event_state),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        domain_event = super().to_domain_event(stored_event)
        event_state = vars(domain_event)
        event_state.pop(TRACE_KEY, None)
        sealed = event_state.pop(PII_KEY, None)
        if sealed is not None:
            event_state.update(open_sealed(self.subject_cipher, sealed))
        return domain_event


def open_sealed(
    cipher: SubjectCipher, sealed: dict[str, Any], subject: UUID | None = None
) -> dict[str, Any]:
    """The personal fields of a sealed record, or `ERASED` for each when shredded.

    `subject` is `sealed["k"]` already parsed, when the caller has it."""
    if subject is None:
        subject = UUID(sealed["k"])
    plaintext = cipher.open(subject, base64.b64decode(sealed["c"]))
    if plaintext is None:
        return dict.fromkeys(sealed["f"], ERASED)
    opened = orjson.loads(plaintext)
    if b'"_type_"' not in plaintext:  # no tagged value inside: nothing to untag
        return cast(dict[str, Any], opened)
    return cast(dict[str, Any], _untag(opened))

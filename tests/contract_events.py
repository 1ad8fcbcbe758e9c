"""The events issue 11 adds, as the shared contract names them, recorded on a real store.

The read models handle these events by name (see /work/wt/ISSUE11.md, "Domain events
added by this issue"); the domain and access branches that define their classes are
built in parallel. Until they land, the commands below record them with the contract's
topics and fields, so the read models are tested on real stored records read through
the real notification log:

- Conversation events: an event class with the contract's topic
  (`urbana.domain.conversation:Conversation.<Name>`) and fields, recorded through the
  application's unit of work, which loads the aggregate, seals the personal fields and
  saves. When `Conversation` defines the event itself, that class is used instead.
  Each stand-in changes the aggregate's status and assignee as the contract says, so
  the existing commands (an attendant's reply, return to AI, close) keep working after it.
- Tenant events (queues, canned responses): the same, on the tenant's own stream.
- User events: records appended to the store with the contract's topics
  (`urbana.domain.user:User.<Name>`), the payload as the mapper encodes it.

At merge, the integrator replaces these commands by the domain's own (and checks that
the fields the read models read are the ones the real events carry).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import orjson
from eventsourcing.persistence import StoredEvent

from urbana.adapters.postgres.store import Store
from urbana.domain.conversation import Conversation, Status
from urbana.domain.errors import InvalidTransition
from urbana.domain.events import TenantScoped
from urbana.domain.pii import _SPECS, personal
from urbana.domain.tenant import Tenant


def _assigned(event: Any, conv: Conversation) -> None:
    if conv.status in (Status.AI, Status.WAITING_HUMAN):
        conv.takeovers += 1
    conv.status = Status.HUMAN
    conv.assignee = event.assignee


def _transferred(event: Any, conv: Conversation) -> None:
    conv.status = Status.HUMAN if event.to_user else Status.WAITING_HUMAN
    conv.assignee = event.to_user


def _returned_to_queue(event: Any, conv: Conversation) -> None:
    conv.status = Status.WAITING_HUMAN
    conv.assignee = None


def _nothing(event: Any, conv: Conversation) -> None:
    return None


def _event(
    name: str,
    fields: dict[str, Any],
    apply: Callable[[Any, Any], None],
    aggregate: type[TenantScoped] = Conversation,
) -> Any:
    real = getattr(aggregate, name, None)
    if isinstance(real, type):
        return real
    namespace = {
        "__annotations__": fields,
        "__module__": aggregate.__module__,
        "__qualname__": f"{aggregate.__qualname__}.{name}",
        "apply": apply,
    }
    return type(name, (aggregate.Event,), namespace)


ConversationAssigned = _event(
    "ConversationAssigned",
    {"assignee": "str", "by": "str | None", "queue": "str | None"},
    _assigned,
)
ConversationTransferred = _event(
    "ConversationTransferred",
    {"to_user": "str | None", "to_queue": "str | None", "by": "str", "note_id": "str | None"},
    _transferred,
)
# The contract seals the note's text under the lead's key: the stand-in names the lead.
NoteAdded = _event(
    "NoteAdded", {"lead_id": "UUID", "note_id": "str", "author": "str", "text": "str"}, _nothing
)
LabelsChanged = _event(
    "LabelsChanged", {"added": "list[str]", "removed": "list[str]", "by": "str"}, _nothing
)
ReturnedToQueue = _event(
    "ReturnedToQueue", {"queue": "str | None", "reason": "str"}, _returned_to_queue
)
STAND_IN_NOTE = not hasattr(Conversation, "NoteAdded")


@contextmanager
def _note_text_is_personal() -> Iterator[None]:
    """The stand-in's text sealed as the domain will declare it, only while recording
    (the domain's own declarations are checked against the events its aggregates record)."""
    if not STAND_IN_NOTE:
        yield
        return
    personal("Conversation.NoteAdded", "text", subject="lead_id")
    try:
        yield
    finally:
        _SPECS.pop("Conversation.NoteAdded", None)


def _record(store: Store, conversation_id: UUID, event_class: Any, **fields: Any) -> None:
    store.app._on(Conversation, conversation_id, lambda c: c.trigger_event(event_class, **fields))


def assign(
    store: Store,
    conversation_id: UUID,
    assignee: str,
    *,
    by: str | None = None,
    queue: str | None = None,
) -> None:
    def change(conv: Conversation) -> None:
        if conv.status is Status.CLOSED:
            raise InvalidTransition("conversation is closed")
        if conv.status is Status.HUMAN and conv.assignee == assignee:
            raise InvalidTransition("already assigned to them")
        conv.trigger_event(ConversationAssigned, assignee=assignee, by=by, queue=queue)

    store.app._on(Conversation, conversation_id, change)


def transfer(
    store: Store,
    conversation_id: UUID,
    *,
    by: str,
    to_user: str | None = None,
    to_queue: str | None = None,
    note_id: str | None = None,
) -> None:
    def change(conv: Conversation) -> None:
        if conv.status is not Status.HUMAN:
            raise InvalidTransition("only a conversation an attendant holds is transferred")
        conv.trigger_event(
            ConversationTransferred, to_user=to_user, to_queue=to_queue, by=by, note_id=note_id
        )

    store.app._on(Conversation, conversation_id, change)


def add_note(store: Store, conversation_id: UUID, *, author: str, text: str) -> str:
    note_id = str(uuid4())

    def change(conv: Conversation) -> None:
        conv.trigger_event(
            NoteAdded, lead_id=conv.lead_id, note_id=note_id, author=author, text=text
        )

    with _note_text_is_personal():
        store.app._on(Conversation, conversation_id, change)
    return note_id


def change_labels(
    store: Store, conversation_id: UUID, *, by: str, add: list[str], remove: list[str]
) -> None:
    _record(store, conversation_id, LabelsChanged, added=add, removed=remove, by=by)


def return_to_queue(store: Store, conversation_id: UUID, *, queue: str | None = None) -> None:
    def change(conv: Conversation) -> None:
        if conv.status is not Status.HUMAN:
            raise InvalidTransition("only a conversation an attendant holds goes back")
        conv.trigger_event(ReturnedToQueue, queue=queue, reason="inactivity")

    store.app._on(Conversation, conversation_id, change)


# ------------------------------------------------------------------------ tenant

QueueCreated = _event(
    "QueueCreated", {"queue_id": "str", "name": "str", "intents": "list[str]"}, _nothing, Tenant
)
QueueChanged = _event(
    "QueueChanged",
    {"queue_id": "str", "name": "str", "intents": "list[str]"},
    _nothing,
    Tenant,
)
CannedResponseSaved = _event(
    "CannedResponseSaved", {"shortcut": "str", "text": "str"}, _nothing, Tenant
)
CannedResponseRemoved = _event("CannedResponseRemoved", {"shortcut": "str"}, _nothing, Tenant)


def _on_tenant(store: Store, tenant_id: UUID, event_class: Any, **fields: Any) -> None:
    store.app._on(Tenant, tenant_id, lambda t: t.trigger_event(event_class, **fields))


def create_queue(
    store: Store, tenant_id: UUID, queue_id: str, name: str, intents: list[str]
) -> None:
    _on_tenant(store, tenant_id, QueueCreated, queue_id=queue_id, name=name, intents=intents)


def change_queue(
    store: Store, tenant_id: UUID, queue_id: str, *, name: str, intents: list[str]
) -> None:
    _on_tenant(store, tenant_id, QueueChanged, queue_id=queue_id, name=name, intents=intents)


def save_canned(store: Store, tenant_id: UUID, shortcut: str, text: str) -> None:
    _on_tenant(store, tenant_id, CannedResponseSaved, shortcut=shortcut, text=text)


def remove_canned(store: Store, tenant_id: UUID, shortcut: str) -> None:
    _on_tenant(store, tenant_id, CannedResponseRemoved, shortcut=shortcut)


# ------------------------------------------------------------------------- users

USER_TOPIC = "urbana.domain.user:User.{}"


class Users:
    """User streams appended with the contract's topics (versions counted here)."""

    def __init__(self, store: Store, tenant_id: UUID) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.versions: dict[UUID, int] = {}

    def _append(self, user_id: UUID, event: str, /, **fields: Any) -> None:
        version = self.versions.get(user_id, 0) + 1
        self.versions[user_id] = version
        state = {
            "timestamp": {"_type_": "datetime", "_data_": datetime.now(UTC).isoformat()},
            "tenant_id": {"_type_": "uuid", "_data_": self.tenant_id.hex},
            **fields,
        }
        if version == 1:
            state["originator_topic"] = "urbana.domain.user:User"
        self.store.app.recorder.insert_events(
            [StoredEvent(user_id, version, USER_TOPIC.format(event), orjson.dumps(state))]
        )

    def invite(self, email: str, name: str, role: str) -> UUID:
        user_id = uuid4()
        self._append(
            user_id,
            "UserInvited",
            email=email,
            name=name,
            role=role,
            password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        )
        return user_id

    def role(self, user_id: UUID, role: str, by: UUID) -> None:
        self._append(user_id, "UserRoleChanged", role=role, by=str(by))

    def disable(self, user_id: UUID, by: UUID) -> None:
        self._append(user_id, "UserDisabled", by=str(by))

    def enable(self, user_id: UUID, by: UUID) -> None:
        self._append(user_id, "UserEnabled", by=str(by))

    def availability(self, user_id: UUID, availability: str) -> None:
        self._append(user_id, "AvailabilityChanged", availability=availability)

    def queues(self, user_id: UUID, queues: list[str]) -> None:
        self._append(user_id, "UserQueuesChanged", queues=queues)

"""Every event names its tenant: the base of the aggregates, and the events stored before.

Schema version 2 of an event type added `tenant_id` to its payload, so consumers never
have to look the tenant up (see docs/architecture.md, Events, streams and versions).
The event that starts a Conversation, Lead or MessageRef stream always carried it and
stays at version 1; ChannelRoute's only event too.

Events stored at version 1 are upcast when the mapper reads them (`upcast_v1_v2`). A
Tenant stream's event takes its stream id. Any other event cannot tell its tenant
from its own record, and reads with `tenant_id = None`:

- an aggregate never needs it: it knows its tenant from its stream's first event;
- a whole stream read through the application (`UrbanaApp.stream`) gets it filled in
  from that first event (`with_stream_tenant`);
- the public envelopes of single records are built without the mapper, by the one
  reader of the notification log (`urbana.adapters.postgres.log`), which resolves a
  version 1 record's tenant the same way. That lookup exists only for version 1.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.domain import Aggregate, DomainEvent

TENANT_VERSION = 2


class TenantScoped(Aggregate):
    """An aggregate whose every event records its tenant (`self.tenant_id`)."""

    class Event(Aggregate.Event):
        tenant_id: UUID | None  # None only in a version 1 record read on its own

    if TYPE_CHECKING:  # set by each aggregate's first event
        tenant_id: UUID

    def trigger_event(self, event_class: type[Any], **kwargs: Any) -> None:
        super().trigger_event(event_class, tenant_id=self.tenant_id, **kwargs)


def events_of(aggregate: type[Aggregate]) -> list[type[DomainEvent]]:
    """The event types an aggregate records (not the library's base classes)."""
    return [
        value
        for name, value in vars(aggregate).items()
        if isinstance(value, type)
        and issubclass(value, DomainEvent)
        and name not in ("Event", "Created")
    ]


def tenant_added_in_v2(
    aggregate: type[TenantScoped],
    *,
    first_had_it: bool = True,
    tenant_is_stream: bool = False,
    born_with_it: Collection[str] = (),
) -> None:
    """Mark the events of `aggregate` whose version 2 added `tenant_id`, with their upcaster.

    `first_had_it`: the stream's first event carried it from version 1 and stays as it
    is. `tenant_is_stream`: a version 1 record's tenant is its stream id.
    `born_with_it`: names of event types added after version 2, which carried the
    tenant from their first version and stay at version 1.
    """
    upcast = _tenant_is_stream if tenant_is_stream else _tenant_unknown
    for event_class in events_of(aggregate):
        if first_had_it and issubclass(event_class, Aggregate.Created):
            continue
        if event_class.__name__ in born_with_it:
            continue
        setattr(event_class, "class_version", TENANT_VERSION)  # noqa: B010
        setattr(event_class, "upcast_v1_v2", staticmethod(upcast))  # noqa: B010


def added_in_v3(
    aggregate: type[TenantScoped], upcasts: dict[str, Callable[[dict[str, Any]], None]]
) -> None:
    """Mark events of `aggregate` (by name) whose version 3 added fields, with their upcaster.

    A record stored at version 1 runs `upcast_v1_v2` then `upcast_v2_v3`.
    """
    changed_in(3, aggregate, upcasts)


def changed_in(
    version: int,
    aggregate: type[TenantScoped],
    upcasts: dict[str, Callable[[dict[str, Any]], None]],
) -> None:
    """Mark events of `aggregate` (by name) whose payload changed in `version` (one past
    their current one), with the upcaster from the version before."""
    by_name = {cls.__name__: cls for cls in events_of(aggregate)}
    for name, upcast in upcasts.items():
        event_class = by_name[name]
        assert getattr(event_class, "class_version", 1) == version - 1, name
        setattr(event_class, "class_version", version)  # noqa: B010
        setattr(event_class, f"upcast_v{version - 1}_v{version}", staticmethod(upcast))


def defaults(**values: Any) -> Callable[[dict[str, Any]], None]:
    """An upcaster for a version that added fields: older records read these values."""

    def upcast(state: dict[str, Any]) -> None:
        for name, value in values.items():
            state[name] = copy.copy(value)  # a list default is not shared between records

    return upcast


def ids_were_clear(state: dict[str, Any]) -> None:
    """The version that records provider message ids as keyed digests, not as the gateway
    sent them (a wamid embeds the phone): an older record keeps the id it has, which
    still names its MessageRef stream (see docs/architecture.md, Privacy)."""


def nobody_acted(state: dict[str, Any]) -> None:
    """Version 3 added who acted (`by`); older records were the system's or unknown."""
    state["by"] = None


def _tenant_unknown(state: dict[str, Any]) -> None:
    state["tenant_id"] = None


def _tenant_is_stream(state: dict[str, Any]) -> None:
    state["tenant_id"] = state["originator_id"]


def with_stream_tenant(events: Iterable[Any]) -> list[Any]:
    """One stream's events, oldest first, with version 1 records given its tenant."""
    out: list[Any] = []
    tenant: UUID | None = None
    for item in events:
        if "tenant_id" in vars(item):
            if item.tenant_id is None and tenant is not None:
                item = dataclasses.replace(item, tenant_id=tenant)
            tenant = tenant or item.tenant_id
        out.append(item)
    return out

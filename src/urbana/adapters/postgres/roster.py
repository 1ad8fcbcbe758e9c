"""The `AttendantRoster` port over what exists today: the event table and the conversation view.

There is no users read model yet, so the roster follows the event table itself: which
users each tenant has (`UserInvited`) and when each attendant was last given a
conversation (`ConversationAssigned`, a transfer to them, `HandoffAccepted`), read
incrementally by notification id (an indexed range scan; the first call reads the
history once). Each user's role, availability, queues and whether they are disabled are
read as stored now (`Access.current`, one indexed query per user), and open
conversations are counted on the conversation view. A users read model can replace
this behind the same port.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from urbana.adapters.postgres.faults import store_call
from urbana.adapters.postgres.rows import select_ids
from urbana.adapters.postgres.schema import EVENTS_TABLE
from urbana.adapters.postgres.store import Store
from urbana.application.access import Access
from urbana.domain.attendance import Availability, Candidate
from urbana.domain.conversation import Conversation
from urbana.domain.user import HOLDERS, User
from urbana.projections.base import physical_name
from urbana.projections.conversation_view import ConversationView

_INVITED = get_topic(User.UserInvited)  # type: ignore[attr-defined]
_GIVEN = {
    get_topic(Conversation.ConversationAssigned): "assignee",
    get_topic(Conversation.ConversationTransferred): "to_user",
    get_topic(Conversation.HandoffAccepted): "attendant",  # type: ignore[attr-defined]
}
_CONVERSATIONS = physical_name(ConversationView(), "conversations")
_PAGE = 5_000


class StoreRoster:
    """AttendantRoster (and the tenants to sweep) over the event table and the view."""

    def __init__(self, store: Store, access: Access) -> None:
        self._store = store
        self._access = access
        self._lock = threading.Lock()
        self._seen = 0  # the last notification id read
        self._users: dict[UUID, set[UUID]] = {}  # tenant -> user ids
        self._last_given: dict[tuple[UUID, str], datetime] = {}  # (tenant, user) -> when

    async def candidates(self, tenant_id: UUID) -> list[Candidate]:
        """Every enabled user of the tenant who may hold conversations, with workload."""
        return await asyncio.to_thread(self._candidates, tenant_id)

    async def tenants_holding(self) -> list[UUID]:
        """Tenants with a conversation held by someone (what the inactivity sweep visits)."""
        return await asyncio.to_thread(self._tenants_holding)

    def _candidates(self, tenant_id: UUID) -> list[Candidate]:
        self._catch_up()
        with self._lock:
            user_ids = sorted(self._users.get(tenant_id, ()))
            last = {u: t for (tid, u), t in self._last_given.items() if tid == tenant_id}
        held = self._open_counts(tenant_id)
        out = []
        for user_id in user_ids:
            user = self._access.current(User, user_id)
            # Who may hold conversations; the domain gives one only to those online.
            if user is None or user.disabled or user.role not in HOLDERS:
                continue
            key = str(user_id)
            out.append(
                Candidate(
                    user_id=key,
                    availability=Availability(user.availability.value),
                    queues=frozenset(user.queues),
                    open_count=held.get(key, 0),
                    last_assigned_at=last.get(key),
                )
            )
        return out

    def _catch_up(self) -> None:
        """Read the user and assignment events stored since the last call."""
        topics = [_INVITED, *_GIVEN]
        while True:
            with self._lock:
                after = self._seen
            with store_call("reading the roster's events"), self._store.pool.connection() as c:
                rows = c.execute(
                    "SELECT notification_id, originator_id, originator_version, topic, state "  # noqa: S608
                    f"FROM {EVENTS_TABLE} WHERE notification_id > %s AND topic = ANY(%s) "
                    "ORDER BY notification_id LIMIT %s",
                    (after, topics, _PAGE),
                ).fetchall()
            if not rows:
                return
            mapper = self._store.app.mapper
            with self._lock:
                for notification_id, originator, version, topic, state in rows:
                    event: Any = mapper.to_domain_event(
                        StoredEvent(originator, version, topic, bytes(state))
                    )
                    if topic == _INVITED:
                        self._users.setdefault(event.tenant_id, set()).add(event.originator_id)
                    elif who := getattr(event, _GIVEN[topic], None):
                        tenant = event.tenant_id  # None only in a version 1 HandoffAccepted
                        if tenant is None:
                            tenant = self._store.app.get(Conversation, originator).tenant_id
                        key = (tenant, str(who))
                        prior = self._last_given.get(key)
                        if prior is None or prior < event.timestamp:
                            self._last_given[key] = event.timestamp
                    self._seen = max(self._seen, notification_id)
            if len(rows) < _PAGE:
                return

    def _open_counts(self, tenant_id: UUID) -> dict[str, int]:
        with store_call("counting open conversations"), self._store.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT assignee, count(*) FROM {_CONVERSATIONS} "  # noqa: S608
                "WHERE tenant_id = %s AND status = 'human' AND assignee IS NOT NULL "
                "GROUP BY assignee",
                (str(tenant_id),),
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def _tenants_holding(self) -> list[UUID]:
        return select_ids(
            self._store.pool,
            "listing tenants to sweep",
            f"SELECT DISTINCT tenant_id FROM {_CONVERSATIONS} WHERE status = 'human'",  # noqa: S608
        )

"""The unit of work: load the aggregates a command needs, change them, save them together.

Each command loads what it needs, calls the domain, and saves every aggregate it
changed in one `save()` (one transaction). Inbound batches save many commands in one
unit: the store serialises writers with a table lock, so throughput comes from group
commit (see docs/architecture.md, The event store). Optimistic-concurrency conflicts
(another process appended to the same stream) are retried from a fresh load.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    LRUCache,
    project_aggregate,
)
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Mapper, Transcoder

from urbana.application.ports import StreamIndex, SubjectCipher
from urbana.application.store import EVENT_TRACES, OrjsonTranscoder, PiiMapper, subjects_of
from urbana.domain.errors import InvalidInput, NotFound
from urbana.errors import Unavailable

log = logging.getLogger(__name__)

A = TypeVar("A", bound=Aggregate)
R = TypeVar("R")

CONFLICT_RETRIES = 12
WRITER_CACHE_SIZE = 20_000


def _check_kind(cls: type[A], aggregate_id: UUID, found: Aggregate) -> A:
    if not isinstance(found, cls):
        raise InvalidInput(f"{aggregate_id} is not a {cls.__name__.lower()}")
    return found


def _not_found(cls: type[Aggregate], aggregate_id: UUID) -> NotFound:
    return NotFound(f"no {cls.__name__.lower()} {aggregate_id}")


class UnitOfWork:
    """The aggregates one command (or batch) has loaded or created, saved together.

    With a `cache` (the ingest writer's), aggregates are read from it and brought up
    to date with one query for the whole batch, and mutated in place: a unit that does
    not save cleanly must `forget()` what it loaded, so the next one reads afresh.
    """

    def __init__(self, app: StoreApp, cache: LRUCache[UUID, Aggregate] | None = None) -> None:
        self.app = app
        self.cache = cache
        self.loaded: dict[UUID, Aggregate | None] = {}
        # For `stamp`: what the command in hand reached, and each event's traceparent.
        self._touched: set[UUID] = set()
        self._stamped: dict[UUID, int] = {}
        self._traces: dict[tuple[UUID, int], str] = {}

    def get(self, cls: type[A], aggregate_id: UUID) -> A | None:
        """The aggregate, or None when its stream does not exist."""
        self._touched.add(aggregate_id)
        if aggregate_id not in self.loaded:
            if self.cache is not None and self.app.index is not None:
                self.preload([aggregate_id])
            else:
                try:
                    self.loaded[aggregate_id] = self.app.repository.get(aggregate_id)
                except AggregateNotFoundError:
                    self.loaded[aggregate_id] = None
        found = self.loaded[aggregate_id]
        return None if found is None else _check_kind(cls, aggregate_id, found)

    def require(self, cls: type[A], aggregate_id: UUID) -> A:
        """The aggregate; NotFound when its stream does not exist."""
        found = self.get(cls, aggregate_id)
        if found is None:
            raise _not_found(cls, aggregate_id)
        return found

    def add(self, aggregate: Aggregate) -> None:
        self.loaded[aggregate.id] = aggregate
        self._touched.add(aggregate.id)

    def stamp(self, trace: str | None) -> None:
        """The events the last command recorded were made under `trace` (a traceparent).

        For units that save several requests' commands at once: each event is stored with
        its own request's trace. Only what the command got or added is looked at.
        """
        touched, self._touched = self._touched, set()
        if trace is None:
            for aggregate_id in touched:
                found = self.loaded.get(aggregate_id)
                if found is not None:
                    self._stamped[aggregate_id] = len(found.pending_events)
            return
        for aggregate_id in touched:
            found = self.loaded.get(aggregate_id)
            if found is None:
                continue
            pending = found.pending_events
            for event in pending[self._stamped.get(aggregate_id, 0) :]:
                self._traces[(event.originator_id, event.originator_version)] = trace
            self._stamped[aggregate_id] = len(pending)

    def preload(self, ids: Iterable[UUID]) -> None:
        """Load these streams (absent ones as None) in one query.

        Cached aggregates are fast-forwarded by the events stored since; the others
        are rebuilt from all their events.
        """
        index = self.app.index
        if index is None:
            return
        base: dict[UUID, Aggregate | None] = {}
        for stream_id in ids:
            if stream_id in self.loaded or stream_id in base:
                continue
            try:
                base[stream_id] = self.cache.get(stream_id) if self.cache is not None else None
            except KeyError:
                base[stream_id] = None
        if not base:
            return
        versions = {i: a.version if a is not None else 0 for i, a in base.items()}
        found: dict[UUID, list[Any]] = {}
        for stored in index.stored_after(versions):
            found.setdefault(cast(UUID, stored.originator_id), []).append(
                self.app.mapper.to_domain_event(stored)
            )
        for stream_id, aggregate in base.items():
            self.loaded[stream_id] = project_aggregate(aggregate, found.get(stream_id, ()))

    def save(self) -> None:
        changed = [a for a in self.loaded.values() if a is not None and a.pending_events]
        if changed:
            # One round trip for every data key the batch needs, not one per subject.
            self.app.cipher.prepare(subjects_of(e for a in changed for e in a.pending_events))
            if self._traces:
                token = EVENT_TRACES.set(self._traces)
                try:
                    self.app.save(*changed)
                finally:
                    EVENT_TRACES.reset(token)
            else:
                self.app.save(*changed)
        if self.cache is not None:
            for aggregate in self.loaded.values():
                if aggregate is not None:
                    self.cache.put(aggregate.id, aggregate)

    def forget(self) -> None:
        """Drop what this unit loaded from the cache (after a failed or refused save)."""
        if self.cache is None:
            return
        for aggregate_id in self.loaded:
            with contextlib.suppress(KeyError):
                self.cache.get(aggregate_id, evict=True)


class StoreApp(Application[UUID]):
    """The event-sourced application under every job: persistence and units of work.

    The jobs (tenants, inbound, outbound, AI outcomes, attendants) are mixins of this
    class, composed by `urbana.application.app.UrbanaApp`.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None,
        cipher: SubjectCipher,
        index: StreamIndex | None = None,
        trace: Callable[[], str | None] | None = None,
    ) -> None:
        """`trace` gives the traceparent of the work in progress, stored with its events."""
        self._cipher = cipher
        self.index = index
        self._trace = trace
        super().__init__(env=dict(env) if env is not None else None)
        # Inbound batches keep their aggregates between batches (no copy, one query per
        # batch to catch up); one batch at a time may use them.
        self._writer_cache: LRUCache[UUID, Aggregate] = LRUCache(maxsize=WRITER_CACHE_SIZE)
        self._writer_lock = threading.Lock()

    def construct_transcoder(self) -> Transcoder:
        return OrjsonTranscoder()

    def construct_mapper(self) -> Mapper[UUID]:
        return PiiMapper(
            transcoder=self.construct_transcoder(), cipher=self._cipher, trace=self._trace
        )

    @property
    def cipher(self) -> SubjectCipher:
        return self._cipher

    def get(self, cls: type[A], aggregate_id: UUID) -> A:
        """The aggregate as stored now; NotFound when its stream does not exist."""
        try:
            found: Aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise _not_found(cls, aggregate_id) from None
        return _check_kind(cls, aggregate_id, found)

    def forget_subject(self, stream_ids: Iterable[UUID]) -> None:
        """Drop what this process holds of an erased subject: its lead's and conversations'
        aggregates (their state held plaintext) and its cached data key."""
        ids = list(stream_ids)
        # Two caches of aggregates: the ingest writer's and the repository's (every
        # `get` fills it, AGGREGATE_CACHE_MAXSIZE); both hold decrypted state.
        with self._writer_lock:
            for stream_id in ids:
                with contextlib.suppress(KeyError):
                    self._writer_cache.get(stream_id, evict=True)
        if self.repository.cache is not None:
            for stream_id in ids:
                with contextlib.suppress(KeyError):
                    self.repository.cache.get(stream_id, evict=True)
        self._cipher.forget(ids)

    def _retrying(self, work: Callable[[UnitOfWork], R]) -> R:
        """Run `work` on a fresh unit of work and save it, retrying on conflicts."""
        return self._attempts(lambda: UnitOfWork(self), work)

    def _batch(self, work: Callable[[UnitOfWork], R]) -> R:
        """`_retrying` for inbound batches, on the writer's cache."""
        with self._writer_lock:
            return self._attempts(lambda: UnitOfWork(self, self._writer_cache), work)

    def _attempts(self, unit: Callable[[], UnitOfWork], work: Callable[[UnitOfWork], R]) -> R:
        for attempt in range(1, CONFLICT_RETRIES + 1):
            uow = unit()
            try:
                result = work(uow)
                uow.save()
            except IntegrityError as exc:
                uow.forget()
                if attempt == CONFLICT_RETRIES:
                    # Contention, not an outage: worth a retry, but the store is up.
                    raise Unavailable(f"{attempt} write conflicts in a row") from exc
                log.info("write conflict, retrying (attempt %d)", attempt)
                # Jittered backoff, so two writers racing on one stream stop colliding.
                time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 6)))  # noqa: S311
                continue
            except BaseException:
                uow.forget()
                raise
            return result
        raise AssertionError("unreachable")

    def _on(self, cls: type[A], aggregate_id: UUID, change: Callable[[A], Any]) -> None:
        """Load one aggregate, change it, save it (the shape of most commands)."""

        def work(uow: UnitOfWork) -> None:
            change(uow.require(cls, aggregate_id))

        self._retrying(work)

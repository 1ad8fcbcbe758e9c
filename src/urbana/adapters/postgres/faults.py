"""PostgreSQL's faults as our own: the one place that knows which library errors they are.

Every call into psycopg, psycopg_pool or the eventsourcing recorder runs inside
`store_call`, so what says the store is not answering reaches callers (the store gate,
the workers, the HTTP layer) as `StoreUnavailable`, with the library's error as its
cause. A refused write (`IntegrityError`: another writer appended to the stream) is not
a fault and passes through for the unit of work to retry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import ParamSpec, TypeVar

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError

from urbana.application.ingest import StoreUnavailable

P = ParamSpec("P")
R = TypeVar("R")

# PoolTimeout, QueryCanceled, LockNotAvailable, AdminShutdown and a refused connection
# are all OperationalErrors; the library wraps psycopg's in its own of the same names.
STORE_FAULTS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


@contextmanager
def store_call(doing: str) -> Iterator[None]:
    """Raise a store fault inside the block as `StoreUnavailable`, from it."""
    try:
        yield
    except STORE_FAULTS as exc:
        raise StoreUnavailable(f"{doing}: {type(exc).__name__}: {exc}") from exc


def store_method(method: Callable[P, R]) -> Callable[P, R]:
    """`method` with its store faults raised as `StoreUnavailable`."""

    @wraps(method)
    def mapped(*args: P.args, **kwargs: P.kwargs) -> R:
        with store_call(method.__name__):
            return method(*args, **kwargs)

    return mapped

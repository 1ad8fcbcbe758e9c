"""Child processes of an embedded stack, and the watchdog that outlives a killed parent.

Tansu and Redis are our children, each in its own session (so a terminal Ctrl-C reaches
only us and we stop them in order) with PR_SET_PDEATHSIG, so they get SIGTERM if we die.
PostgreSQL is daemonized by `pg_ctl` (setsid, reparented to init), so PDEATHSIG cannot
reach it: a tiny `sh` watchdog reads a pipe whose only writer is this process; when the
pipe hits EOF without a "done" line (we were SIGKILLed), it fast-stops the postmaster and
kills the children's process groups.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from urbana.adapters.embedded.errors import EmbeddedServiceError

_log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
STOP_TIMEOUT = 10.0
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


class Supervisor:
    """The children a stack started, and the watchdog told about each of them."""

    def __init__(self, startup_timeout: float) -> None:
        self._timeout = startup_timeout
        self._watchdog: subprocess.Popen[bytes] | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def child_pids(self) -> list[int]:
        return [p.pid for p in self.children.values()]

    @property
    def watchdog_pid(self) -> int | None:
        return None if self._watchdog is None else self._watchdog.pid

    # -- the watchdog -------------------------------------------------------------

    def start_watchdog(self, log_path: Path) -> None:
        with open(log_path, "ab") as log:
            # Its own session: a terminal Ctrl-C must not kill it before it is needed.
            self._watchdog = subprocess.Popen(
                ["/bin/sh", "-c", _WATCHDOG_SH],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def tell_watchdog(self, line: str) -> None:
        if self._watchdog is not None and self._watchdog.stdin is not None:
            self._watchdog.stdin.write(line.encode() + b"\n")
            self._watchdog.stdin.flush()

    def stand_down_watchdog(self) -> None:
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

    # -- children -----------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], log_path: Path, cwd: Path | None = None) -> None:
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
        self.children[name] = proc
        self.tell_watchdog(f"group {proc.pid}")

    def start_on_free_port(
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
            self.spawn(name, argv_for(port), log_path)
            proc = self.children[name]
            if _wait_ready(proc, functools.partial(probe, port), self._timeout):
                return port
            died = proc.poll() is not None
            terminate_group(self.children.pop(name), STOP_TIMEOUT)
            last_log = tail(log_path)
            if not died:  # alive but never ready: another port will not help
                break
        raise EmbeddedServiceError(f"{name} did not start; last log lines:\n{last_log}")

    def stop_children(self) -> list[BaseException]:
        """Stop every child (each one even when another fails); the failures."""
        errors: list[BaseException] = []
        for name in list(self.children):
            proc = self.children.pop(name)
            try:
                terminate_group(proc, STOP_TIMEOUT)
            except Exception as exc:  # keep going: the other services must still stop
                errors.append(exc)
        return errors


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


def terminate_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
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


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (orphans may wait long for a reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself contain ")".
    return stat[stat.rindex(")") + 2 :][:1] not in ("Z", "X")

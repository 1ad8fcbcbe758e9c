"""Shared bench helpers: a store on the embedded PostgreSQL, rates, free ports, process
logs and JSON output."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from uuid import uuid4

from urbana.adapters.embedded import EmbeddedStack, ServiceUrls
from urbana.adapters.postgres.schema import ensure_schema
from urbana.adapters.postgres.store import Store, open_store


def median_rate(runs: int, once: Callable[[], tuple[int, float]]) -> dict[str, float]:
    """Run `once` (returning (items, seconds)) `runs` times; median items/s and spread."""
    rates = []
    for _ in range(runs):
        items, seconds = once()
        rates.append(items / seconds)
    return {
        "median_per_s": round(statistics.median(rates), 1),
        "min_per_s": round(min(rates), 1),
        "max_per_s": round(max(rates), 1),
        "runs": runs,
    }


def emit(result: dict[str, Any]) -> None:
    """The last line of a bench's output is one JSON object."""
    sys.stdout.write(json.dumps(result) + "\n")


def api_env(urls: ServiceUrls, schema: str, master_key: bytes, data_dir: str) -> dict[str, str]:
    """The environment of an `urbana serve` a bench starts on its embedded services
    (no broker: the routes it drives do not publish)."""
    return {
        **os.environ,
        "URBANA_DATABASE_URL": urls.postgres,
        "URBANA_DATABASE_SCHEMA": schema,
        "URBANA_REDIS_URL": urls.redis,
        "URBANA_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "URBANA_MASTER_KEY": base64.urlsafe_b64encode(master_key).decode(),
        "URBANA_DATA_DIR": data_dir,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_sink(name: str) -> IO[str] | int:
    """Where a spawned process's stderr goes: BENCH_LOG_DIR/NAME.log when that is set."""
    log_dir = os.environ.get("BENCH_LOG_DIR")
    if not log_dir:
        return subprocess.DEVNULL
    return open(Path(log_dir) / f"{name}.log", "w")


@contextlib.contextmanager
def embedded_store() -> Iterator[Store]:
    """A store on a fresh schema of the embedded PostgreSQL (or URBANA_DATABASE_URL).

    Only PostgreSQL is started: the broker and cache addresses are placeholders.
    """
    with tempfile.TemporaryDirectory(prefix="urbana-bench-") as tmp:
        stack = EmbeddedStack(
            Path(tmp),
            postgres_url=os.environ.get("URBANA_DATABASE_URL"),
            kafka_bootstrap="unused:0",
            redis_url="redis://unused:0/0",
        )
        with stack:
            urls = stack.start()
            schema = f"bench_{uuid4().hex[:8]}"
            ensure_schema(urls.postgres, schema)
            store = open_store(urls.postgres, os.urandom(32), schema=schema, pool_size=2)
            try:
                yield store
            finally:
                store.close()

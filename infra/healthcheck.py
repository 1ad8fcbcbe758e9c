"""Container healthchecks of the Urbana image (infra/compose.yaml).

    python infra/healthcheck.py api      # this container's API answers /readyz with 200
    python infra/healthcheck.py worker   # this worker still reaches its services

Workers serve no HTTP, so their check is what they need to work: PostgreSQL answers
`SELECT 1`, Redis answers PING, a Kafka bootstrap server accepts a connection (each one
configured: URBANA_DATABASE_URL, URBANA_REDIS_URL, URBANA_KAFKA_BOOTSTRAP). Exit 0 when
healthy, 1 with the reason on stderr otherwise.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 3.0


def api() -> str | None:
    """None when /readyz answers 200, else what it said."""
    port = os.environ.get("URBANA_PORT", "8000")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=TIMEOUT_S):
            return None
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", "")
        except ValueError:
            detail = ""
        return f"/readyz answered {exc.code} {detail}".strip()
    except OSError as exc:
        return f"/readyz: {exc}"


def worker() -> str | None:
    """None when every configured service answers, else the first that did not."""
    import psycopg
    import redis

    database = os.environ.get("URBANA_DATABASE_URL")
    if database:
        try:
            with psycopg.connect(database, connect_timeout=int(TIMEOUT_S)) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return f"postgres: {exc}"
    cache = os.environ.get("URBANA_REDIS_URL")
    if cache:
        client = redis.Redis.from_url(cache, socket_timeout=TIMEOUT_S)
        try:
            client.ping()
        except redis.RedisError as exc:
            return f"redis: {exc}"
        finally:
            client.close()
    bootstrap = os.environ.get("URBANA_KAFKA_BOOTSTRAP")
    if bootstrap:
        return _kafka(bootstrap)
    return None


def _kafka(bootstrap: str) -> str | None:
    errors = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=TIMEOUT_S):
                return None
        except (OSError, ValueError) as exc:
            errors.append(f"{server}: {exc}")
    return "kafka: " + "; ".join(errors)


def main(argv: list[str]) -> int:
    checks = {"api": api, "worker": worker}
    if len(argv) != 1 or argv[0] not in checks:
        print("usage: healthcheck.py api|worker", file=sys.stderr)
        return 2
    problem = checks[argv[0]]()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

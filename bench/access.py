"""What checking a credential costs per request, against the bare query it is built on.

    python bench/access.py [--quick]

On the embedded PostgreSQL (or URBANA_DATABASE_URL), with N users of one tenant, each
with a few events (invited, role changed, online), measures the latency of:
- `warm`: `Access.user_principal` for a user this process has read before (one query
  for the events after the version it holds; none);
- `cold`: the same in a fresh process cache (the user's stream read and decrypted);
- `api_key`: `Access.api_key_principal` warm (the same query, plus a SHA-256);
- `baseline`: that query alone, run bare on the same pool;
- `login`: one login with argon2id at the library's parameters (the CPU cost).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from uuid import UUID, uuid4

sys.path.insert(0, str(Path(__file__).parent))
from argon2 import PasswordHasher

from _common import embedded_store, emit
from urbana.adapters.passwords import Argon2Hasher
from urbana.adapters.postgres.schema import EVENTS_TABLE
from urbana.adapters.postgres.store import Store
from urbana.application.access import Access
from urbana.domain.user import Availability, Role

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # to make the users quickly


def latencies(n: int, once: Callable[[int], object]) -> dict[str, float]:
    taken = []
    for i in range(n):
        start = time.perf_counter()
        once(i)
        taken.append((time.perf_counter() - start) * 1000)
    taken.sort()
    return {
        "p50_ms": round(statistics.median(taken), 3),
        "p99_ms": round(taken[int(len(taken) * 0.99) - 1], 3),
        "n": n,
    }


def populate(store: Store, users: int) -> tuple[UUID, list[UUID]]:
    tenant_id, _ = store.app.register_tenant(f"Bench {uuid4().hex[:8]}")
    access = Access(store.app, Argon2Hasher(FAST))
    ids = []
    for _ in range(users):
        user_id, _ = access.add_user(
            tenant_id, email=f"{uuid4().hex}@example.com", role=Role.ATTENDANT, password="x" * 12
        )
        store.app.update_user(tenant_id, user_id, by=None, role=Role.SUPERVISOR)
        store.app.set_availability(tenant_id, user_id, Availability.ONLINE)
        ids.append(user_id)
    return tenant_id, ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    users = 200 if args.quick else 1000
    with embedded_store() as store:
        tenant_id, ids = populate(store, users)
        warm = Access(store.app, Argon2Hasher())
        for user_id in ids:
            warm.user_principal(user_id, tenant_id)
        key = warm.create_api_key(tenant_id, role=Role.ANALYST, by=None)
        warm.api_key_principal(key.token)
        table = f'"{store.schema}".{EVENTS_TABLE}'

        def bare(i: int) -> None:
            with store.pool.connection() as conn:
                conn.execute(
                    f"SELECT originator_version, topic, state FROM {table} "  # noqa: S608
                    "WHERE originator_id = %s AND originator_version > %s",
                    (ids[i % users], 3),
                ).fetchall()

        baseline = latencies(users * 3, bare)
        results = {
            "warm": latencies(users * 3, lambda i: warm.user_principal(ids[i % users], tenant_id)),
            "cold": latencies(
                users,
                lambda i: Access(store.app, Argon2Hasher()).user_principal(ids[i], tenant_id),
            ),
            "api_key": latencies(users * 3, lambda i: warm.api_key_principal(key.token)),
        }
        password_hash = Argon2Hasher().hash("correct horse battery")
        login = latencies(10, lambda i: Argon2Hasher().verify(password_hash, "wrong"))
    emit(
        {
            "bench": "access",
            "unit": "ms per credential check",
            "users": users,
            "events_per_user": 3,
            "baseline_bare_query": baseline,
            **results,
            "argon2_verify": login,
            "ratio_warm_vs_bare_p50": round(results["warm"]["p50_ms"] / baseline["p50_ms"], 2),
        }
    )


if __name__ == "__main__":
    main()

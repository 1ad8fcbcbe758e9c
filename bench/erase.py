"""What erasing one data subject costs, against the bare key delete it is built on.

    python bench/erase.py [--quick]

On the embedded PostgreSQL and Redis (or URBANA_DATABASE_URL / URBANA_REDIS_URL), with
N subjects of one tenant, each with a conversation of a few messages and an AI answer,
projected into the read models by a replay, measures the latency of:
- `erase`: `Erasure.erase` end to end (load the lead, find its conversations, destroy
  the key, append `SubjectErased`, delete its read-model rows and Redis keys, forget it);
- `again`: erasing an erased subject (nothing destroyed or appended);
- `baseline`: the bare `DELETE FROM urbana_subject_keys` of one key, on the same pool.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

sys.path.insert(0, str(Path(__file__).parent))
import redis.asyncio as aioredis

from _common import emit
from urbana.adapters.embedded import EmbeddedStack
from urbana.adapters.postgres.erasure import PostgresSubjectRows
from urbana.adapters.postgres.replay import replay
from urbana.adapters.postgres.schema import ensure_schema
from urbana.adapters.postgres.store import Store, open_store
from urbana.adapters.redis_erasure import RedisSubjectCache
from urbana.application.app import AIOutcome, ReceiveMessage
from urbana.application.channels import InboundMessage
from urbana.application.erasure import Erasure
from urbana.application.ports import SystemClock

MESSAGES = 4  # inbound messages per subject, plus one AI answer


def summary(taken: list[float]) -> dict[str, float]:
    taken = sorted(taken)
    return {
        "p50_ms": round(statistics.median(taken), 3),
        "p99_ms": round(taken[max(0, int(len(taken) * 0.99) - 1)], 3),
        "n": len(taken),
    }


def populate(store: Store, subjects: int) -> tuple[UUID, list[UUID]]:
    tenant_id, _ = store.app.register_tenant(f"Bench {uuid4().hex[:8]}")
    leads = []
    for i in range(subjects):
        phone = f"55119{i:08d}"
        commands = [
            ReceiveMessage(
                tenant_id,
                "cloud",
                InboundMessage(
                    provider_message_id=f"wamid.{uuid4().hex}",
                    contact=phone,
                    phone=phone,
                    sent_at=datetime.now(UTC),
                    kind="text",
                    text=f"mensagem {n} do cliente {i}",
                    contact_name=f"Cliente {i}",
                ),
            )
            for n in range(MESSAGES)
        ]
        got = store.app.receive_messages(commands)[-1]
        assert not isinstance(got, Exception)
        store.app.apply_ai_outcome(
            got.conversation_id,
            AIOutcome(MESSAGES, "Olá!", "faq", 0.9, {"tokens_in": 1, "tokens_out": 1}),
        )
        leads.append(got.lead_id)
    return tenant_id, leads


async def measure(
    store: Store, redis_url: str, tenant_id: UUID, leads: list[UUID]
) -> dict[str, dict[str, float]]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        erasure = Erasure(
            store.app, PostgresSubjectRows(store.pool), RedisSubjectCache(client), SystemClock()
        )
        first, again = [], []
        for lead_id in leads:
            start = time.perf_counter()
            receipt = await erasure.erase(tenant_id, lead_id, "subject_request")
            first.append((time.perf_counter() - start) * 1000)
            assert receipt.removed["data_keys"] == 1
        for lead_id in leads:
            start = time.perf_counter()
            await erasure.erase(tenant_id, lead_id, "subject_request")
            again.append((time.perf_counter() - start) * 1000)
    finally:
        await client.aclose()
    return {"erase": summary(first), "again": summary(again)}


def baseline(store: Store, n: int) -> dict[str, float]:
    subjects = [uuid4() for _ in range(n)]
    store.cipher.prepare(subjects)
    taken = []
    for subject in subjects:
        start = time.perf_counter()
        with store.pool.connection() as conn:
            conn.execute("DELETE FROM urbana_subject_keys WHERE subject_id = %s", (subject,))
        taken.append((time.perf_counter() - start) * 1000)
    return summary(taken)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    subjects = 50 if args.quick else 300
    with tempfile.TemporaryDirectory(prefix="urbana-bench-") as tmp:
        stack = EmbeddedStack(
            Path(tmp),
            postgres_url=os.environ.get("URBANA_DATABASE_URL"),
            kafka_bootstrap="unused:0",
            redis_url=os.environ.get("URBANA_REDIS_URL"),
        )
        with stack:
            urls = stack.start()
            schema = f"bench_{uuid4().hex[:8]}"
            ensure_schema(urls.postgres, schema)
            store = open_store(urls.postgres, os.urandom(32), schema=schema, pool_size=2)
            try:
                tenant_id, leads = populate(store, subjects)
                replay(urls.postgres, schema)
                bare = baseline(store, subjects)
                results = asyncio.run(measure(store, urls.redis, tenant_id, leads))
            finally:
                store.close()
    emit(
        {
            "bench": "erase",
            "unit": "ms per subject",
            "subjects": subjects,
            "messages_per_subject": MESSAGES + 1,
            "baseline_bare_key_delete": bare,
            **results,
            "ratio_erase_vs_bare_p50": round(results["erase"]["p50_ms"] / bare["p50_ms"], 2),
        }
    )


if __name__ == "__main__":
    main()

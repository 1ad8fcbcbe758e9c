"""The capacity and live-update benches run end to end in a tiny configuration and print their JSON.

What they measure is not asserted (a loaded machine makes any figure flaky); that each
one starts its topology, drives it and reports every figure it promises is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_bench(name: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BENCH / name), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_ttfr_reports_cpu_per_conversation_the_question_mix_and_capacity() -> None:
    result = run_bench("ttfr.py", "--quick", "--rate", "2", "--ladder", "1", "--step-seconds", "2")
    assert result["conversations"] == 6
    assert result["cpu_ms_per_conversation"] > 0
    assert "worker responder" in result["cpu_ms_per_conversation_by_process"]
    assert result["questions"]["distinct_pool"] == 300
    cache = result["query_vector_cache"]
    # A lookup a burst (a burst retried after a transient fault looks up again).
    assert cache["hits"] + cache["misses"] >= result["conversations"]
    assert cache["hit_rate"] == round(cache["hits"] / (cache["hits"] + cache["misses"]), 3)
    assert [s["rate_per_s"] for s in result["capacity"]["steps"]] == [1.0]


def test_memory_reports_the_dev_stack_and_every_role_alone() -> None:
    result = run_bench("memory.py", "--quick")
    assert result["dev"]["rss_mb"] > result["baseline_bare_interpreter"]["rss_mb"]
    assert {"serve", "worker relay", "worker scheduler"} <= set(result["roles"])
    assert all(role["rss_mb"] > 0 for role in result["roles"].values())


def test_capacity_models_a_target_load_from_measured_costs() -> None:
    result = run_bench(
        "capacity.py", "--quick", "--rate", "2", "--messages-per-s", "50", "--append-n", "50"
    )
    model = result["model"]
    assert model["target"] == {"messages_per_s": 50.0, "tenants": 5000}
    assert model["roles"]["serve"]["processes"] >= 1
    assert model["kafka_partitions"]["suggested"] >= model["kafka_partitions"]["events_topic_min"]
    assert model["event_store"]["postgres_servers"] >= 1
    assert set(result["projections_cpu_per_event"]) >= {"conversation_view"}


def test_sse_delivers_every_round_to_every_http_client_and_reports_a_baseline() -> None:
    result = run_bench("sse.py", "--quick", "--clients", "20")
    assert result["clients"] == 20
    assert result["delivery_store_to_sse_client"]["n"] == 20 * result["rounds"]
    assert result["baseline_store_to_notify"]["n"] == result["rounds"]
    assert result["delivery_store_to_sse_client"]["p50_ms"] > 0

"""Idle memory of the engine: `urbana dev` (all its processes) and each production role.

    python bench/memory.py [--quick] [--settle 10]

- `urbana dev`: the whole embedded stack (PostgreSQL, the Kafka-protocol broker, Redis,
  the API and every background role), started on a fresh data directory and left idle
  for `--settle` seconds; then the resident memory of every process of it.
- each production role alone (`urbana serve` and `urbana worker --role R` for every
  role), as infra/compose.yaml runs them, against embedded servers started once: its own
  process tree's memory, idle after `--settle` seconds.
Baseline in the same run: a bare interpreter of the same virtualenv (`python -c`), the
floor every process of the engine starts from. RSS counts pages shared between
processes (libraries, PostgreSQL's shared buffers) in each of them, so its sum is an
upper bound; PSS splits shared pages between their users, so its sum is what the stack
takes. Goal (issue #15): <= 600 MB for the whole embedded stack.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, free_port, log_sink
from _procs import label, topology
from urbana.adapters.embedded import EmbeddedStack
from urbana.adapters.kafka.topics import init_topics
from urbana.adapters.runtime import ROLES

GOAL_MB = 600


def urbana(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("urbana")), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log_sink("memory-" + "-".join(args[:3])),
        text=True,
    )


def wait_line(proc: subprocess.Popen[str], prefix: str) -> None:
    """Read the process's stdout up to a line starting with `prefix` (it is up)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip().startswith(prefix):
            return
    raise RuntimeError(f"{proc.args!r} exited before printing {prefix!r}")


def wait_http(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 600  # a loaded 2-core box imports slowly
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited")
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    finally:
        if proc.stdout is not None:
            proc.stdout.close()


def measure(processes: list[psutil.Process]) -> dict[str, Any]:
    """RSS and PSS in MB, in total and by process label."""
    rss: dict[str, float] = {}
    pss: dict[str, float] = {}
    for proc in processes:
        try:
            info = proc.memory_full_info()
            name = label(proc)
        except psutil.Error:
            continue
        rss[name] = rss.get(name, 0.0) + info.rss / 2**20
        pss[name] = pss.get(name, 0.0) + info.pss / 2**20
    return {
        "rss_mb": round(sum(rss.values()), 1),
        "pss_mb": round(sum(pss.values()), 1),
        "processes": len(processes),
        "by_process_rss_mb": {k: round(v, 1) for k, v in sorted(rss.items(), key=lambda x: -x[1])},
        "by_process_pss_mb": {k: round(v, 1) for k, v in sorted(pss.items(), key=lambda x: -x[1])},
    }


def tree(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    root = psutil.Process(proc.pid)
    return [root, *root.children(recursive=True)]


def bare_interpreter(settle: float) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({settle + 5})"])
    try:
        time.sleep(min(settle, 2.0))
        return measure([psutil.Process(proc.pid)])
    finally:
        proc.kill()
        proc.wait()


def dev_stack(settle: float, base_env: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="urbana-memory-dev-") as tmp:
        env = {**base_env, "URBANA_DATA_DIR": tmp}
        port = free_port()
        proc = urbana(["dev", "--data-dir", tmp, "--port", str(port)], env)
        try:
            wait_line(proc, "ready")
            time.sleep(settle)
            return measure(topology(tmp))
        finally:
            stop(proc)


def roles_alone(settle: float, base_env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="urbana-memory-roles-") as tmp:
        stack = EmbeddedStack(Path(tmp) / "services")
        urls = stack.start()
        try:
            asyncio.run(init_topics(urls.kafka, None))
            out["embedded_servers"] = measure(topology(tmp))
            env = {
                **base_env,
                "URBANA_DATA_DIR": tmp,
                "URBANA_DATABASE_URL": urls.postgres,
                "URBANA_KAFKA_BOOTSTRAP": urls.kafka,
                "URBANA_REDIS_URL": urls.redis,
            }
            port = free_port()
            serve = urbana(["serve", "--port", str(port)], env)
            try:
                wait_http(f"http://127.0.0.1:{port}/healthz", serve)
                time.sleep(settle)
                out["serve"] = measure(tree(serve))
            finally:
                stop(serve)
            for role in ROLES:
                worker = urbana(["worker", "--role", role], env)
                try:
                    wait_line(worker, "worker:")
                    time.sleep(settle)
                    out[f"worker {role}"] = measure(tree(worker))
                finally:
                    stop(worker)
        finally:
            stack.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--settle", type=float, default=10.0, help="idle seconds before")
    args = parser.parse_args()
    settle = 2.0 if args.quick else args.settle
    master = base64.urlsafe_b64encode(os.urandom(32)).decode()
    env = {**os.environ, "URBANA_MASTER_KEY": master, "URBANA_OPENAI_API_KEY": "sk-bench"}
    baseline = bare_interpreter(settle)
    dev = dev_stack(settle, env)
    roles = roles_alone(settle, env)
    emit(
        {
            "bench": "memory",
            "settle_s": settle,
            "dev": dev,
            "roles": {k: v for k, v in roles.items() if k != "embedded_servers"},
            "roles_rss_mb": {k: v["rss_mb"] for k, v in roles.items()},
            "baseline_bare_interpreter": baseline,
            "dev_rss_vs_goal": round(dev["rss_mb"] / GOAL_MB, 2),
            "dev_pss_vs_goal": round(dev["pss_mb"] / GOAL_MB, 2),
            "goal_mb": GOAL_MB,
        }
    )


if __name__ == "__main__":
    main()

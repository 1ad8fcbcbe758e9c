"""`urbana dev` as a user runs it: services up, API ready, Ctrl-C leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from urbana.adapters.kafka.topics import load_topics, partition_counts

pytestmark = pytest.mark.e2e

URBANA = str(Path(sys.executable).with_name("urbana"))


def _start(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], list[str]]:
    # What dev logs goes to a file beside the data directory, to say why it did not start.
    log = data_dir.with_name(f"{data_dir.name}-dev.log")
    with log.open("a") as err:
        proc = subprocess.Popen(
            [URBANA, "dev", "--data-dir", str(data_dir), "--port", "0", *extra],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.strip() == "ready":
            return proc, lines
    proc.kill()
    code = proc.wait()
    proc.stdout.close()
    logged = log.read_text(errors="replace").splitlines()[-40:]
    raise AssertionError(
        f"urbana dev did not get ready (exit {code}): {lines}\n" + "\n".join(logged)
    )


def _stop(proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGINT) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.stdout is not None:
            proc.stdout.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _descendants(pid: int) -> set[int]:
    """All processes whose parent chain or session leads back to `pid`'s data dir."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            ppid = int(stat.split(")")[-1].split()[1])
            if ppid == pid:
                found.add(int(entry.name))
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_dev_prints_services_serves_health_and_stops_cleanly(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    data_dir = tmp_path / "data"
    proc, lines = _start(data_dir)
    try:
        keys = [line.split(":", 1)[0] for line in lines if ": " in line]
        assert keys[-4:] == ["postgres", "kafka", "redis", "api"]
        services = json.loads((data_dir / "services.json").read_text())
        assert set(services) == {"postgres", "kafka", "redis", "api"}
        assert f"api: {services['api']}" in lines
        assert httpx.get(services["api"] + "/healthz").json() == {"status": "ok"}
        ready = httpx.get(services["api"] + "/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"postgres": "ok", "kafka": "ok", "redis": "ok"}
        # The topics are there as topics.yaml shapes them (not auto-created by a client).
        counts = asyncio.run(partition_counts(services["kafka"]))
        assert {t.name: counts.get(t.name) for t in load_topics()} == {
            t.name: t.partitions for t in load_topics()
        }
        pg_pid = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
        children = _descendants(proc.pid) | {pg_pid}
        assert all(_alive(p) for p in children)
    finally:
        code = _stop(proc, stop_signal)
    assert code in (0, 130, -stop_signal)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in children):
        time.sleep(0.1)
    assert not [p for p in children if _alive(p)]
    assert not (data_dir / "services.json").exists()


def test_dev_keeps_data_across_restarts_and_reset_wipes_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc, _ = _start(data_dir)
    try:
        created = subprocess.run(
            [URBANA, "tenant", "create", "Loja Persistente", "--data-dir", str(data_dir), "--json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        tenant_id = json.loads(created.stdout)["tenant_id"]
    finally:
        _stop(proc)
    proc, _ = _start(data_dir)
    try:
        again = subprocess.run(
            [URBANA, "tenant", "create", "Loja Persistente", "--data-dir", str(data_dir), "--json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert json.loads(again.stdout) == {"tenant_id": tenant_id, "created": False}
    finally:
        _stop(proc)
    proc, _ = _start(data_dir, "--reset")
    try:
        fresh = subprocess.run(
            [URBANA, "tenant", "create", "Loja Persistente", "--data-dir", str(data_dir), "--json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert json.loads(fresh.stdout)["created"] is True
    finally:
        _stop(proc)


def test_dev_with_a_broker_url_that_does_not_answer_says_so_and_exits_1(
    tmp_path: Path,
) -> None:
    unused_port = free_port()  # nothing listens there
    result = subprocess.run(
        [URBANA, "dev", "--data-dir", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "URBANA_KAFKA_BOOTSTRAP": f"127.0.0.1:{unused_port}"},
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"error: creating topics on 127.0.0.1:{unused_port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "ready" not in result.stdout
    assert not (tmp_path / "services.json").exists()


def test_demo_runs_end_to_end() -> None:
    result = subprocess.run(
        [URBANA, "demo"], capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert '"duplicates":1' in out  # the redelivered webhook appended nothing
    assert "HandoffRequested" in out
    assert "ReturnedToAI" in out
    # The AI answered Maria twice through the console (once at her number without the
    # ninth digit: replies go to the address the gateway last used).
    assert out.count("-> 5511988887777:") + out.count("-> 551188887777:") >= 2
    assert "Read model: lead pipeline" in out
    assert "demo finished" in out

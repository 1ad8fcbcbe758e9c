"""`urbana jobs` and the scheduler role as an operator runs them: subprocesses on the
installation's database."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from tests.integration.test_jobs import lead_of, warm_conversation
from urbana.adapters.postgres.replay import replay
from urbana.adapters.postgres.store import Store
from urbana.domain.conversation import Conversation, Status

pytestmark = pytest.mark.e2e

URBANA = str(Path(sys.executable).with_name("urbana"))


@pytest.fixture
def env(store: Store, master_key: bytes, tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("URBANA_")},
        "URBANA_DATABASE_URL": store.url,
        "URBANA_DATABASE_SCHEMA": store.schema or "",
        "URBANA_MASTER_KEY": base64.urlsafe_b64encode(master_key).decode(),
        "URBANA_DATA_DIR": str(tmp_path / "data"),
        "URBANA_SCHEDULER_TAKEOVER_S": "0.5",
        "URBANA_SCHEDULER_TICK_S": "1",
    }


def urbana(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([URBANA, *args], env=env, capture_output=True, text=True, timeout=120)


def test_jobs_list_names_every_job_with_its_schedule(env: dict[str, str]) -> None:
    done = urbana(env, "jobs", "list", "--json")
    assert done.returncode == 0, done.stderr
    jobs = {j["name"]: j["schedule"] for j in json.loads(done.stdout)["jobs"]}
    assert jobs == {
        "decay-scores": "0 * * * *",
        "close-stale": "30 3 * * *",
        "follow-up": "*/15 * * * *",
        "retention": "0 4 * * *",
    }


def test_jobs_run_dry_run_counts_then_a_run_changes_once(store: Store, env: dict[str, str]) -> None:
    app = store.app
    tid, _ = app.register_tenant(f"Jobs {uuid4().hex[:8]}")
    cid = warm_conversation(app, tid, datetime.now(UTC) - timedelta(hours=30))
    replay(store.url, store.schema)

    def run(*extra: str) -> dict[str, object]:
        done = urbana(env, "jobs", "run", "decay-scores", "--tenant", str(tid), "--json", *extra)
        assert done.returncode == 0, done.stderr
        (report,) = json.loads(done.stdout)["runs"]
        assert isinstance(report, dict)
        return report

    assert run("--dry-run") == {
        "job": "decay-scores",
        "tenant_id": str(tid),
        "dry_run": True,
        "examined": 1,
        "changed": 1,
    }
    assert lead_of(app, cid).score == 50
    assert run()["changed"] == 1
    assert lead_of(app, cid).score == 40
    assert run()["changed"] == 0  # the same silence: nothing more
    unknown = urbana(env, "jobs", "run", "nope")
    assert unknown.returncode == 2
    assert "unknown job" in unknown.stderr


class Worker:
    """`urbana worker --role scheduler`, its log read as it comes."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [URBANA, "worker", "--role", "scheduler"],
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        assert self.proc.stderr is not None
        self.reader = threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True)
        self.reader.start()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.reader.join(timeout=10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def wait_for(check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture
def workers(env: dict[str, str]) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.close()


def test_one_scheduler_runs_the_jobs_and_the_other_takes_over_when_it_dies(
    store: Store, env: dict[str, str], workers: list[Worker]
) -> None:
    app = store.app
    tid, _ = app.register_tenant(f"Leader {uuid4().hex[:8]}")
    app.change_settings(tid, stale_after_days=1)
    stale = warm_conversation(app, tid, datetime.now(UTC))
    replay(store.url, store.schema)

    first = Worker(env)
    workers.append(first)
    wait_for(lambda: first.said("scheduler leads"))
    second = Worker(env)
    workers.append(second)
    # The first leads: it ran each job once for the tenant (nothing was due to change).
    wait_for(lambda: first.said(f"job close-stale for tenant {tid}"))
    time.sleep(2)  # a few of the second's polls
    assert not second.said("scheduler leads")

    first.proc.kill()  # dies without a word: its session (and lock) end with it
    first.proc.wait(timeout=30)
    wait_for(lambda: second.said("scheduler leads"), timeout=30)
    assert app.get(Conversation, stale).status is not Status.CLOSED
    # The period the first one ran is not run again by the second.
    time.sleep(2)
    assert not second.said(f"job close-stale for tenant {tid}")
    assert second.proc.poll() is None

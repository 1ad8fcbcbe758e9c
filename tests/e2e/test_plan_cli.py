"""`urbana tenant set-plan` run as an operator runs it (a subprocess on the installation's
database); the API shows the plan it set."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.access_helpers import team
from tests.e2e.conftest import Api, start_api, stop_api
from urbana.adapters.embedded import ServiceUrls
from urbana.domain.plans import Plan
from urbana.domain.tenant import Tenant
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

URBANA = str(Path(sys.executable).with_name("urbana"))


@pytest.fixture(scope="module")
def installation(
    services: ServiceUrls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Api, dict[str, str], Path]]:
    schema, master_key = f"plan_{uuid4().hex[:10]}", os.urandom(32)
    api = start_api(services, schema, master_key)
    workdir = tmp_path_factory.mktemp("plan-cli")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("URBANA_")},
        "URBANA_DATABASE_URL": services.postgres,
        "URBANA_DATABASE_SCHEMA": schema,
        "URBANA_MASTER_KEY": base64.urlsafe_b64encode(master_key).decode(),
        "URBANA_DATA_DIR": str(workdir / "data"),
    }
    try:
        yield api, env, workdir
    finally:
        stop_api(api)


def test_the_operator_sets_a_plan_and_the_tenant_admin_reads_it(
    installation: tuple[Api, dict[str, str], Path],
) -> None:
    api, env, workdir = installation
    crew = team(api)
    tid = str(crew.tenant_id)

    def urbana(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [URBANA, *args], env=env, cwd=workdir, capture_output=True, text=True, timeout=120
        )

    done = urbana("tenant", "set-plan", tid, "custom", "--limit", "3", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"tenant_id": tid, "plan": "custom", "lead_limit": 3}
    plan = httpx.get(f"{api.url}/v1/settings", headers=crew.headers(Role.ADMIN)).json()["plan"]
    assert (plan["plan"], plan["lead_limit"], plan["leads"]) == ("custom", 3, 0)

    version = len(api.store.app.stream(UUID(tid)))
    refused = urbana("tenant", "set-plan", tid, "gold")
    assert refused.returncode == 1
    assert "unknown plan" in refused.stderr
    assert len(api.store.app.stream(UUID(tid))) == version  # nothing recorded
    assert api.store.app.get(Tenant, UUID(tid)).plan == Plan("custom", 3)

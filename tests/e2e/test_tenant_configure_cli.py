"""`urbana tenant configure` run as an operator runs it (a subprocess on the installation's
database): the same command as PATCH /v1/settings, and what it changed shows over HTTP."""

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
from urbana.domain.tenant import Tenant
from urbana.domain.user import Role

pytestmark = pytest.mark.e2e

URBANA = str(Path(sys.executable).with_name("urbana"))
Installation = tuple[Api, dict[str, str], Path]


@pytest.fixture(scope="module")
def installation(
    services: ServiceUrls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installation]:
    schema, master_key = f"cfg_{uuid4().hex[:10]}", os.urandom(32)
    api = start_api(services, schema, master_key)
    workdir = tmp_path_factory.mktemp("configure-cli")
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


def urbana(installation: Installation, *args: str) -> subprocess.CompletedProcess[str]:
    _, env, workdir = installation
    return subprocess.run(
        [URBANA, *args], env=env, cwd=workdir, capture_output=True, text=True, timeout=120
    )


def test_configure_sets_typed_values_and_the_api_shows_them(installation: Installation) -> None:
    api = installation[0]
    crew = team(api)
    done = urbana(
        installation,
        "tenant",
        "configure",
        str(crew.tenant_id),
        "--set",
        "inactivity_limit_s=600",
        "--set",
        "include_groups=true",
        "--set",
        'business_hours={"mon": "08:00-18:00"}',
        "--set",
        "prompt=Você é a assistente da Imobiliária Sol.",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)["settings"]
    assert (printed["inactivity_limit_s"], printed["include_groups"]) == (600, True)
    assert printed["business_hours"] == {"mon": "08:00-18:00"}
    assert printed["prompt"] == "Você é a assistente da Imobiliária Sol."
    shown = httpx.get(f"{api.url}/v1/settings", headers=crew.headers(Role.ADMIN))
    assert shown.json() == printed
    listed = urbana(installation, "tenant", "configure", str(crew.tenant_id))
    assert listed.returncode == 0, listed.stderr
    assert "inactivity_limit_s = 600" in listed.stdout.splitlines()


@pytest.mark.parametrize(
    ("pair", "code"),
    [("no_such=1", 1), ("include_groups=maybe", 1), ("debounce_ms=-5", 1), ("novalue", 2)],
)
def test_configure_refuses_a_bad_change_and_records_nothing(
    installation: Installation, pair: str, code: int
) -> None:
    api = installation[0]
    tenant_id, _ = api.store.app.register_tenant(f"Cfg {uuid4().hex[:8]}")
    before = api.event_count()
    done = urbana(
        installation, "tenant", "configure", str(tenant_id), "--set", "hot_score=80", "--set", pair
    )
    assert done.returncode == code, done.stdout
    assert done.stderr.startswith("error: ")
    assert api.event_count() == before
    assert api.store.app.get(Tenant, UUID(str(tenant_id))).settings.hot_score == 70

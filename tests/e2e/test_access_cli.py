"""`urbana user add` and `urbana apikey create/revoke` run as an operator runs them (a
subprocess on the installation's database), and what they made works over HTTP."""

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

from tests.e2e.access_helpers import PASSWORD, bearer, login, new_email
from tests.e2e.conftest import Api, start_api, stop_api
from urbana.adapters.embedded import ServiceUrls

pytestmark = pytest.mark.e2e

URBANA = str(Path(sys.executable).with_name("urbana"))


@pytest.fixture(scope="module")
def installation(
    services: ServiceUrls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Api, dict[str, str], Path]]:
    """An API process and the environment its operator's commands run with."""
    schema, master_key = f"cli_{uuid4().hex[:10]}", os.urandom(32)
    api = start_api(services, schema, master_key)
    workdir = tmp_path_factory.mktemp("access-cli")
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


def urbana(
    installation: tuple[Api, dict[str, str], Path], *args: str
) -> subprocess.CompletedProcess[str]:
    _, env, workdir = installation
    return subprocess.run(
        [URBANA, *args], env=env, cwd=workdir, capture_output=True, text=True, timeout=120
    )


def new_tenant(api: Api) -> str:
    tenant_id, _ = api.store.app.register_tenant(f"CLI {uuid4().hex[:8]}")
    return str(tenant_id)


def test_user_add_prints_the_id_and_a_generated_password_that_signs_in(
    installation: tuple[Api, dict[str, str], Path],
) -> None:
    api = installation[0]
    email = new_email()
    done = urbana(installation, "user", "add", new_tenant(api), email, "--role", "supervisor")
    assert done.returncode == 0, done.stderr
    printed_id, password_line = done.stdout.strip().splitlines()
    assert password_line.startswith("password: ")
    signed_in = login(api, email, password_line.removeprefix("password: "))
    assert signed_in.status_code == 200, signed_in.text
    who = httpx.get(f"{api.url}/v1/me", headers=bearer(signed_in.json()["access_token"]))
    assert (who.json()["subject_id"], who.json()["role"]) == (str(UUID(printed_id)), "supervisor")


def test_user_add_with_a_password_and_json(
    installation: tuple[Api, dict[str, str], Path],
) -> None:
    api = installation[0]
    tenant_id, email = new_tenant(api), new_email()
    done = urbana(
        installation,
        "user",
        "add",
        tenant_id,
        email,
        "--role",
        "admin",
        "--password",
        PASSWORD,
        "--name",
        "Ana",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["password"] is None
    assert (printed["tenant_id"], printed["email"], printed["role"]) == (tenant_id, email, "admin")
    assert login(api, email).status_code == 200


@pytest.mark.parametrize("refusal", ["unknown tenant", "unknown role", "email taken", "email"])
def test_user_add_refusals_exit_1_and_say_why(
    installation: tuple[Api, dict[str, str], Path], refusal: str
) -> None:
    api = installation[0]
    tenant_id, email = new_tenant(api), new_email()
    assert urbana(installation, "user", "add", tenant_id, email, "--role", "admin").returncode == 0
    args = {
        "unknown tenant": (str(uuid4()), new_email(), "admin", "no tenant"),
        "unknown role": (tenant_id, new_email(), "root", "unknown role"),
        "email taken": (new_tenant(api), email.upper(), "admin", "already signs in"),
        "email": (tenant_id, "not-an-email", "admin", "not an email"),
    }[refusal]
    before = api.event_count()
    done = urbana(installation, "user", "add", args[0], args[1], "--role", args[2])
    assert done.returncode == 1
    assert args[3] in done.stderr
    assert api.event_count() == before


def test_an_api_key_from_the_cli_works_until_revoked_by_the_cli(
    installation: tuple[Api, dict[str, str], Path],
) -> None:
    api = installation[0]
    tenant_id = new_tenant(api)
    created = urbana(installation, "apikey", "create", tenant_id, "--role", "analyst")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    who = httpx.get(f"{api.url}/v1/me", headers=bearer(key))
    assert who.status_code == 200, who.text
    assert (who.json()["kind"], who.json()["role"]) == ("apikey", "analyst")
    assert who.json()["tenant_id"] == tenant_id
    revoked = urbana(installation, "apikey", "revoke", key)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in revoked.stdout
    assert httpx.get(f"{api.url}/v1/me", headers=bearer(key)).status_code == 401
    again = urbana(installation, "apikey", "revoke", who.json()["subject_id"], "--json")
    assert json.loads(again.stdout) == {"key_id": who.json()["subject_id"], "revoked": False}


def test_apikey_create_json_names_the_key_and_its_id(
    installation: tuple[Api, dict[str, str], Path],
) -> None:
    api = installation[0]
    tenant_id = new_tenant(api)
    done = urbana(
        installation, "apikey", "create", tenant_id, "--role", "admin", "--name", "crm", "--json"
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["key"].startswith(f"urb_{UUID(printed['key_id']).hex}_")
    assert (printed["tenant_id"], printed["role"], printed["name"]) == (tenant_id, "admin", "crm")


def test_commands_leave_no_data_dir_in_the_working_directory(
    installation: tuple[Api, dict[str, str], Path],
) -> None:
    done = urbana(installation, "apikey", "create", new_tenant(installation[0]), "--role", "admin")
    assert done.returncode == 0, done.stderr
    assert not (installation[2] / ".urbana").exists()


def test_revoking_what_is_not_a_key_exits_2(
    installation: tuple[Api, dict[str, str], Path],
) -> None:
    done = urbana(installation, "apikey", "revoke", "nonsense")
    assert done.returncode == 2
    assert "not an API key" in done.stderr

"""`urbana privacy export` run as an operator runs it: a subprocess on the installation's
database and master key, next to a running API that recorded the subject."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from tests.e2e.conftest import Api, start_api, stop_api
from urbana.adapters.embedded import ServiceUrls
from urbana.application.app import ReceiveMessage
from urbana.application.channels import InboundMessage

pytestmark = pytest.mark.e2e

URBANA = str(Path(sys.executable).with_name("urbana"))
TEXT = "Quero trocar o colchão & a cama"


@pytest.fixture(scope="module")
def installation(
    services: ServiceUrls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Api, dict[str, str], Path]]:
    """An API process and the environment its operator's commands run with."""
    schema, master_key = f"pcli_{uuid4().hex[:10]}", os.urandom(32)
    api = start_api(services, schema, master_key)
    workdir = tmp_path_factory.mktemp("privacy-cli")
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


def subject(api: Api) -> tuple[UUID, UUID, str]:
    """A tenant and a lead who wrote once: (tenant, lead, phone)."""
    tenant, _ = api.store.app.register_tenant(f"CLI {uuid4().hex[:8]}")
    phone = f"551198{uuid4().int % 10**7:07d}"  # a mobile: its old form starts 6-9
    message = InboundMessage(
        provider_message_id=f"wamid.{uuid4().hex}",
        contact=phone,
        phone=phone,
        sent_at=datetime.now(UTC),
        kind="text",
        text=TEXT,
        contact_name="Rui",
    )
    received = api.store.app.receive_message(ReceiveMessage(tenant, "zapi", message))
    return tenant, received.lead_id, phone


def last_event(api: Api, lead: UUID) -> Any:
    return api.store.app.stream(lead)[-1]


def test_export_by_phone_writes_the_html_transcript_and_records_the_export(
    installation: tuple[Api, dict[str, str], Path],
) -> None:
    api, _, workdir = installation
    tenant, lead, phone = subject(api)
    out = workdir / "titular.html"
    old_form = phone[:4] + phone[5:]  # without the ninth digit
    done = urbana(
        installation,
        *("privacy", "export", str(tenant), "--phone", old_form, "--format", "html"),
        *("--out", str(out), "--purpose", "Pedido 12"),
    )
    assert done.returncode == 0, done.stderr
    page = out.read_text(encoding="utf-8")
    assert "Exportação dos dados do titular" in page
    assert "Quero trocar o colchão &amp; a cama" in page
    assert "WhatsApp (Z-API)" in page
    assert str(lead) in done.stderr  # the summary goes to stderr, the data to the file
    recorded = last_event(api, lead)
    assert type(recorded).__name__ == "SubjectDataExported"
    assert (recorded.by, recorded.role, recorded.purpose, recorded.rendering) == (
        "cli",
        "operator",
        "Pedido 12",
        "html",
    )


def test_export_by_lead_prints_the_json_document(
    installation: tuple[Api, dict[str, str], Path],
) -> None:
    api = installation[0]
    tenant, lead, phone = subject(api)
    done = urbana(installation, "privacy", "export", str(tenant), "--lead", str(lead))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["lead_id"] == str(lead)
    assert document["subject"]["phone"] == phone
    assert TEXT in [e["data"].get("text") for e in document["events"]]
    positions = [e["position"] for e in document["events"]]
    assert positions == sorted(positions)
    assert (last_event(api, lead).rendering, last_event(api, lead).purpose) == ("json", None)


def test_an_unknown_subject_or_a_bad_invocation_exits_non_zero_and_appends_nothing(
    installation: tuple[Api, dict[str, str], Path],
) -> None:
    api = installation[0]
    tenant, lead, phone = subject(api)
    before = api.event_count()
    unknown = urbana(installation, "privacy", "export", str(tenant), "--phone", "5511900000000")
    other_tenant = urbana(installation, "privacy", "export", str(uuid4()), "--lead", str(lead))
    both = urbana(
        installation, "privacy", "export", str(tenant), "--phone", phone, "--lead", str(lead)
    )
    neither = urbana(installation, "privacy", "export", str(tenant))
    bad_format = urbana(
        installation, "privacy", "export", str(tenant), "--lead", str(lead), "--format", "pdf"
    )
    assert (unknown.returncode, other_tenant.returncode) == (1, 1)
    assert "no such data subject" in unknown.stderr
    assert (both.returncode, neither.returncode, bad_format.returncode) == (2, 2, 2)
    assert all("Traceback" not in d.stderr for d in (unknown, other_tenant, both, neither))
    assert api.event_count() == before

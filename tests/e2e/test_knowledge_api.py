"""Knowledge documents over the admin API, indexed into pgvector by the knowledge role."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest
from typer.testing import CliRunner

from tests.e2e.access_helpers import status as process_status
from tests.e2e.conftest import ADMIN_KEY, Api, start_api, stop_api
from tests.e2e.webhook_helpers import create_tenant
from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.postgres.knowledge import document_id_for
from urbana.cli import app

pytestmark = pytest.mark.e2e

ADMIN = {"X-Admin-Key": ADMIN_KEY}


@pytest.fixture(scope="module")
def kb_api(services: ServiceUrls) -> Iterator[Api]:
    run = uuid4().hex[:8]
    api = start_api(
        services,
        f"kb_{run}",
        os.urandom(32),
        roles=("relay", "knowledge"),
        events_topic=f"e2e.kb.{run}",
        consumer_group_prefix=f"e2e.kb.{run}",
    )
    try:
        yield api
    finally:
        stop_api(api)


def chunks(api: Api, tenant_id: str, name: str) -> list[tuple[str, int]]:
    with api.store.pool.connection() as conn:
        exists = conn.execute("SELECT to_regclass('kb_chunks')").fetchone()
        if exists is None or exists[0] is None:
            return []
        rows = conn.execute(
            "SELECT text, source_version FROM kb_chunks WHERE tenant_id = %s "
            "AND document_id = %s ORDER BY chunk_no",
            (UUID(tenant_id), document_id_for(UUID(tenant_id), name)),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def wait_for(check: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError("not indexed in time")


def test_a_document_posted_as_json_is_indexed_by_the_knowledge_role(kb_api: Api) -> None:
    tid = create_tenant(kb_api)
    text = "# Entrega\n\nEntregamos em até 5 dias úteis na região metropolitana."
    r = httpx.post(
        f"{kb_api.url}/admin/tenants/{tid}/knowledge",
        json={"name": "entrega.md", "text": text},
        headers=ADMIN,
    )
    assert r.status_code == 202, r.text
    assert r.json()["document_id"] == str(document_id_for(UUID(tid), "entrega.md"))
    wait_for(lambda: chunks(kb_api, tid, "entrega.md"))
    [(stored, version)] = chunks(kb_api, tid, "entrega.md")
    assert "5 dias úteis" in stored
    assert version == 2  # TenantRegistered is 1; the document's event is 2


def test_a_raw_markdown_document_replaces_the_one_of_the_same_name(kb_api: Api) -> None:
    tid = create_tenant(kb_api)
    url = f"{kb_api.url}/admin/tenants/{tid}/knowledge"
    for body in ("Abrimos às 8h.", "Abrimos às 9h."):
        r = httpx.post(
            url,
            params={"name": "horario.md"},
            content=body.encode(),
            headers={**ADMIN, "Content-Type": "text/markdown; charset=utf-8"},
        )
        assert r.status_code == 202, r.text
    wait_for(lambda: chunks(kb_api, tid, "horario.md") == [("Abrimos às 9h.", 3)])


def test_bad_documents_are_problems_and_append_nothing(kb_api: Api) -> None:
    tid = create_tenant(kb_api)
    url = f"{kb_api.url}/admin/tenants/{tid}/knowledge"
    before = kb_api.event_count()
    cases = [
        (httpx.post(url, json={"name": "x.md", "text": "   "}, headers=ADMIN), 422),
        (httpx.post(url, json={"name": "x.md"}, headers=ADMIN), 422),
        (
            httpx.post(url, content=b"oi", headers={**ADMIN, "Content-Type": "text/plain"}),
            422,
        ),
        (
            httpx.post(url, content=b"oi", headers={**ADMIN, "Content-Type": "application/pdf"}),
            415,
        ),
        (httpx.post(url, json={"name": "x.md", "text": "oi"}), 401),
        (
            httpx.post(
                f"{kb_api.url}/admin/tenants/{uuid4()}/knowledge",
                json={"name": "x.md", "text": "oi"},
                headers=ADMIN,
            ),
            404,
        ),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
    assert kb_api.event_count() == before


def test_status_shows_the_roles_of_the_process(kb_api: Api) -> None:
    tid = create_tenant(kb_api)
    r = httpx.post(
        f"{kb_api.url}/admin/tenants/{tid}/knowledge",
        json={"name": "pix.md", "text": "Aceitamos Pix."},
        headers=ADMIN,
    )
    assert r.status_code == 202
    wait_for(lambda: chunks(kb_api, tid, "pix.md"))

    def caught_up() -> bool:
        m = process_status(kb_api)
        return bool(m["relay"]["lag_events"] == 0 and m["knowledge"]["handled"] >= 1)

    wait_for(caught_up, timeout=30)
    m = process_status(kb_api)
    assert m["relay"]["published"] >= 2
    assert m["relay"]["last_position"] == m["relay"]["head_position"]
    assert set(m["ingest"]) == {
        "batches",
        "items",
        "mean_batch",
        "store_down",
        "refused_while_down",
    }
    assert m["ingest"]["store_down"] is False


def test_cli_kb_add_indexes_at_once_and_reindex_rebuilds(
    kb_api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = kb_api.settings
    monkeypatch.setenv("URBANA_ENV", "test")
    monkeypatch.setenv("URBANA_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("URBANA_DATABASE_SCHEMA", settings.database_schema or "")
    assert settings.master_key is not None
    monkeypatch.setenv("URBANA_MASTER_KEY", settings.master_key.get_secret_value())
    tid = create_tenant(kb_api)
    doc = tmp_path / "garantia.md"
    doc.write_text("# Garantia\n\nTodos os colchões têm garantia de 2 anos.", encoding="utf-8")
    runner = CliRunner()
    added = runner.invoke(app, ["kb", "add", tid, str(doc), "--data-dir", str(tmp_path), "--json"])
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["documents"][0]["name"] == "garantia.md"
    [(text, version)] = chunks(kb_api, tid, "garantia.md")  # indexed before it returned
    assert "garantia de 2 anos" in text
    assert version == 2
    with kb_api.store.pool.connection() as conn:
        conn.execute("DELETE FROM kb_chunks WHERE tenant_id = %s", (UUID(tid),))
    rebuilt = runner.invoke(app, ["kb", "reindex", tid, "--data-dir", str(tmp_path), "--json"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert [d["name"] for d in json.loads(rebuilt.output)["documents"]] == ["garantia.md"]
    assert len(chunks(kb_api, tid, "garantia.md")) == 1

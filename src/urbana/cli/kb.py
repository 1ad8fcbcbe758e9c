"""`urbana kb`: the tenants' knowledge bases."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import typer

from urbana.cli.common import (
    DataDir,
    JsonOut,
    emit,
    parse_tenant,
    refusals,
    settings_and_store,
)
from urbana.config import Settings

if TYPE_CHECKING:
    from urbana.adapters.postgres.store import Store

app = typer.Typer(help="Knowledge base.", no_args_is_help=True)


@app.command("add")
def add(
    ctx: typer.Context,
    tenant_id: str,
    files: Annotated[list[Path], typer.Argument(help="Markdown or text files.")],
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Add knowledge documents (Markdown / text) to a tenant; the AI answers from them."""
    from urbana.application.gateways import tenant_uuid
    from urbana.domain.errors import DomainError

    with refusals(2, DomainError, OSError, UnicodeDecodeError):
        tid = tenant_uuid(tenant_id)
        documents = [(f.name, f.read_text(encoding="utf-8")) for f in files]
    with settings_and_store(ctx, data_dir) as (settings, store):
        with refusals():
            for name, text in documents:
                store.app.add_knowledge_document(tid, name, text)
        # Indexed as the knowledge role would, so `kb add` works without workers
        # running; indexing the same event twice is harmless.
        added = _index(settings, store, tid, {name.strip() for name, _ in documents})
    emit(
        as_json,
        {"tenant_id": tenant_id, "documents": added},
        "\n".join(f"added {d['name']} ({d['chunks']} chunks)" for d in added),
    )


@app.command("reindex")
def reindex(
    ctx: typer.Context,
    tenant_id: str,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Rebuild a tenant's pgvector knowledge index from its events."""
    tid = parse_tenant(tenant_id)
    with settings_and_store(ctx, data_dir) as (settings, store):
        indexed = _index(settings, store, tid, None, force=True)
    emit(
        as_json,
        {"tenant_id": tenant_id, "documents": indexed},
        "\n".join(f"indexed {d['name']} ({d['chunks']} chunks)" for d in indexed) or "no documents",
    )


def _index(
    settings: Settings,
    store: Store,
    tenant: UUID,
    names: set[str] | None,
    *,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Embed the tenant's documents (those named, or all) from its event stream, with
    the embeddings the settings choose (as the knowledge role does)."""
    import httpx

    from urbana.adapters.bootstrap import build_ai
    from urbana.application.ai import chunk_markdown

    async def index() -> list[dict[str, Any]]:
        indexed = []
        async with httpx.AsyncClient(timeout=30) as http:
            knowledge = build_ai(settings, store, http).knowledge
            for doc in store.app.knowledge_documents(tenant):
                if names is not None and doc.name not in names:
                    continue
                document_id = await knowledge.add_document(
                    tenant, doc.name, doc.text, version=doc.version, force=force
                )
                indexed.append(
                    {
                        "name": doc.name,
                        "document_id": str(document_id),
                        "characters": len(doc.text),
                        "chunks": len(chunk_markdown(doc.text)),
                    }
                )
        return indexed

    return asyncio.run(index())

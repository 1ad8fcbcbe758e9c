"""/v1 knowledge routes (admin): the tenant's knowledge base documents, listed and uploaded.

A document is the tenant's own Markdown or text (opening hours, prices, policies), sent
as the raw body; it is recorded by the same command the operator's
`POST /admin/tenants/{id}/knowledge` and `urbana kb add` use, and the knowledge role
embeds it into pgvector moments after (so the answer is 202: durable, not yet indexed).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Path, Request
from pydantic import BaseModel, Field

from urbana.adapters.http.auth import Admin, v1_router
from urbana.adapters.http.common import (
    Responses,
    container_of,
    examples,
    on_store,
    route_errors,
    tenant_of,
)
from urbana.application.ai import document_id_for
from urbana.domain.tenant import MAX_DOCUMENT
from urbana.errors import Rejected

TEXT_TYPES = ("text/markdown", "text/plain")
MAX_NAME = 200
# A UTF-8 character takes at most four bytes: past this the body cannot be a document
# of MAX_DOCUMENT characters, and reading stops there.
MAX_BYTES = 4 * MAX_DOCUMENT
ERRORS = route_errors("Only admins manage the knowledge base")
router = v1_router(tags=["knowledge"], responses=ERRORS)
UPLOAD_ERRORS: Responses = {
    413: {"description": f"Longer than {MAX_DOCUMENT:,} characters: split it (problem+json)"},
    415: {"description": "Not sent as text/markdown or text/plain (problem+json)"},
    422: {"description": "Empty, not UTF-8 text, or a bad name: nothing is recorded"},
}
BODY = {
    "required": True,
    "content": {
        kind: {
            "schema": {"type": "string", "maxLength": MAX_DOCUMENT},
            "example": "# Horário\n\nAtendemos de segunda a sexta, das 8h às 18h.\n",
        }
        for kind in TEXT_TYPES
    },
}


class DocumentOut(BaseModel):
    model_config = examples(
        {
            "name": "atendimento.md",
            "document_id": "2b8e4f1a-7c3d-5e6f-9a0b-1c2d3e4f5a6b",
            "characters": 1834,
        }
    )
    name: str
    document_id: UUID = Field(description="Its passages' `document_id` in a reply's `passages`")
    characters: int


class DocumentList(BaseModel):
    model_config = examples(
        {
            "items": [
                {
                    "name": "atendimento.md",
                    "document_id": "2b8e4f1a-7c3d-5e6f-9a0b-1c2d3e4f5a6b",
                    "characters": 1834,
                }
            ]
        }
    )
    items: list[DocumentOut] = Field(description="By name")


class Accepted(DocumentOut):
    model_config = examples(
        {
            "name": "atendimento.md",
            "document_id": "2b8e4f1a-7c3d-5e6f-9a0b-1c2d3e4f5a6b",
            "characters": 1834,
            "status": "accepted",
        }
    )
    status: str = Field(description="`accepted`: recorded; the knowledge role indexes it next")


def _document(tenant_id: UUID, name: str, characters: int) -> DocumentOut:
    return DocumentOut(
        name=name, document_id=document_id_for(tenant_id, name), characters=characters
    )


@router.get(
    "/knowledge",
    summary="The tenant's knowledge base documents",
)
async def documents(principal: Admin, request: Request) -> DocumentList:
    tenant = await tenant_of(request, principal.tenant_id)
    found = sorted(tenant.knowledge_documents.items())
    return DocumentList(items=[_document(principal.tenant_id, n, c) for n, c in found])


async def _text(request: Request) -> str:
    """The body as a document's text; a problem (413, 415, 422) when it cannot be one."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in TEXT_TYPES:
        raise Rejected(415, "send the document as text/markdown or text/plain")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BYTES:
            raise Rejected(413, f"the document is longer than {MAX_DOCUMENT:,} characters")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(422, f"not UTF-8 text (byte {exc.start})") from None
    if len(text) > MAX_DOCUMENT:
        raise Rejected(413, f"the document has {len(text):,} characters (max {MAX_DOCUMENT:,})")
    if "\x00" in text:
        raise Rejected(422, "not a text document: it holds NUL characters")
    if not text.strip():
        raise Rejected(422, "the document is empty")
    return text


@router.put(
    "/knowledge/{name}",
    status_code=202,
    responses=UPLOAD_ERRORS,
    openapi_extra={"requestBody": BODY},
    summary="Add a knowledge document, or replace the one of that name",
)
async def put_document(
    name: Annotated[str, Path(min_length=1, max_length=MAX_NAME)],
    principal: Admin,
    request: Request,
) -> Accepted:
    """The raw Markdown or text of the document; 202 once `KnowledgeDocumentAdded` is
    durable. The AI answers from it once the knowledge role has embedded it."""
    text = await _text(request)
    clean = name.strip()
    if not clean or "\x00" in clean:
        raise Rejected(422, "the document needs a name")
    app = container_of(request).store.app
    await on_store(request, app.add_knowledge_document, principal.tenant_id, clean, text)
    doc = _document(principal.tenant_id, clean, len(text))
    return Accepted(**doc.model_dump(), status="accepted")

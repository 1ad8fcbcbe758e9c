"""The knowledge base screen: the tenant's documents, and uploading one (Markdown / text).

The file goes to `PUT /v1/knowledge/{name}` as it was chosen, bytes untouched: the API
decides what a document may be (UTF-8 text, not empty, not too long) and the screen shows
its refusal in words.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response

from urbana.adapters.http.knowledge import MAX_BYTES
from urbana.adapters.http.panel.common import Api, admin_me, page
from urbana.adapters.http.panel.session import PREFIX, OurForm
from urbana.adapters.http.panel.v1 import V1, PanelError

router = APIRouter(prefix=PREFIX, include_in_schema=False)

# The API's refusals of a document, as the screen words them.
REFUSALS = {
    413: "O documento é grande demais: divida-o em partes.",
    415: "Envie um arquivo Markdown (.md) ou de texto (.txt).",
    422: "O arquivo precisa ser texto em UTF-8 e não pode estar vazio.",
}


async def _page(request: Request, v1: V1, status_code: int = 200, **context: Any) -> Response:
    me = await admin_me(v1)
    documents = (await v1.get("/knowledge"))["items"]
    context = {"uploaded": None, "error": None, **context}
    return await page(
        request, v1, "knowledge.html", status_code, me=me, documents=documents, **context
    )


@router.get("/knowledge")
async def knowledge(request: Request, v1: Api) -> Response:
    return await _page(request, v1)


@router.post("/knowledge", dependencies=[OurForm])
async def upload(
    request: Request,
    v1: Api,
    file: Annotated[UploadFile, File()],
    name: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    chosen = name.strip() or (file.filename or "").strip()
    if not chosen:
        return await _page(request, v1, 422, error="Dê um nome ao documento.")
    body = await file.read(MAX_BYTES + 1)
    kind = "text/plain" if chosen.lower().endswith(".txt") else "text/markdown"
    try:
        accepted = await v1.call(
            "PUT",
            f"/knowledge/{quote(chosen, safe='')}",
            content=body,
            headers={"Content-Type": kind},
        )
    except PanelError as exc:
        if exc.status not in REFUSALS:
            raise
        return await _page(request, v1, exc.status, error=f"{REFUSALS[exc.status]} ({exc.detail})")
    return await _page(request, v1, uploaded=accepted)

"""The attendant panel under /panel/: server-rendered pages (Jinja2) over the /v1 API.

`install(app)` adds it to the API's app; `urbana dev` and `urbana serve` serve it at
`/panel/`. See docs/architecture.md, "The panel".
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.gzip import GZipMiddleware

from urbana.adapters.http.panel import (
    audit,
    channels,
    conversation,
    inbox,
    knowledge,
    more,
    session,
    testar,
)
from urbana.adapters.http.panel.session import PREFIX
from urbana.adapters.http.panel.v1 import PanelError, SignedOut
from urbana.adapters.http.panel.views import HERE, build_templates, render

__all__ = ["install"]

TITLES = {
    403: "Sem permissão",
    404: "Não encontrado",
    503: "Indisponível no momento",
}


async def _panel_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PanelError)
    if isinstance(exc, SignedOut):
        login = f"{PREFIX}/login"
        if request.headers.get("hx-request"):
            # A live redraw: the whole page goes to the login, not the fragment.
            return Response(status_code=401, headers={"HX-Redirect": login})
        return RedirectResponse(login, status_code=303)
    headers = {"Retry-After": "5"} if exc.status == 503 else None
    return render(
        request,
        "error.html",
        {"me": None, "title": TITLES.get(exc.status, "Erro"), "status": exc.status},
        status_code=exc.status,
        headers=headers,
    )


def install(app: FastAPI) -> None:
    """Serve the panel from `app`: its pages, its static files and its error pages."""
    app.state.panel_templates = build_templates()
    # Compressed for clients that accept it (htmx is 52 kB as is, about a third gzipped);
    # ETag and Last-Modified then let a browser keep its copy.
    static = GZipMiddleware(StaticFiles(directory=HERE / "static"), minimum_size=1024)
    app.mount(f"{PREFIX}/static", static, name="panel-static")
    for module in (session, inbox, conversation, more, testar, channels, knowledge, audit):
        app.include_router(module.router)
    app.add_exception_handler(PanelError, _panel_error)

    @app.get(PREFIX, include_in_schema=False)
    async def panel_root() -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @app.get(f"{PREFIX}/sw.js", include_in_schema=False)
    async def service_worker() -> Response:
        # Served from /panel/ (not /panel/static/) so its scope is the whole panel.
        return FileResponse(HERE / "static" / "sw.js", media_type="text/javascript")

    @app.get(f"{PREFIX}/manifest.webmanifest", include_in_schema=False)
    async def manifest() -> Response:
        return FileResponse(
            HERE / "static" / "manifest.webmanifest", media_type="application/manifest+json"
        )

    @app.get(f"{PREFIX}/offline", include_in_schema=False)
    async def offline(request: Request) -> Response:
        return render(request, "offline.html", {"me": None})

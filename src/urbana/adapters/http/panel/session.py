"""The panel's sign-in, sign-out and the checks every panel form passes.

The login form posts here; the panel calls `/v1/auth/login` in-process and keeps the
access token in an HttpOnly, SameSite=Strict cookie (Secure over HTTPS), which the
panel's server side and the browser's `/v1/stream` both present. Every panel form that
changes something must come from a page of our origin (`same_origin`), the login too
(so another site cannot sign a browser into an account of its choosing).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from urbana.adapters.http.auth import SESSION_COOKIE, same_origin
from urbana.adapters.http.panel.v1 import V1, PanelError
from urbana.adapters.http.panel.views import render

PREFIX = "/panel"


def from_our_pages(request: Request) -> None:
    """Refuse a form post that did not come from a panel page (403)."""
    if not same_origin(request):
        raise HTTPException(403, "this form must be sent from the panel")


router = APIRouter(prefix=PREFIX, include_in_schema=False)
OurForm = Depends(from_our_pages)


def to(path: str) -> RedirectResponse:
    """After a form: see the page (303, so a reload does not post again)."""
    return RedirectResponse(f"{PREFIX}{path}", status_code=303)


@router.get("/login")
async def login_page(request: Request) -> Response:
    return render(request, "login.html", {"error": None, "email": ""})


@router.post("/login", dependencies=[OurForm])
async def login(
    request: Request,
    email: Annotated[str, Form(max_length=254)],
    password: Annotated[str, Form(max_length=1024)],
) -> Response:
    v1 = V1(request, token=None)
    try:
        answer = await v1.post("/auth/login", {"email": email, "password": password})
    except PanelError as exc:
        if exc.status not in (401, 422):
            raise
        return render(
            request,
            "login.html",
            {"error": "E-mail ou senha incorretos.", "email": email},
            status_code=401,
        )
    finally:
        await v1.aclose()
    response = to("/")
    response.set_cookie(
        SESSION_COOKIE,
        answer["access_token"],
        max_age=int(answer["expires_in"]),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout", dependencies=[OurForm])
async def logout() -> Response:
    response = to("/login")
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response

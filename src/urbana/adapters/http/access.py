"""/v1 access routes: the login, who am I, and the admin's users and API keys."""

from __future__ import annotations

import asyncio
from typing import Any, Literal
from uuid import UUID

from fastapi import Request, Response
from pydantic import BaseModel, Field

from urbana.adapters.http.auth import PUBLIC, Admin, Anyone, unauthorized, v1_router
from urbana.adapters.http.common import UNAUTHORIZED, Responses, container_of, examples
from urbana.application.access import MAX_PASSWORD, MIN_PASSWORD, Principal
from urbana.domain.errors import NotAuthenticated
from urbana.domain.user import Role, User

router = v1_router(tags=["access"])

ADMIN_ERRORS: Responses = {
    **UNAUTHORIZED,
    403: {"description": "The caller's role is not admin"},
}
_USER_EXAMPLE: dict[str, Any] = {
    "user_id": "0b8f6a3e-2a51-4c3e-9a43-1d2b3c4d5e6f",
    "tenant_id": "5f0c6f1e-3a57-4b5e-9d0e-0b7a1c9f2e41",
    "email": "ana@imobiliaria.com.br",
    "name": "Ana",
    "role": "attendant",
    "disabled": False,
    "availability": "offline",
    "queues": [],
}


class LoginIn(BaseModel):
    model_config = examples({"email": "ana@imobiliaria.com.br", "password": "s3nha-longa"})
    email: str = Field(max_length=254)
    password: str = Field(max_length=MAX_PASSWORD)


class TokenOut(BaseModel):
    model_config = examples(
        {"access_token": "eyJhbGciOiJIUzI1NiJ9...", "token_type": "bearer", "expires_in": 900}
    )
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the scheme, not a secret)
    expires_in: int


class UserOut(BaseModel):
    model_config = examples(_USER_EXAMPLE)
    user_id: UUID
    tenant_id: UUID
    email: str
    name: str
    role: Role
    disabled: bool
    availability: str
    queues: list[str]

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            user_id=user.id,
            tenant_id=user.tenant_id,
            email=user.email,
            name=user.name,
            role=user.role,
            disabled=user.disabled,
            availability=user.availability.value,
            queues=list(user.queues),
        )


class MeOut(BaseModel):
    model_config = examples(
        {
            "kind": "user",
            "subject_id": "0b8f6a3e-2a51-4c3e-9a43-1d2b3c4d5e6f",
            "tenant_id": "5f0c6f1e-3a57-4b5e-9d0e-0b7a1c9f2e41",
            "role": "attendant",
            "user": {**_USER_EXAMPLE, "availability": "online", "queues": ["vendas"]},
        }
    )
    kind: Literal["user", "apikey"]
    subject_id: UUID
    tenant_id: UUID
    role: Role
    user: UserOut | None = None  # for a user, its profile; for a key, none


class NewUserIn(BaseModel):
    model_config = examples(
        {"email": "ana@imobiliaria.com.br", "role": "attendant", "name": "Ana"},
        {"email": "bia@imobiliaria.com.br", "role": "supervisor", "password": "s3nha-longa"},
    )
    email: str = Field(max_length=254)
    role: Role
    name: str = Field(default="", max_length=200)
    password: str | None = Field(
        default=None,
        min_length=MIN_PASSWORD,
        max_length=MAX_PASSWORD,
        description="When omitted, one is generated and returned once",
    )


class NewUserOut(BaseModel):
    model_config = examples(
        {
            "user_id": "0b8f6a3e-2a51-4c3e-9a43-1d2b3c4d5e6f",
            "email": "ana@imobiliaria.com.br",
            "role": "attendant",
            "password": "Qm9v6cS0rT1fXw2y",
        }
    )
    user_id: UUID
    email: str
    role: Role
    password: str | None = Field(default=None, description="The generated password, shown once")


class UserPatch(BaseModel):
    model_config = examples({"role": "supervisor"}, {"disabled": True})
    role: Role | None = None
    disabled: bool | None = None
    password: str | None = Field(default=None, min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)


class NewKeyIn(BaseModel):
    model_config = examples({"role": "analyst", "name": "relatórios"})
    role: Role
    name: str = Field(default="", max_length=200)


class NewKeyOut(BaseModel):
    model_config = examples(
        {
            "key_id": "6e0c8a52-93c1-4b0e-8f0e-2f7d1c9b3a10",
            "key": "urb_6e0c8a5293c14b0e8f0e2f7d1c9b3a10_...",
            "role": "analyst",
            "name": "relatórios",
        }
    )
    key_id: UUID
    key: str = Field(description="Send as `Authorization: Bearer <key>`; shown once")
    role: Role
    name: str


@router.post(
    "/auth/login",
    responses={
        **UNAUTHORIZED,
        429: {"description": "Too many failed sign-ins for the email or from the address"},
        503: {"description": "The store or the attempt counter did not answer"},
    },
    openapi_extra=PUBLIC,
    summary="Sign in with email and password",
)
async def login(body: LoginIn, request: Request) -> TokenOut:
    """A short-lived bearer token for the user; 401 for a wrong email or password, or a
    disabled user (the answer does not say which); 429 with Retry-After past the failed
    sign-in limits (`URBANA_LOGIN_ATTEMPTS_PER_EMAIL`, `..._PER_ADDRESS`)."""
    container = container_of(request)

    async def sign_in() -> Principal:
        return await asyncio.to_thread(container.access.login, body.email, body.password)

    address = request.client.host if request.client is not None else None
    try:
        if container.login_throttle is None:
            principal = await sign_in()
        else:
            principal = await container.login_throttle.attempt(body.email, address, sign_in)
    except NotAuthenticated as exc:
        raise unauthorized(str(exc)) from exc
    token = container.tokens.issue(principal)
    return TokenOut(access_token=token, expires_in=container.tokens.ttl_s)


@router.get("/me", responses=UNAUTHORIZED, summary="Who am I")
async def me(principal: Anyone, request: Request) -> MeOut:
    """The caller: tenant, role and, for a user, the profile."""
    user = None
    if principal.kind == "user":
        found = await asyncio.to_thread(
            container_of(request).access.current, User, principal.subject_id
        )
        user = UserOut.of(found) if found is not None else None
    return MeOut(
        kind=principal.kind,
        subject_id=principal.subject_id,
        tenant_id=principal.tenant_id,
        role=principal.role,
        user=user,
    )


@router.post(
    "/users",
    status_code=201,
    responses={**ADMIN_ERRORS, 409: {"description": "Another user signs in with that email"}},
    summary="Add a user to the tenant",
)
async def add_user(body: NewUserIn, principal: Admin, request: Request) -> NewUserOut:
    """Invite a user into the caller's tenant. Emails are unique across tenants."""
    user_id, generated = await asyncio.to_thread(
        container_of(request).access.add_user,
        principal.tenant_id,
        email=body.email,
        role=body.role,
        password=body.password,
        name=body.name,
    )
    return NewUserOut(
        user_id=user_id, email=body.email.strip().lower(), role=body.role, password=generated
    )


@router.patch(
    "/users/{user_id}",
    responses={**ADMIN_ERRORS, 404: {"description": "No such user in this tenant"}},
    summary="Change a user's role, password, or disable / enable them",
)
async def update_user(
    user_id: UUID, body: UserPatch, principal: Admin, request: Request
) -> UserOut:
    """Apply what differs; a disabled user's tokens stop working at once."""
    user = await asyncio.to_thread(
        container_of(request).access.update_user,
        principal.tenant_id,
        user_id,
        by=str(principal.subject_id),
        role=body.role,
        disabled=body.disabled,
        password=body.password,
    )
    return UserOut.of(user)


@router.post(
    "/api-keys",
    status_code=201,
    responses=ADMIN_ERRORS,
    summary="Create an API key for scripts",
)
async def create_api_key(body: NewKeyIn, principal: Admin, request: Request) -> NewKeyOut:
    """A key acting with `role` in the caller's tenant; the key is shown only here."""
    created = await asyncio.to_thread(
        container_of(request).access.create_api_key,
        principal.tenant_id,
        role=body.role,
        name=body.name,
        by=str(principal.subject_id),
    )
    return NewKeyOut(key_id=created.key_id, key=created.token, role=body.role, name=body.name)


@router.delete(
    "/api-keys/{key_id}",
    status_code=204,
    responses={**ADMIN_ERRORS, 404: {"description": "No such API key in this tenant"}},
    summary="Revoke an API key",
)
async def revoke_api_key(key_id: UUID, principal: Admin, request: Request) -> Response:
    """The key stops working at once; revoking it again changes nothing (204)."""
    await asyncio.to_thread(
        container_of(request).access.app.revoke_api_key,
        principal.tenant_id,
        key_id,
        by=str(principal.subject_id),
    )
    return Response(status_code=204)

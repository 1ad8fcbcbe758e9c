"""`allow(...)` and `v1_router()`: the roles a route admits are written into its OpenAPI."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from urbana.adapters.http.auth import PUBLIC, Principal, allow, v1_router
from urbana.domain.user import Role


def app_with_routes() -> FastAPI:
    router = v1_router(tags=["test"])

    @router.get("/by-annotation")
    async def by_annotation(
        principal: Annotated[Principal, allow(Role.SUPERVISOR, Role.ATTENDANT)],
    ) -> dict[str, str]:
        return {"role": principal.role}

    @router.post("/by-dependencies", dependencies=[allow(Role.ADMIN)])
    async def by_dependencies() -> dict[str, str]:
        return {}

    @router.get("/open", openapi_extra=PUBLIC)
    async def open_route() -> dict[str, str]:
        return {}

    app = FastAPI()
    app.include_router(router)
    return app


def operations(app: FastAPI) -> dict[tuple[str, str], dict[str, object]]:
    return {
        (method.upper(), path): op
        for path, item in app.openapi()["paths"].items()
        for method, op in item.items()
    }


def test_roles_are_written_as_x_roles_in_the_roles_order() -> None:
    found = operations(app_with_routes())
    assert found[("GET", "/v1/by-annotation")]["x-roles"] == ["attendant", "supervisor"]
    assert found[("POST", "/v1/by-dependencies")]["x-roles"] == ["admin"]


def test_a_public_route_says_so_and_names_no_roles() -> None:
    found = operations(app_with_routes())[("GET", "/v1/open")]
    assert found["x-public"] is True
    assert "x-roles" not in found


def test_a_route_that_admits_roles_documents_the_bearer_scheme() -> None:
    app = app_with_routes()
    schemes = app.openapi()["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A JWT from /v1/auth/login, or an API key",
    }
    assert operations(app)[("GET", "/v1/by-annotation")]["security"] == [{"HTTPBearer": []}]


def test_allow_needs_at_least_one_role() -> None:
    with pytest.raises(ValueError, match="name the roles"):
        allow()


def test_no_credentials_is_401_with_a_bearer_challenge() -> None:
    with TestClient(app_with_routes()) as client:
        answer = client.get("/v1/by-annotation")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"

"""The read routes and /v1/stream document themselves: roles, a response model with an
example for their success, and their errors."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from urbana.adapters.http import reads, stream


def spec() -> dict[str, Any]:
    app = FastAPI()
    app.include_router(reads.router)
    app.include_router(stream.router)
    return app.openapi()


def operations() -> list[tuple[str, dict[str, Any]]]:
    return [(path, item["get"]) for path, item in spec()["paths"].items()]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        found: dict[str, Any] = document["components"]["schemas"][name]
        return found
    if schema.get("type") == "array":
        return resolve(document, schema["items"])
    return schema


def test_every_read_route_is_a_get_with_roles() -> None:
    paths = {path for path, _ in operations()}
    assert paths == {
        "/v1/conversations",
        "/v1/conversations/{conversation_id}",
        "/v1/queue",
        "/v1/leads",
        "/v1/leads/{lead_id}",
        "/v1/kpis",
        "/v1/users",
        "/v1/queues",
        "/v1/canned-responses",
        "/v1/stream",
    }
    for path, operation in operations():
        assert operation["x-roles"], path


def test_every_success_has_an_example_and_every_error_is_documented() -> None:
    document = spec()
    for path, operation in operations():
        content = operation["responses"]["200"]["content"]
        if path == "/v1/stream":
            assert content["text/event-stream"]["example"].startswith("id: ")
            assert {"400", "401", "503"} <= set(operation["responses"])
            continue
        schema = resolve(document, content["application/json"]["schema"])
        assert schema.get("examples"), path
        assert {"401", "403", "422", "503"} <= set(operation["responses"]), path


def test_analysts_read_the_pipeline_but_no_conversation_text() -> None:
    roles = {path: set(op["x-roles"]) for path, op in operations()}
    for path in ("/v1/leads", "/v1/leads/{lead_id}", "/v1/kpis", "/v1/queues", "/v1/stream"):
        assert "analyst" in roles[path], path
    for path in (
        "/v1/conversations",
        "/v1/conversations/{conversation_id}",
        "/v1/queue",
        "/v1/canned-responses",
    ):
        assert "analyst" not in roles[path], path
    assert "attendant" not in roles["/v1/kpis"]

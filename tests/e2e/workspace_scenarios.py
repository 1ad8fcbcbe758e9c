"""The access matrix's scenarios for the /v1 command routes (conversations, leads, team).

Each makes a fresh resource in the state its route acts on (see tests.e2e.test_access_matrix).
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID, uuid4

from tests.e2e.access_helpers import Call, Scenario, Team
from tests.e2e.conftest import Api
from tests.e2e.workspace_helpers import closed, conversation, held, inbound, queue, waiting
from urbana.domain.user import Role

Make = Callable[[Api, Team, str], Call]


def _call(path: str, body: dict[str, object] | None = None) -> Call:
    return Call(path, body)


def _scenario(
    success: int, make: Make, *, on_a_resource: bool = False, keys: bool = True
) -> Scenario:
    return Scenario(success, make, on_a_resource=on_a_resource, keys=keys)


def _holder(caller: str) -> str:
    return caller or "someone"  # the unauthenticated cells have no caller


def _conv(path: str) -> str:
    return f"/v1/conversations/{{}}/{path}"


def _assign(api: Api, owner: Team, caller: str) -> Call:
    return _call(_conv("assign").format(waiting(api, owner.tenant_id)), {})


def _reply(api: Api, owner: Team, caller: str) -> Call:
    cid = held(api, owner.tenant_id, _holder(caller))
    return _call(_conv("messages").format(cid), {"text": "Olá, sou eu."})


def _note(api: Api, owner: Team, caller: str) -> Call:
    return _call(_conv("notes").format(conversation(api, owner.tenant_id)), {"text": "nota"})


def _labels(api: Api, owner: Team, caller: str) -> Call:
    cid = conversation(api, owner.tenant_id)
    return _call(_conv("labels").format(cid), {"add": ["vip"], "remove": []})


def _transfer(api: Api, owner: Team, caller: str) -> Call:
    cid = held(api, owner.tenant_id, _holder(caller))
    return _call(_conv("transfer").format(cid), {"to_queue": queue(api, owner.tenant_id)})


def _return(api: Api, owner: Team, caller: str) -> Call:
    return _call(_conv("return-to-ai").format(waiting(api, owner.tenant_id)))


def _close(api: Api, owner: Team, caller: str) -> Call:
    return _call(_conv("close").format(conversation(api, owner.tenant_id)))


def _reopen(api: Api, owner: Team, caller: str) -> Call:
    return _call(_conv("reopen").format(closed(api, owner.tenant_id)))


def _stage(api: Api, owner: Team, caller: str) -> Call:
    lead_id = inbound(api, owner.tenant_id).lead_id
    return _call(f"/v1/leads/{lead_id}/stage", {"stage": "qualified"})


def _new_queue(api: Api, owner: Team, caller: str) -> Call:
    return _call("/v1/queues", {"name": f"Fila {uuid4().hex[:8]}", "intents": ["price"]})


def _queue(api: Api, owner: Team, caller: str) -> Call:
    return _call(f"/v1/queues/{queue(api, owner.tenant_id)}", {"name": f"Nova {uuid4().hex[:8]}"})


def _availability(api: Api, owner: Team, caller: str) -> Call:
    return _call("/v1/me/availability", {"availability": "away"})


def _user_queues(api: Api, owner: Team, caller: str) -> Call:
    user_id = owner.user_ids[Role.ATTENDANT]
    return _call(f"/v1/users/{user_id}/queues", {"queues": [queue(api, owner.tenant_id)]})


def _save_canned(api: Api, owner: Team, caller: str) -> Call:
    return _call(f"/v1/canned-responses/c{uuid4().hex[:8]}", {"text": "Resposta pronta."})


def _canned(api: Api, owner: Team, caller: str) -> Call:
    shortcut = f"c{uuid4().hex[:8]}"
    api.store.app.save_canned_response(owner.tenant_id, shortcut, "Resposta pronta.")
    return _call(f"/v1/canned-responses/{shortcut}")


def _settings(api: Api, owner: Team, caller: str) -> Call:
    return _call("/v1/settings")


def _patch_settings(api: Api, owner: Team, caller: str) -> Call:
    return _call("/v1/settings", {"inactivity_limit_s": 600 + uuid4().int % 600})


def _template(api: Api, tenant_id: UUID) -> str:
    name = f"t_{uuid4().hex[:8]}"
    api.store.app.register_template(
        tenant_id,
        name,
        language="pt_BR",
        parameters=["nome"],
        text="Olá {{1}}, podemos continuar?",
    )
    return name


def _put_template(api: Api, owner: Team, caller: str) -> Call:
    body: dict[str, object] = {"language": "pt_BR", "parameters": [], "text": "Oi! Podemos ajudar?"}
    return _call(f"/v1/templates/t_{uuid4().hex[:8]}", body)


def _delete_template(api: Api, owner: Team, caller: str) -> Call:
    return _call(f"/v1/templates/{_template(api, owner.tenant_id)}")


def _send_template(api: Api, owner: Team, caller: str) -> Call:
    cid = held(api, owner.tenant_id, _holder(caller))
    body: dict[str, object] = {"name": _template(api, owner.tenant_id), "values": {"nome": "Ana"}}
    return _call(_conv("template").format(cid), body)


WORKSPACE: dict[tuple[str, str], Scenario] = {
    ("POST", "/v1/conversations/{conversation_id}/assign"): _scenario(
        200, _assign, on_a_resource=True
    ),
    ("POST", "/v1/conversations/{conversation_id}/messages"): _scenario(
        202, _reply, on_a_resource=True
    ),
    ("POST", "/v1/conversations/{conversation_id}/notes"): _scenario(
        201, _note, on_a_resource=True
    ),
    ("POST", "/v1/conversations/{conversation_id}/labels"): _scenario(
        200, _labels, on_a_resource=True
    ),
    ("POST", "/v1/conversations/{conversation_id}/transfer"): _scenario(
        200, _transfer, on_a_resource=True
    ),
    ("POST", "/v1/conversations/{conversation_id}/return-to-ai"): _scenario(
        200, _return, on_a_resource=True
    ),
    ("POST", "/v1/conversations/{conversation_id}/close"): _scenario(
        200, _close, on_a_resource=True
    ),
    ("POST", "/v1/conversations/{conversation_id}/reopen"): _scenario(
        200, _reopen, on_a_resource=True
    ),
    ("POST", "/v1/leads/{lead_id}/stage"): _scenario(200, _stage, on_a_resource=True),
    ("POST", "/v1/queues"): _scenario(201, _new_queue),
    ("PATCH", "/v1/queues/{queue_id}"): _scenario(200, _queue, on_a_resource=True),
    ("PUT", "/v1/me/availability"): _scenario(200, _availability, keys=False),
    ("PUT", "/v1/users/{user_id}/queues"): _scenario(200, _user_queues, on_a_resource=True),
    ("PUT", "/v1/canned-responses/{shortcut}"): _scenario(200, _save_canned),
    ("DELETE", "/v1/canned-responses/{shortcut}"): _scenario(204, _canned, on_a_resource=True),
    ("GET", "/v1/settings"): _scenario(200, _settings),
    ("PATCH", "/v1/settings"): _scenario(200, _patch_settings),
    ("GET", "/v1/templates"): _scenario(200, lambda api, owner, caller: _call("/v1/templates")),
    ("PUT", "/v1/templates/{name}"): _scenario(200, _put_template),
    ("DELETE", "/v1/templates/{name}"): _scenario(204, _delete_template, on_a_resource=True),
    ("POST", "/v1/conversations/{conversation_id}/template"): _scenario(
        202, _send_template, on_a_resource=True
    ),
}

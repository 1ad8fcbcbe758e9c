"""One conversation: the thread, the handoff on top, the lead's card, notes, the reply
box with WhatsApp's 24-hour window, and the actions (Assumir, Transferir, Devolver
para a IA, Encerrar, Reabrir).

Each action is one /v1 command; the screen drawn after it waits (briefly) until the
read models show its effect, so the attendant sees what they did and not the moment
before.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from urbana.adapters.http.panel.common import Api, fragment, may, page, team_of
from urbana.adapters.http.panel.session import PREFIX, OurForm, to
from urbana.adapters.http.panel.v1 import V1, Refused

router = APIRouter(prefix=PREFIX, include_in_schema=False)

MAX_TEXT = 4096
Text = Annotated[str, Form(min_length=1, max_length=MAX_TEXT)]
IdempotencyKey = Annotated[str, Form(max_length=200)]


async def _thread(v1: V1, cid: UUID, found: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the live part of the screen shows: the conversation, its lead and the team."""
    conversation = found or await v1.get(f"/conversations/{cid}")
    lead = await v1.get(f"/leads/{conversation['lead_id']}") if conversation["lead_id"] else None
    team, names = await team_of(v1)
    return {"c": conversation, "lead": lead, "names": names, "team": team}


async def _screen(
    request: Request,
    v1: V1,
    cid: UUID,
    found: dict[str, Any] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    me = await v1.get("/me")
    thread = await _thread(v1, cid, found)
    can = may(me)
    canned = await v1.get("/canned-responses") if can["work"] else []
    queues = await v1.get("/queues") if can["work"] else []
    return await page(
        request,
        v1,
        "conversation.html",
        status_code=status_code,
        me=me,
        canned=canned,
        queues=queues,
        error=error,
        idempotency_key=uuid.uuid4().hex,
        **thread,
    )


@router.get("/conversations/{cid}")
async def conversation(request: Request, v1: Api, cid: UUID) -> Response:
    return await _screen(request, v1, cid)


@router.get("/conversations/{cid}/fragment")
async def live_part(
    request: Request,
    v1: Api,
    cid: UUID,
    wait: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """The thread, redrawn when /v1/stream tells of an event of this conversation."""
    found, reached = (None, True) if wait is None else await v1.at_position(str(cid), wait)
    me = await v1.get("/me")
    thread = await _thread(v1, cid, found)
    return fragment(request, "_thread.html", behind=not reached, me=me, may=may(me), **thread)


async def _act(
    request: Request,
    v1: V1,
    cid: UUID,
    path: str,
    body: dict[str, Any] | None,
    shows: Any,
    idempotency_key: str | None = None,
) -> Response:
    """Run one command, then show the conversation once the read models caught up.

    A form's `idempotency_key` goes with the command, so that a double submit (or a
    retried post) runs it once.
    """
    headers = None if idempotency_key is None else {"Idempotency-Key": idempotency_key}
    try:
        answer = await v1.post(f"/conversations/{cid}{path}", body, headers=headers)
    except Refused as exc:
        return await _screen(request, v1, cid, error=exc.detail, status_code=exc.status)
    await v1.caught_up(str(cid), lambda c: bool(shows(c, answer)))
    return to(f"/conversations/{cid}")


def _state_is(c: dict[str, Any], answer: dict[str, Any]) -> bool:
    return bool(c["status"] == answer["status"] and c["assignee"] == answer["assignee"])


def _state_command(path: str) -> Callable[[Request, V1, UUID], Awaitable[Response]]:
    """A command with no form, done once the conversation shows its new state."""

    async def command(request: Request, v1: Api, cid: UUID) -> Response:
        return await _act(request, v1, cid, path, None, _state_is)

    return command


def _add_command(path: str, command: Callable[..., Awaitable[Response]], name: str) -> None:
    """Route a form's POST to the conversation's `path` (the panel's own forms only)."""
    router.add_api_route(
        f"/conversations/{{cid}}{path}",
        command,
        methods=["POST"],
        dependencies=[OurForm],
        name=name,
    )


# Assumir, Devolver para a IA, Encerrar, Reabrir.
for _path in ("/assign", "/return-to-ai", "/close", "/reopen"):
    _add_command(_path, _state_command(_path), _path[1:])


@router.post("/conversations/{cid}/transfer", dependencies=[OurForm])
async def transfer(
    request: Request,
    v1: Api,
    cid: UUID,
    target: Annotated[str, Form(max_length=200)],
    note: Annotated[str, Form(max_length=MAX_TEXT)] = "",
) -> Response:
    """`target` is `user:ID` or `queue:NAME` (one select lists both)."""
    kind, _, value = target.partition(":")
    body: dict[str, Any] = {"to_user": value} if kind == "user" else {"to_queue": value}
    if note.strip():
        body["note"] = note.strip()
    return await _act(request, v1, cid, "/transfer", body, _state_is)


def _reply_shown(c: dict[str, Any], answer: dict[str, Any]) -> bool:
    return any(answer["outbound_id"] in m["key"] for m in c["messages"])


def _note_shown(c: dict[str, Any], answer: dict[str, Any]) -> bool:
    return any(n["id"] == answer["note_id"] for n in c["notes"])


def _text_command(
    path: str, shown: Callable[[dict[str, Any], dict[str, Any]], bool]
) -> Callable[[Request, V1, UUID, str, str], Awaitable[Response]]:
    """A form of one text (sent once, by its idempotency key), done once `shown` sees it."""

    async def command(
        request: Request, v1: Api, cid: UUID, text: Text, idempotency_key: IdempotencyKey
    ) -> Response:
        return await _act(request, v1, cid, path, {"text": text}, shown, idempotency_key)

    return command


# The reply box, and a private note.
for _path, _name, _shown in (("/messages", "reply", _reply_shown), ("/notes", "note", _note_shown)):
    _add_command(_path, _text_command(_path, _shown), _name)


@router.post("/conversations/{cid}/labels", dependencies=[OurForm])
async def labels(
    request: Request,
    v1: Api,
    cid: UUID,
    add: Annotated[str, Form(max_length=200)] = "",
    remove: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    body = {"add": [add.strip()] if add.strip() else [], "remove": [remove] if remove else []}

    def shown(c: dict[str, Any], answer: dict[str, Any]) -> bool:
        return sorted(c["labels"]) == sorted(answer["labels"])

    return await _act(request, v1, cid, "/labels", body, shown)

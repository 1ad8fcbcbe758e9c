"""`urbana chat TENANT_ID`: talk to the tenant's bot from a terminal, as a lead would.

A client of a running Urbana's HTTP API, like the panel's Testar: each line goes to
`POST /v1/console/messages` (the console channel, the real path through the store, the
responder and the dispatcher), and the bot's answer is read back from
`GET /v1/console/conversations/{id}` once the dispatcher has sent it, with why it said
it: intent, confidence, the knowledge passages, a handoff's reason and summary.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TextIO

import httpx
import typer
from rich.markup import escape

from urbana.cli.common import DataDir, JsonOut, err, out, parse_tenant, refusals, settings_of

DEFAULT_URL = "http://127.0.0.1:8000"
POLL_S = 0.3
QUIT = frozenset({"/sair", "/quit", "/exit"})
NEW_SESSION = "/nova"
AUTHORS = {"ai": "bot", "system": "bot (sistema)", "human": "atendente"}


class ChatError(Exception):
    """The API refused or could not be reached: the message says what to do."""


class ConsoleClient:
    """The console routes of one Urbana API, as one tenant's admin."""

    def __init__(self, http: httpx.Client, *, timeout_s: float) -> None:
        self._http = http
        self._timeout_s = timeout_s

    def whoami(self) -> dict[str, Any]:
        me: dict[str, Any] = self._call("GET", "/v1/me")
        return me

    def say(self, text: str, session: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"text": text}
        if session is not None:
            body["session"] = session
        said: dict[str, Any] = self._call("POST", "/v1/console/messages", json=body)
        return said

    def answer(self, said: dict[str, Any]) -> dict[str, Any] | None:
        """The conversation once the bot's answer to `said` has left the dispatcher, or
        once it is clear none will come (a person holds it); None when time ran out."""
        deadline = time.monotonic() + self._timeout_s
        path = f"/v1/console/conversations/{said['conversation_id']}"
        while time.monotonic() < deadline:
            detail: dict[str, Any] | None = self._call("GET", path, missing_ok=True)
            if detail is not None and _settled(detail, said["seq"]):
                return detail
            time.sleep(POLL_S)
        return None

    def _call(self, method: str, path: str, *, json: Any = None, missing_ok: bool = False) -> Any:
        try:
            response = self._http.request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise ChatError(f"cannot reach the API at {self._http.base_url}: {exc}") from exc
        if response.status_code == 404 and missing_ok:
            return None  # not projected yet
        if response.status_code == 401:
            raise ChatError("not authenticated: check --api-key (or --email/--password)")
        if response.status_code == 403:
            raise ChatError("refused: `urbana chat` needs an admin of the tenant")
        if response.status_code >= 400:
            detail = response.json().get("detail") if _is_json(response) else response.text
            raise ChatError(f"{method} {path}: HTTP {response.status_code}: {detail}")
        return response.json()


def _settled(detail: dict[str, Any], seq: int) -> bool:
    """Whether the answer to inbound `seq` is all out: replies after it, none still queued,
    or none at all because a person holds the conversation (the bot stays silent)."""
    replies = replies_to(detail, seq)
    if replies is None:
        return False
    if not replies:
        return bool(detail["status"] in ("waiting_human", "human"))
    return all(m["status"] != "queued" for m in replies)


def _is_json(response: httpx.Response) -> bool:
    return "json" in response.headers.get("content-type", "")


def replies_to(detail: dict[str, Any], seq: int) -> list[dict[str, Any]] | None:
    """The outbound messages after inbound `seq` (None while `seq` is not projected)."""
    keys = [m["key"] for m in detail["messages"]]
    key = f"in:{seq}"
    if key not in keys:
        return None
    return [m for m in detail["messages"][keys.index(key) + 1 :] if m["direction"] == "out"]


def _login(http: httpx.Client, email: str, password: str) -> str:
    try:
        response = http.post("/v1/auth/login", json={"email": email, "password": password})
    except httpx.HTTPError as exc:
        raise ChatError(f"cannot reach the API at {http.base_url}: {exc}") from exc
    if response.status_code != 200:
        raise ChatError(f"login refused (HTTP {response.status_code})")
    token: str = response.json()["access_token"]
    return token


def _api_url(given: str | None, data_dir: Path) -> str:
    """--url / URBANA_API_URL, else the `api` of a running `urbana dev`, else localhost."""
    if given:
        return given.rstrip("/")
    services = data_dir / "services.json"
    if services.exists():
        api = json.loads(services.read_text()).get("api")
        if isinstance(api, str) and api:
            return api.rstrip("/")
    return DEFAULT_URL


def _show_turn(detail: dict[str, Any] | None, said: dict[str, Any], timeout_s: float) -> None:
    if detail is None:
        out.print(f"[yellow]no answer within {timeout_s:.0f} s[/]")
        return
    replies = replies_to(detail, said["seq"]) or []
    for message in replies:
        who = AUTHORS.get(message["author"], message["author"])
        status = "" if message["status"] == "sent" else f" [red]({message['status']})[/]"
        out.print(f"[bold cyan]{who}>[/] {escape(message['text'] or '')}{status}")
        if message["author"] == "ai":
            out.print(f"  [dim]{escape(explanation(message))}[/]")
    if detail["status"] in ("waiting_human", "human"):
        reason = detail.get("handoff_reason") or "-"
        out.print(f"  [magenta]handoff: {escape(reason)}[/]")
        if detail.get("handoff_summary"):
            out.print(f"  [dim]summary: {escape(detail['handoff_summary'])}[/]")
        if not replies:
            out.print("  [dim](a person holds the conversation: the bot stays silent)[/]")


def explanation(message: dict[str, Any]) -> str:
    """Why the bot said it: intent, confidence and the passages it was given."""
    confidence = message.get("confidence")
    parts = [
        f"intent: {message.get('intent') or '-'}",
        f"confidence: {confidence:.2f}" if isinstance(confidence, int | float) else "confidence: -",
    ]
    passages = message.get("passages") or []
    if passages:
        listed = "; ".join(
            f"{p.get('document') or p.get('document_id') or '?'} › {p['title']} "
            f"({p['similarity']:.2f})"
            for p in passages
        )
        parts.append(f"passages: {listed}")
    else:
        parts.append("passages: none")
    return " · ".join(parts)


def _turn_json(said: dict[str, Any], detail: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "conversation_id": said["conversation_id"],
        "session": said["session"],
        "seq": said["seq"],
        "answered": detail is not None,
        "status": detail["status"] if detail else None,
        "handoff_reason": detail.get("handoff_reason") if detail else None,
        "replies": (replies_to(detail, said["seq"]) or []) if detail else [],
    }


def _repl(
    client: ConsoleClient, lines: TextIO, *, session: str | None, as_json: bool, timeout_s: float
) -> None:
    interactive = lines.isatty()
    while True:
        if interactive:
            out.print("[bold green]você>[/] ", end="")
        line = lines.readline()
        if not line:
            return  # end of input
        text = line.strip()
        if not text:
            continue
        if text in QUIT:
            return
        if text == NEW_SESSION:
            session = None
            if not as_json:
                out.print("[dim]new session[/]")
            continue
        said = client.say(text, session)
        session = said["session"]
        detail = client.answer(said)
        if as_json:
            out.print(json.dumps(_turn_json(said, detail), ensure_ascii=False))
        else:
            _show_turn(detail, said, timeout_s)


def chat(
    ctx: typer.Context,
    tenant_id: Annotated[str, typer.Argument(help="The tenant whose bot to talk to")],
    url: Annotated[
        str | None,
        typer.Option(
            envvar="URBANA_API_URL",
            help=f"The API (default: the running `urbana dev` of --data-dir, else {DEFAULT_URL})",
            show_default=False,
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="URBANA_API_KEY", help="An admin API key of the tenant"),
    ] = None,
    email: Annotated[
        str | None, typer.Option(envvar="URBANA_EMAIL", help="Sign in as this admin instead")
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(envvar="URBANA_PASSWORD", help="The admin's password (asked if missing)"),
    ] = None,
    session: Annotated[
        str | None, typer.Option(help="Continue this console session (default: a new one)")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer")] = 60.0,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Talk to the tenant's bot as a lead would (one line, one message; /nova starts a new
    session, /sair or end of input quits), and see why it answered what it did."""
    tenant = parse_tenant(tenant_id)
    settings = settings_of(ctx, data_dir)
    base = _api_url(url, Path(settings.data_dir))
    with (
        httpx.Client(base_url=base, timeout=httpx.Timeout(15.0, connect=5.0)) as http,
        refusals(1, ChatError),
    ):
        if api_key is None:
            if email is None:
                err.print("give --api-key (URBANA_API_KEY) or --email (URBANA_EMAIL)")
                raise typer.Exit(2)
            secret = password or typer.prompt("password", hide_input=True, err=True)
            api_key = _login(http, email, secret)
        http.headers["Authorization"] = f"Bearer {api_key}"
        client = ConsoleClient(http, timeout_s=timeout)
        me = client.whoami()
        if me.get("tenant_id") != str(tenant):
            err.print(f"error: these credentials are of tenant {me.get('tenant_id')}")
            raise typer.Exit(1)
        if not as_json:
            out.print(f"[dim]talking to the bot of {tenant} at {base} (/sair to quit)[/]")
        _repl(client, sys.stdin, session=session, as_json=as_json, timeout_s=timeout)

"""The other screens: leads as a Kanban by stage, KPIs per day, and the admin's settings."""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from urbana.adapters.http.panel.common import Api, page
from urbana.adapters.http.panel.session import PREFIX, OurForm, to
from urbana.adapters.http.panel.v1 import V1, Refused
from urbana.adapters.http.panel.views import STAGES
from urbana.domain.lead import DEFAULT_THRESHOLDS
from urbana.domain.reply import DEFAULT_MESSAGES

router = APIRouter(prefix=PREFIX, include_in_schema=False)

KPI_DAYS = 14
# The settings the form edits (the rest keep their values: PATCH changes only these).
NUMBERS = {"confidence_threshold": float, "hot_score": int, "debounce_ms": int}
# The bot's messages a tenant may reword (domain.reply's), as the form names them.
MESSAGE_LABELS = {
    "handoff": "Mensagem ao transferir para uma pessoa",
    "expect_queue": "Mensagem de espera na fila",
    "expect_closed": "Mensagem fora do horário ({abertura}: quando abre)",
    "fallback": "Mensagem quando a IA não consegue responder",
    "greeting": "Resposta a um cumprimento (sem IA configurada)",
    "follow_up": "Mensagem de retomada a um lead que parou de responder",
    "outside_window": "Aviso ao atendente: janela de 24 horas fechada",
}
MESSAGE_KEYS = tuple(MESSAGE_LABELS)


@router.get("/leads")
async def leads(request: Request, v1: Api) -> Response:
    found = (await v1.get("/leads", limit=200))["items"]
    columns = {stage: [lead for lead in found if lead["stage"] == stage] for stage in STAGES}
    return await page(request, v1, "leads.html", columns=columns)


@router.post("/leads/{lead_id}/stage", dependencies=[OurForm])
async def move(
    v1: Api, lead_id: UUID, stage: Annotated[str, Form(pattern="^(new|engaged|qualified|hot)$")]
) -> Response:
    with suppress(Refused):  # already in that stage: the board shows it there
        await v1.post(f"/leads/{lead_id}/stage", {"stage": stage})
    await v1.until(f"/leads/{lead_id}", lambda lead: lead["stage"] == stage)
    return to("/leads")


def _bars(days: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """One bar per day, scaled to the largest value, for an inline SVG chart."""
    values = [float(d.get(key) or 0) for d in days]
    top = max(values, default=0.0) or 1.0
    return [
        {"day": d["day"][5:], "value": v, "height": round(100 * v / top)}
        for d, v in zip(days, values, strict=True)
    ]


@router.get("/kpis")
async def kpis(request: Request, v1: Api) -> Response:
    today = datetime.now(UTC).date()
    first = today - timedelta(days=KPI_DAYS - 1)
    report = await v1.get("/kpis", **{"from": first.isoformat(), "to": today.isoformat()})
    days = report["days"]
    for d in days:
        d["frt_ai"] = d["first_response_ai"]["p50_s"]
        d["frt_human"] = d["first_response_human"]["p50_s"]
        d["handoff_pct"] = round(100 * (d["handoff_rate"] or 0))
        d["ai_resolution_pct"] = round(100 * (d["ai_resolution_rate"] or 0))
    charts = {
        "Conversas por dia": _bars(days, "conversations"),
        "Primeira resposta da IA (mediana, s)": _bars(days, "frt_ai"),
        "Primeira resposta humana (mediana, s)": _bars(days, "frt_human"),
        "Taxa de transferência (%)": _bars(days, "handoff_pct"),
        "Resolução pela IA (%)": _bars(days, "ai_resolution_pct"),
        "Custo (US$)": _bars(days, "cost_usd"),
    }
    return await page(request, v1, "kpis.html", report=report, charts=charts)


async def _settings_screen(
    request: Request,
    v1: V1,
    *,
    error: str | None = None,
    saved: bool = False,
    done_status: int = 200,
    **context: Any,
) -> Response:
    """The settings screen as they are now (the settings, the Telegram target, the
    users), after what was just asked: `done_status` when it went through, else 422."""
    return await page(
        request,
        v1,
        "settings.html",
        status_code=done_status if error is None else 422,
        MESSAGE_LABELS=MESSAGE_LABELS,
        DEFAULTS=DEFAULT_MESSAGES,
        s=await v1.get("/settings"),
        telegram=await v1.get("/settings/telegram"),
        users=(await v1.get("/users"))["items"],
        saved=saved,
        error=error,
        **context,
    )


@router.get("/settings")
async def settings(request: Request, v1: Api) -> Response:
    return await _settings_screen(request, v1)


@router.post("/settings", dependencies=[OurForm])
async def save_settings(request: Request, v1: Api) -> Response:
    form = await request.form()
    changes: dict[str, Any] = {}
    prompt = str(form.get("prompt", "")).strip()
    # An empty box clears a prompt there is; with none, there is nothing to send.
    if prompt or (await v1.get("/settings"))["prompt"]:
        changes["prompt"] = prompt
    error = None
    try:
        for key, kind in NUMBERS.items():
            changes[key] = kind(str(form.get(key, "")))
    except ValueError:
        error = "Use números nos limites."
    try:
        changes["stage_thresholds"] = {
            stage: int(str(form.get(f"stage_{stage}", ""))) for stage in DEFAULT_THRESHOLDS
        }
    except ValueError:
        error = "Use números nos limites."
    intents = str(form.get("handoff_intents", ""))
    changes["handoff_intents"] = [i.strip() for i in intents.split(",") if i.strip()]
    messages = {k: str(form.get(f"message_{k}", "")).strip() for k in MESSAGE_KEYS}
    changes["bot_messages"] = {k: v for k, v in messages.items() if v}
    saved = False
    if error is None:
        try:
            await v1.call("PATCH", "/settings", json=changes)
            saved = True
        except Refused as exc:
            error = exc.detail
    return await _settings_screen(request, v1, error=error, saved=saved)


@router.post("/users", dependencies=[OurForm])
async def add_user(
    request: Request,
    v1: Api,
    email: Annotated[str, Form(max_length=254)],
    role: Annotated[str, Form(pattern="^(attendant|supervisor|analyst|auditor|admin)$")],
    name: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    made: dict[str, Any] | None = None
    error: str | None = None
    try:
        made = await v1.post("/users", {"email": email, "role": role, "name": name})
    except Refused as exc:
        error = exc.detail
    return await _settings_screen(request, v1, error=error, done_status=201, created=made)


@router.post("/settings/telegram", dependencies=[OurForm])
async def save_telegram(
    request: Request,
    v1: Api,
    chat_id: Annotated[str, Form(max_length=64)] = "",
    bot_token: Annotated[str, Form(max_length=200)] = "",
    action: Annotated[str, Form(pattern="^(save|off)$")] = "save",
) -> Response:
    """The chat and (write-only) token of the handoff notices, or turning them off."""
    error = None
    try:
        if action == "off":
            await v1.call("DELETE", "/settings/telegram")
        else:
            body = {"chat_id": chat_id.strip(), "bot_token": bot_token.strip() or None}
            await v1.call("PUT", "/settings/telegram", json=body)
    except Refused:
        error = (
            "Telegram: informe o ID do chat (número, ou @canal) e, na primeira vez, o token "
            "do bot como o @BotFather o deu."
        )
    return await _settings_screen(request, v1, error=error, saved=error is None)

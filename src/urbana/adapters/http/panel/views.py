"""What the panel's templates show: the Jinja2 environment and its Portuguese wording.

Autoescape is on for every template: message text is the lead's, and arrives here as
it was typed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).parent
SERVICE_WINDOW = timedelta(hours=24)  # WhatsApp's customer-service window

AUTHORS = {"lead": "Lead", "ai": "IA", "human": "Atendente", "system": "Sistema"}
STATUSES = {
    "ai": "Com a IA",
    "waiting_human": "Aguardando atendente",
    "human": "Em atendimento",
    "closed": "Encerrada",
}
STAGES = {"new": "Novo", "engaged": "Engajado", "qualified": "Qualificado", "hot": "Quente"}
AVAILABILITY = {"online": "Disponível", "away": "Ausente", "offline": "Offline"}
ROLES = {
    "attendant": "atendente",
    "supervisor": "supervisor",
    "analyst": "analista",
    "auditor": "auditor",
    "admin": "administrador",
}
REASONS = {
    "explicit_request": "O lead pediu uma pessoa",
    "lead_request": "O lead pediu uma pessoa",
    "llm_requested": "A IA pediu ajuda",
    "handoff_intent": "Assunto tratado por pessoas",
    "low_confidence": "Confiança baixa da IA",
    "hot_lead": "Lead quente",
    "llm_failure": "A IA falhou",
    "no_answer": "A IA não tinha resposta",
    "complaint": "Reclamação",
    "out_of_scope": "Fora do escopo",
    "sensitive": "Assunto sensível",
    "purchase_ready": "Pronto para comprar",
    "inactivity": "Atendente inativo",
    "other": "Outro motivo",
    # The reply guard's refusals (domain.guard)
    "input_too_long": "Mensagem longa demais para a IA",
    "prompt_injection": "Tentativa de manipular a IA",
    "encoded_payload": "Conteúdo codificado",
    "empty_reply": "A IA não respondeu",
    "reply_too_long": "Resposta da IA longa demais",
    "prompt_leak": "A IA ia revelar instruções",
    "off_topic": "Fora do assunto",
    "unsupported_price": "Preço sem base no conhecimento",
    "unsupported_discount": "Desconto sem base no conhecimento",
    "unsupported_deadline": "Prazo sem base no conhecimento",
}
FAILURES = {
    "outside_window": "fora da janela de 24 horas",
    "horizon": "o WhatsApp não aceitou a tempo",
}
# Delivery ticks: the symbol, and what a screen reader says instead. Symbols are from
# the plain-text blocks common fonts hold (an emoji clock shows as a box without an
# emoji font).
TICKS = {
    "queued": ("◷", "na fila"),
    "sending": ("◷", "enviando"),
    "sent": ("✓", "enviada"),
    "delivered": ("✓✓", "entregue"),
    "read": ("✓✓", "lida"),
    "failed": ("⚠", "não enviada"),
    "cancelled": ("⊘", "cancelada"),
}


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def hhmm(value: str | None) -> str:
    """A time as HH:MM UTC, until the browser shows it in its own zone."""
    at = parse_time(value)
    return at.astimezone(UTC).strftime("%d/%m %H:%M") if at else ""


def window_deadline(last_inbound_at: str | None) -> datetime | None:
    """When the 24-hour window closes, from the lead's last message (None: never opened)."""
    at = parse_time(last_inbound_at)
    return at + SERVICE_WINDOW if at else None


def window_open(last_inbound_at: str | None, now: datetime | None = None) -> bool:
    deadline = window_deadline(last_inbound_at)
    return deadline is not None and (now or datetime.now(UTC)) < deadline


def percent(value: float | None) -> str:
    return "" if value is None else f"{round(value * 100)}%"


def label(mapping: dict[str, str], key: str | None) -> str:
    return mapping.get(key or "", key or "")


def build_templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    helpers: dict[str, Any] = {
        "AUTHORS": AUTHORS,
        "STATUSES": STATUSES,
        "STAGES": STAGES,
        "AVAILABILITY": AVAILABILITY,
        "ROLES": ROLES,
        "REASONS": REASONS,
        "TICKS": TICKS,
        "FAILURES": FAILURES,
        "word": label,
        "window_deadline": window_deadline,
        "window_open": window_open,
    }
    env.globals.update(helpers)
    env.filters.update(hhmm=hhmm, percent=percent)
    return Jinja2Templates(env=env)


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """Draw a template with the app's environment (made once, in `install`)."""
    templates: Jinja2Templates = request.app.state.panel_templates
    return templates.TemplateResponse(
        request, template, context, status_code=status_code, headers=headers
    )

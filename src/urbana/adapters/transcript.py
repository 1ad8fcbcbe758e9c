"""A subject export rendered for people: a Portuguese transcript (HTML) and the JSON document.

The HTML puts the lead's data on top, then each conversation as the lead saw it (who
wrote what, when), then every event of the export in order, so the page alone answers
an access request in full. Jinja2 with autoescape on: every value is the subject's or a
gateway's text, never markup.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from jinja2 import Environment, select_autoescape
from markupsafe import Markup, escape

from urbana.application.privacy import ExportedEvent, SubjectExport

AUTHORS = {"lead": "Cliente", "ai": "Assistente virtual", "human": "Atendente", "system": "Sistema"}
CHANNEL_NAMES = {
    "cloud": "WhatsApp (Cloud API)",
    "evolution": "WhatsApp (Evolution API)",
    "zapi": "WhatsApp (Z-API)",
    "console": "Console",
}
# What a conversation's other events read as in the transcript (one line each).
NOTICES = {
    "ConversationStarted": "Conversa iniciada",
    "HandoffRequested": "Transferida para atendimento humano",
    "ConversationAssigned": "Atribuída a um atendente",
    "ConversationTransferred": "Transferida",
    "ReturnedToAI": "Devolvida ao assistente virtual",
    "ReturnedToQueue": "Devolvida à fila",
    "ConversationClosed": "Conversa encerrada",
    "ConversationReopened": "Conversa reaberta",
}

_TEMPLATE = """<!doctype html>
<html lang="pt-BR">
<head>
<meta charset="utf-8">
<title>Dados do titular {{ subject.lead_id }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: .2rem .6rem; vertical-align: top; }
.msg { margin: .4rem 0; padding: .4rem .6rem; border-radius: .4rem; background: #f3f3f3; }
.msg.lead { background: #e7f4e4; }
.notice { color: #666; font-style: italic; margin: .4rem 0; }
.events td { font-size: .8rem; border-top: 1px solid #ddd; }
pre { white-space: pre-wrap; margin: 0; }
</style>
</head>
<body>
<h1>Exportação dos dados do titular</h1>
<p>Relatório gerado em {{ exported_at }} por {{ export.exported_by }} ({{ export.role }}).
{% if export.purpose %}Finalidade: {{ export.purpose }}.{% endif %}</p>
<h2>Dados do titular</h2>
<table>
<tr><th>Identificador</th><td>{{ subject.lead_id }}</td></tr>
<tr><th>Nome</th><td>{{ subject.name or "—" }}</td></tr>
<tr><th>Telefone</th><td>{{ subject.phone or "—" }}</td></tr>
<tr><th>Chave de contato</th><td>{{ subject.key }}</td></tr>
<tr><th>Pontuação</th><td>{{ subject.score }}</td></tr>
<tr><th>Estágio</th><td>{{ subject.stage }}</td></tr>
<tr><th>Primeiro contato</th><td>{{ subject.created_at | when }}</td></tr>
{% if subject.erased %}<tr><th>Situação</th><td>Dados pessoais eliminados</td></tr>{% endif %}
</table>
{% for conversation in conversations %}
<h2>Conversa {{ loop.index }}: {{ conversation.channel }}</h2>
<p>Contato: {{ conversation.contact }} · {{ conversation.lines | length }} registros</p>
{% for line in conversation.lines %}{{ line }}
{% endfor %}
{% else %}
<p>Nenhuma conversa registrada.</p>
{% endfor %}
<h2>Todos os eventos ({{ event_rows | length }})</h2>
<table class="events">
<tr><th>Posição</th><th>Quando</th><th>Fluxo</th><th>Tipo</th><th>Versão</th><th>Dados</th></tr>
{% for row in event_rows %}{{ row }}
{% endfor %}
</table>
</body>
</html>
"""


def _when(value: Any) -> str:
    """An ISO time as Brazilians read it (UTC, said so)."""
    text = str(value)
    # The store's times are UTC ISO 8601: cut, rather than parse, 10,000 of them.
    if len(text) >= 19 and text[10] == "T" and text.endswith(("+00:00", "Z")):
        return f"{text[8:10]}/{text[5:7]}/{text[:4]} {text[11:19]} UTC"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%d/%m/%Y %H:%M:%S") + " UTC"


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()


def _environment() -> Environment:
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["when"] = _when
    return env


def _line(e: ExportedEvent) -> Markup | None:
    """What one conversation event reads as in the transcript, escaped; None: not shown.

    Lines and event rows are escaped here (markupsafe, as the template's autoescape does)
    rather than composed in the template: 10,000 of them through the template's
    attribute lookups cost more than the rest of the export.
    """
    data = e.data
    if e.type == "MessageReceived":
        text = data.get("text") or f"[{data.get('kind')}] {data.get('media_url') or ''}".strip()
        return _message("lead", AUTHORS["lead"], data.get("sent_at"), text)
    if e.type == "OutboundMessageQueued":
        author = str(data.get("author"))
        return _message(author, AUTHORS.get(author, author), e.occurred_at, data.get("text"))
    if e.type == "NoteAdded":
        return _message("note", "Nota interna", e.occurred_at, data.get("text"))
    notice = NOTICES.get(e.type)
    if notice is None:
        return None
    reason = data.get("reason") or data.get("resolution")
    text = f"{notice} ({reason})" if reason else notice
    # S704: every value in these f-strings is escaped (or an int) where it is put.
    return Markup(f'<p class="notice">{escape(_when(e.occurred_at))} — {escape(text)}</p>')  # noqa: S704


def _message(css: str, author: str, at: Any, text: Any) -> Markup:
    return Markup(  # noqa: S704 (every value escaped)
        f'<div class="msg {escape(css)}"><strong>{escape(author)}</strong> '
        f"<small>{escape(_when(at))}</small><br>{escape(text)}</div>"
    )


def _row(e: ExportedEvent) -> Markup:
    return Markup(  # noqa: S704 (every value escaped, or an int)
        f"<tr><td>{e.position}</td><td>{escape(_when(e.occurred_at))}</td>"
        f"<td>{escape(e.aggregate)} {escape(e.stream_id)} #{e.stream_version}</td>"
        f"<td>{escape(e.type)}</td><td>{e.schema_version}</td>"
        f"<td><pre>{escape(_json_text(e.data))}</pre></td></tr>"
    )


class TranscriptRenderer:
    """Renders exports; one per process (the template is compiled once)."""

    def __init__(self) -> None:
        self._template = _environment().from_string(_TEMPLATE)

    def html(self, export: SubjectExport) -> str:
        """The export as a Portuguese conversation transcript (a whole HTML page)."""
        by_stream: dict[str, list[Markup]] = {}
        for e in export.events:
            if e.aggregate == "Conversation":
                line = _line(e)
                if line is not None:
                    by_stream.setdefault(e.stream_id, []).append(line)
        conversations = [
            {
                "channel": CHANNEL_NAMES.get(c.channel, c.channel),
                "contact": c.contact,
                "lines": by_stream.get(str(c.id), []),
            }
            for c in export.subject.conversations
        ]
        return self._template.render(
            export=export,
            subject=export.subject,
            exported_at=_when(export.exported_at.isoformat()),
            conversations=conversations,
            event_rows=[_row(e) for e in export.events],
        )


def export_json(export: SubjectExport) -> bytes:
    """The export as its portable JSON document."""
    return orjson.dumps(export.as_dict(), default=str)

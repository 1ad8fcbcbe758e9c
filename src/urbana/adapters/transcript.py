"""A subject export rendered for people: a Portuguese transcript (HTML) and the JSON document.

The HTML puts the lead's data on top, then each conversation as the lead saw it (who
wrote what, when), then every event of the export in order, so the page alone answers
an access request in full. Jinja2 with autoescape on: every value is the subject's or a
gateway's text, never markup.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from jinja2 import Environment, select_autoescape

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
{% for line in conversation.lines %}
{% if line.author %}
<div class="msg {{ line.css }}"><strong>{{ line.author }}</strong>
<small>{{ line.at | when }}</small><br>{{ line.text }}</div>
{% else %}
<p class="notice">{{ line.at | when }} — {{ line.text }}</p>
{% endif %}
{% endfor %}
{% else %}
<p>Nenhuma conversa registrada.</p>
{% endfor %}
<h2>Todos os eventos ({{ events | length }})</h2>
<table class="events">
<tr><th>Posição</th><th>Quando</th><th>Fluxo</th><th>Tipo</th><th>Versão</th><th>Dados</th></tr>
{% for e in events %}
<tr><td>{{ e.position }}</td><td>{{ e.occurred_at | when }}</td>
<td>{{ e.aggregate }} {{ e.stream_id }} #{{ e.stream_version }}</td><td>{{ e.type }}</td>
<td>{{ e.schema_version }}</td><td><pre>{{ e.data | tojson_text }}</pre></td></tr>
{% endfor %}
</table>
</body>
</html>
"""


def _when(value: Any) -> str:
    """An ISO time as Brazilians read it (UTC, said so)."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return moment.strftime("%d/%m/%Y %H:%M:%S") + " UTC"


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()


def _environment() -> Environment:
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["when"] = _when
    env.filters["tojson_text"] = _json_text
    return env


def _line(e: ExportedEvent) -> dict[str, Any] | None:
    """What one conversation event reads as in the transcript, or None (not shown)."""
    data = e.data
    if e.type == "MessageReceived":
        text = data.get("text") or f"[{data.get('kind')}] {data.get('media_url') or ''}".strip()
        return {"author": AUTHORS["lead"], "css": "lead", "at": data.get("sent_at"), "text": text}
    if e.type == "OutboundMessageQueued":
        author = str(data.get("author"))
        return {
            "author": AUTHORS.get(author, author),
            "css": author,
            "at": e.occurred_at,
            "text": data.get("text"),
        }
    if e.type == "NoteAdded":
        return {
            "author": "Nota interna",
            "css": "note",
            "at": e.occurred_at,
            "text": data.get("text"),
        }
    notice = NOTICES.get(e.type)
    if notice is None:
        return None
    reason = data.get("reason") or data.get("resolution")
    text = f"{notice} ({reason})" if reason else notice
    return {"author": None, "css": "", "at": e.occurred_at, "text": text}


class TranscriptRenderer:
    """Renders exports; one per process (the template is compiled once)."""

    def __init__(self) -> None:
        self._template = _environment().from_string(_TEMPLATE)

    def html(self, export: SubjectExport) -> str:
        """The export as a Portuguese conversation transcript (a whole HTML page)."""
        by_stream: dict[str, list[dict[str, Any]]] = {}
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
            events=export.events,
        )


def export_json(export: SubjectExport) -> bytes:
    """The export as its portable JSON document."""
    return orjson.dumps(export.as_dict(), default=str)

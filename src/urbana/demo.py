"""`urbana demo`: scripted lead conversations on the embedded stack, events printed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from rich.console import Console
from rich.table import Table

from urbana.adapters.bootstrap import master_key_for
from urbana.adapters.embedded import EmbeddedStack
from urbana.adapters.postgres.store import Store, open_store
from urbana.application.app import ReceiveMessage, RecordStatus
from urbana.application.channels import DeliveryStatus, InboundMessage, StatusUpdate
from urbana.application.gateways import gateway_config
from urbana.config import Settings


def _inbound(provider_id: str, contact: str, text: str, minutes: int, **kw: Any) -> InboundMessage:
    phone = kw.pop("phone", None if contact.endswith("@lid") else contact)
    return InboundMessage(
        provider_message_id=provider_id,
        contact=contact,
        phone=phone,
        sent_at=datetime.now(UTC) - timedelta(minutes=minutes),
        kind=kw.pop("kind", "text"),
        text=text,
        **kw,
    )


def play(store: Store, console: Console) -> dict[str, UUID]:
    """Three leads: a question answered, a handoff and back, a redelivered webhook."""
    app = store.app
    tenant_id, _ = app.register_tenant("Imobiliária Demo")
    app.connect_channel(tenant_id, gateway_config("console", {"name": "demo"}))
    maria = "5511988887777"
    maria_old_format = "551188887777"  # same person, without the ninth digit
    first = app.receive_message(
        ReceiveMessage(
            tenant_id,
            "console",
            _inbound(
                "wamid.M1",
                maria,
                "Oi! Vocês têm apartamento de 2 quartos na Vila Mariana?",
                9,
                contact_name="Maria Souza",
            ),
        )
    )
    conv = first.conversation_id
    reply = app.record_ai_reply(
        conv,
        reply_to_seq=first.seq,
        text="Temos sim! O Residencial Jardins tem unidades de 2 quartos a partir de R$ 520 mil.",
        intent="property_search",
        confidence=0.91,
        usage={"model": "scripted", "tokens_in": 0, "tokens_out": 0},
        score_delta=15,
    )
    app.mark_sent(conv, reply, "console.out.1")
    app.record_statuses(
        [
            RecordStatus(
                tenant_id,
                "console",
                StatusUpdate("console.out.1", DeliveryStatus.READ, datetime.now(UTC)),
            ),
            RecordStatus(
                tenant_id,
                "console",
                StatusUpdate("console.out.1", DeliveryStatus.DELIVERED, datetime.now(UTC)),
            ),
        ]
    )
    second = app.receive_message(
        ReceiveMessage(
            tenant_id,
            "console",
            _inbound(
                "wamid.M2",
                maria_old_format,
                "Quero falar com um atendente, por favor",
                5,
                phone=maria_old_format,
            ),
        )
    )
    app.request_handoff(
        second.conversation_id,
        reason="explicit_request",
        summary="Lead quer 2 quartos na Vila Mariana; pediu atendente.",
    )
    app.accept_handoff(conv, attendant="ana@imobiliaria")
    app.attendant_reply(
        conv,
        attendant="ana@imobiliaria",
        text="Olá Maria, aqui é a Ana! Posso agendar uma visita amanhã às 10h?",
    )
    app.return_to_ai(conv)

    joao = app.receive_message(
        ReceiveMessage(
            tenant_id,
            "console",
            _inbound(
                "wamid.J1",
                "98765432109876@lid",
                "Qual o horário de atendimento?",
                3,
                contact_name="João",
            ),
        )
    )
    redelivered = app.receive_message(
        ReceiveMessage(
            tenant_id,
            "console",
            _inbound(
                "wamid.J1",
                "98765432109876@lid",
                "Qual o horário de atendimento?",
                3,
                contact_name="João",
            ),
        )
    )
    console.print(f"redelivered webhook wamid.J1 -> duplicate={redelivered.duplicate}")
    app.close_conversation(joao.conversation_id, by="ana@imobiliaria")
    return {
        "tenant": tenant_id,
        "maria conversation": conv,
        "maria lead": first.lead_id,
        "joão conversation": joao.conversation_id,
        "joão lead": joao.lead_id,
    }


def print_streams(store: Store, streams: dict[str, UUID], console: Console) -> None:
    for label, stream_id in streams.items():
        table = Table(title=f"{label}  {stream_id}", title_justify="left", expand=False)
        table.add_column("v", justify="right")
        table.add_column("event")
        table.add_column("data (decrypted)")
        for event in store.app.stream(stream_id):
            data = {
                k: v
                for k, v in vars(event).items()
                if k not in ("originator_id", "originator_version", "timestamp", "originator_topic")
            }
            table.add_row(
                str(event.originator_version),
                type(event).__qualname__.split(".")[-1],
                ", ".join(f"{k}={v}" for k, v in data.items() if v not in (None, {}, [])),
            )
        console.print(table)


def run_demo(data_dir: Path, console: Console) -> None:
    with EmbeddedStack(data_dir) as stack:
        urls = stack.start()
        console.print(f"postgres: {urls.postgres}")
        key = master_key_for(Settings(data_dir=data_dir))
        # A fresh schema per run: the script starts from an empty store every time.
        store = open_store(urls.postgres, key, schema=f"demo_{uuid4().hex[:8]}")
        try:
            streams = play(store, console)
            print_streams(store, streams, console)
        finally:
            store.close()
    console.print("demo finished")

"""`urbana demo`: the whole loop on the embedded default, narrated.

Starts PostgreSQL, the Kafka-protocol broker and Redis, runs the API with every
background role (relay, projector, AI responder, dispatcher) in this process, and
plays a few leads through signed WhatsApp Cloud API webhooks over HTTP. The AI is
the offline retrieval responder (local multilingual embeddings over the tenant's
knowledge base); replies go out through the console channel. Then it prints the
read models, the KPIs and one conversation's event stream (decrypted).

The API and the script share one event loop, so the script calls the (synchronous)
event store only from worker threads, as the API does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import uvicorn
from rich.console import Console
from rich.table import Table

from urbana.adapters.embedded import EmbeddedStack, ServiceUrls
from urbana.adapters.http.app import create_app
from urbana.adapters.postgres.store import Store
from urbana.adapters.runtime import ROLES
from urbana.application.app import UrbanaApp
from urbana.application.gateways import gateway_config
from urbana.config import Settings, conninfo
from urbana.domain.conversation import Conversation
from urbana.projections import queries

PNID = "100000000000001"
KNOWLEDGE = {
    "atendimento.md": """# Horário de atendimento
Atendemos de segunda a sexta, das 8h às 18h, e aos sábados das 9h às 13h.

# Endereço
Nossa loja fica na Rua Augusta, 1500, em São Paulo.
""",
    "entregas.md": """# Entregas
Entregamos em toda a cidade de São Paulo em até 2 dias úteis. O frete é grátis
para compras acima de R$ 200.
""",
}


def _webhook(wa_id: str, name: str, text: str, wamid: str) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "5511933334444", "phone_number_id": PNID},
            "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
            "messages": [{"from": wa_id, "id": wamid, "timestamp": str(int(time.time())),
                          "type": "text", "text": {"body": text}}],
        }}]}],
    }  # fmt: skip


class Demo:
    def __init__(self, console: Console, api: str, store: Store, secret: str) -> None:
        self.console = console
        self.api = api
        self.store = store
        self.secret = secret
        self.http = httpx.AsyncClient(timeout=10)

    async def say(self, wa_id: str, name: str, text: str, wamid: str | None = None) -> str:
        wamid = wamid or f"wamid.{uuid4().hex}"
        body = json.dumps(_webhook(wa_id, name, text, wamid)).encode()
        signature = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        r = await self.http.post(
            f"{self.api}/webhooks/whatsapp-cloud",
            content=body,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
        )
        self.console.print(
            f"[bold]{name}[/] ({wa_id}): {text}  [dim]-> HTTP {r.status_code} {r.text}[/]"
        )
        r.raise_for_status()
        return wamid

    def events(self, conversation_id: UUID) -> list[str]:
        """The stream's event names; it reads the store: call it from a worker thread."""
        return [type(e).__qualname__.split(".")[-1] for e in self.store.app.stream(conversation_id)]

    async def until(self, what: str, check: Callable[[], bool], within: float = 60) -> None:
        deadline = time.monotonic() + within
        while not await asyncio.to_thread(check):
            if time.monotonic() > deadline:
                raise TimeoutError(f"demo: timed out waiting for {what}")
            await asyncio.sleep(0.1)

    async def sent(self, conversation_id: UUID, count: int) -> None:
        await self.until(
            f"{count} message(s) sent",
            lambda: self.events(conversation_id).count("OutboundMessageSent") >= count,
        )


async def _script(demo: Demo, tenant_id: UUID) -> tuple[UUID, UUID]:
    c = demo.console
    app = demo.store.app
    maria, joao = "5511988887777", "5521977776666"
    maria_conv = Conversation.create_id(tenant_id, "cloud", maria)
    joao_conv = Conversation.create_id(tenant_id, "cloud", joao)

    c.rule("1. A question the knowledge base answers")
    wamid = await demo.say(maria, "Maria Souza", "Olá! Qual o horário de atendimento?")
    await demo.sent(maria_conv, 1)

    c.rule("2. The gateway redelivers the same webhook three times")
    for _ in range(3):
        await demo.say(maria, "Maria Souza", "Olá! Qual o horário de atendimento?", wamid)

    c.rule("3. The same person, without the ninth digit: same lead, same conversation")
    await demo.say("551188887777", "Maria Souza", "E qual é o endereço da loja?")
    await demo.sent(maria_conv, 2)

    c.rule("4. A lead asks for a person: handoff")
    await demo.say(joao, "João Lima", "Quero falar com um atendente, por favor")
    await demo.until("the handoff", lambda: "HandoffRequested" in demo.events(joao_conv))
    await demo.sent(joao_conv, 1)

    c.rule("5. An attendant takes over, replies, and gives it back to the AI")
    await asyncio.to_thread(app.accept_handoff, joao_conv, attendant="ana@loja")
    await asyncio.to_thread(
        app.attendant_reply, joao_conv, attendant="ana@loja",
        text="Oi João, aqui é a Ana! Já separei o seu pedido.",
    )  # fmt: skip
    await demo.sent(joao_conv, 2)
    await demo.say(joao, "João Lima", "Obrigado, Ana!")
    await asyncio.sleep(1.0)  # in human mode the AI stays silent
    await asyncio.to_thread(app.return_to_ai, joao_conv)

    c.rule("6. Back with the AI")
    await demo.say(joao, "João Lima", "Vocês entregam em toda a cidade de São Paulo?")
    await demo.until(
        "the AI's answer",
        lambda: demo.events(joao_conv)[-1] in ("OutboundMessageSent", "HandoffRequested"),
    )
    await asyncio.sleep(1.0)
    return maria_conv, joao_conv


async def _read_models(
    demo: Demo, settings: Settings, tenant_id: UUID, streams: tuple[UUID, UUID]
) -> None:
    c = demo.console
    url = conninfo(settings.database_url or "", settings.database_schema)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while True:  # the projector consumes asynchronously: wait until it caught up
            convs = (
                await queries.list_conversations(conn, tenant_id, cipher=demo.store.cipher)
            ).items
            detail = await queries.get_conversation(
                conn, tenant_id, streams[1], cipher=demo.store.cipher
            )
            conversation = await asyncio.to_thread(demo.store.app.get, Conversation, streams[1])
            if (
                len(convs) == 2
                and detail
                and detail.conversation.status == conversation.status.value
            ):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("demo: read models did not catch up")
            await asyncio.sleep(0.2)
        leads = (await queries.list_leads(conn, tenant_id, cipher=demo.store.cipher)).items
        today = datetime.now(UTC).date()
        kpis = await queries.kpis_by_day(conn, tenant_id, date(today.year, 1, 1), today)

    c.rule("Read model: conversations")
    table = Table("status", "assignee", "unread", "last message")
    for item in convs:
        table.add_row(
            item.status, item.assignee or "-", str(item.unread), item.last_message_preview or ""
        )
    c.print(table)
    c.rule("Read model: messages of João's conversation")
    table = Table("dir", "author", "status", "text")
    for m in detail.messages if detail else []:
        table.add_row(m.direction, m.author, m.status or "-", (m.text or "")[:70])
    c.print(table)
    c.rule("Read model: lead pipeline")
    table = Table("name", "stage", "score")
    for lead in leads:
        table.add_row(lead.name or "-", lead.stage, str(lead.score))
    c.print(table)
    c.rule("KPIs (today)")
    table = Table("day", "counters", "first response", "handoff rate", "cost US$")
    for day in kpis:
        table.add_row(
            str(day.day),
            ", ".join(f"{k}={v}" for k, v in day.counts.items() if v and not k.startswith("frt")),
            ", ".join(f"{k}: {v}" for k, v in day.first_response.items() if v),
            f"{day.handoff_rate:.0%}" if day.handoff_rate is not None else "-",
            str(day.cost_usd),
        )
    c.print(table)


_HIDDEN = ("originator_id", "originator_version", "timestamp", "originator_topic", "lead_id")


async def _print_stream(demo: Demo, stream_id: UUID) -> None:
    table = Table("v", "event", "data (decrypted)", title=f"events of conversation {stream_id}")
    for event in await asyncio.to_thread(demo.store.app.stream, stream_id):
        data = {
            k: v for k, v in vars(event).items() if k not in _HIDDEN and v not in (None, {}, [])
        }
        text = ", ".join(f"{k}={v}" for k, v in data.items())
        table.add_row(
            str(event.originator_version), type(event).__qualname__.split(".")[-1], text[:150]
        )
    demo.console.print(table)


def _set_up(app: UrbanaApp, secret: str) -> UUID:
    """The demo's tenant: its Cloud API channel, console outbound, its knowledge base."""
    tenant_id, _ = app.register_tenant("Loja Demo")
    app.connect_channel(tenant_id, gateway_config("cloud", {
        "phone_number_id": PNID, "app_secret": secret,
        "verify_token": uuid4().hex, "access_token": "demo-token",
    }))  # fmt: skip
    app.change_settings(tenant_id, outbound="console", debounce_ms=300)
    for name, text in KNOWLEDGE.items():
        app.add_knowledge_document(tenant_id, name, text)
    return tenant_id


async def _main(settings: Settings, urls: ServiceUrls, console: Console) -> None:
    web = create_app(settings, ROLES)
    server = uvicorn.Server(
        uvicorn.Config(web, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving
        await asyncio.sleep(0.05)
    try:
        port = server.servers[0].sockets[0].getsockname()[1]
        api = f"http://127.0.0.1:{port}"
        console.print(
            f"postgres: {urls.postgres}\nkafka: {urls.kafka}\nredis: {urls.redis}\napi: {api}"
        )
        container = web.state.container
        store = container.store
        secret = uuid4().hex
        tenant_id = await asyncio.to_thread(_set_up, store.app, secret)
        # Indexed now rather than waiting for the knowledge role's consumer group to
        # join; the role re-indexes the same versions as a no-op.
        knowledge = container.ai.knowledge
        for doc in await asyncio.to_thread(store.app.knowledge_documents, tenant_id):
            await knowledge.add_document(tenant_id, doc.name, doc.text, version=doc.version)
        console.print(f"knowledge base: {', '.join(KNOWLEDGE)}")
        demo = Demo(console, api, store, secret)
        try:
            streams = await _script(demo, tenant_id)
            await _read_models(demo, settings, tenant_id, streams)
            await _print_stream(demo, streams[1])
        finally:
            await demo.http.aclose()
    finally:
        server.should_exit = True
        await serving


def run_demo(settings: Settings, data_dir: Path, console: Console) -> None:
    """Run the showcase in `data_dir`; raises if any step does not happen as narrated."""
    with EmbeddedStack(data_dir) as stack:
        urls = stack.urls
        demo_settings = settings.model_copy(
            update={
                "data_dir": data_dir,
                "database_url": urls.postgres,
                # Every run starts from an empty store.
                "database_schema": f"demo_{uuid4().hex[:8]}",
                "kafka_bootstrap": urls.kafka,
                "redis_url": urls.redis,
                "master_key": None,  # the data dir's own key
                "openai_api_key": None,  # the offline retrieval responder
                "debounce_ms": 300,
            }
        )
        asyncio.run(_main(demo_settings, urls, console))
    console.print("demo finished")

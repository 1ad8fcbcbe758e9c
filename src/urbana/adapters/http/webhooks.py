"""Gateway webhooks: authenticate, parse, commit, and only then answer 200.

Client faults (bad JSON, unknown shape, bad signature, unknown tenant, too large)
are `Rejected`: 4xx problem+json, and nothing is appended. Our own transient faults
(the store unreachable) reach the app's handlers as `Unavailable`: 503 with
Retry-After, which every gateway retries.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.requests import ClientDisconnect

from urbana.adapters import logs
from urbana.adapters.bootstrap import Container
from urbana.adapters.channels import cloud, evolution
from urbana.adapters.http.common import container_of
from urbana.adapters.http.problems import problem
from urbana.adapters.ingest import IngestResult
from urbana.application.app import ReceiveMessage, RecordStatus
from urbana.application.channels import ParsedWebhook
from urbana.application.gateways import secret_route_key
from urbana.domain.contacts import contact_key, lead_key
from urbana.domain.errors import DomainError
from urbana.errors import Rejected

log = logging.getLogger("urbana.webhooks")

MAX_BODY = 1024 * 1024

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


async def read_body(request: Request) -> bytes:
    """The raw body, refusing more than 1 MiB without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise Rejected(413, "body larger than 1 MiB")
    # ASGI messages read here, not through `request.stream()`: each async generator is
    # registered with the event loop, which was a twentieth of a webhook's CPU.
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise Rejected(413, "body larger than 1 MiB")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _validate(items: tuple[ParsedWebhook, ...]) -> None:
    """Refuse the whole webhook if any message could not be recorded: all or nothing."""
    # A message is named by its place, not its id: the reason is logged, and a wamid
    # embeds the sender's phone.
    for item in items:
        for n, msg in enumerate(item.messages, start=1):
            try:
                contact_key(msg.contact)
                lead_key(msg.contact, msg.phone)
            except DomainError as exc:
                raise Rejected(422, f"message {n}: {exc}") from exc
            if msg.kind == "text" and not (msg.text or "").strip():
                raise Rejected(422, f"message {n}: empty text")


def _commands(
    tenant_id: UUID, channel: str, item: ParsedWebhook
) -> list[ReceiveMessage | RecordStatus]:
    commands: list[ReceiveMessage | RecordStatus] = [
        ReceiveMessage(tenant_id, channel, m) for m in item.messages
    ]
    commands.extend(RecordStatus(tenant_id, channel, s) for s in item.statuses)
    return commands


async def _commit(
    container: Container, commands: list[ReceiveMessage | RecordStatus]
) -> JSONResponse:
    if not commands:
        return JSONResponse({"status": "ignored"})
    result: IngestResult = await container.ingestor.ingest(commands)
    if result.errors and not (result.received or result.duplicates or result.statuses):
        raise Rejected(422, "; ".join(result.errors))
    body: dict[str, Any] = {
        "status": "ok",
        "received": result.received,
        "duplicates": result.duplicates,
    }
    if result.statuses:
        body["statuses"] = result.statuses
    if result.errors:
        body["errors"] = result.errors
    return JSONResponse(body)


def _rejection(exc: Rejected, request: Request) -> JSONResponse:
    # Neither the path (the tenant's webhook secret) nor the reason (it may quote a
    # remoteJid or a message id, which carry phones): the caller gets the reason.
    log.info("webhook rejected: %d", exc.status, extra={"route": logs.route_of(request.scope)})
    return problem(exc.status, "webhook rejected", exc.reason)


@router.get("/whatsapp-cloud")
async def cloud_handshake(request: Request) -> Response:
    """Meta's subscription handshake: echo hub.challenge when the verify token is ours."""
    container = container_of(request)
    params = dict(request.query_params)
    token = params.get("hub.verify_token")
    if not token or "hub.challenge" not in params or "hub.mode" not in params:
        return problem(
            400, "handshake rejected", "hub.mode, hub.verify_token, hub.challenge required"
        )
    tenant_id = await container.directory.route("cloud-verify", secret_route_key(token))
    if tenant_id is None:
        log.info("handshake with an unknown verify token")
        return problem(403, "handshake rejected", "unknown verify token")
    try:
        challenge = cloud.verify_handshake(params, token)
    except Rejected as exc:
        return _rejection(exc, request)
    return PlainTextResponse(challenge)


@router.post("/whatsapp-cloud")
async def cloud_webhook(request: Request) -> Response:
    container = container_of(request)
    try:
        body = await read_body(request)
        items = container.channels.cloud.parse(body)
        commands: list[ReceiveMessage | RecordStatus] = []
        checked: set[UUID] = set()
        for item in items:
            tenant_id = await container.directory.route("cloud", item.route_key)
            if tenant_id is None:
                raise Rejected(404, f"unknown phone_number_id {item.route_key}")
            logs.bind(tenant=str(tenant_id))
            if tenant_id not in checked:
                config = await container.directory.channel(tenant_id, "cloud")
                if config is None or not config["secrets"].get("app_secret"):
                    raise Rejected(404, "cloud channel not connected")
                cloud.verify_signature(
                    body,
                    request.headers.get("x-hub-signature-256"),
                    config["secrets"]["app_secret"],
                )
                checked.add(tenant_id)
            commands.extend(_commands(tenant_id, "cloud", item))
        _validate(items)
        return await _commit(container, commands)
    except Rejected as exc:
        return _rejection(exc, request)


async def _by_secret(container: Container, kind: str, secret: str) -> tuple[UUID, dict[str, Any]]:
    tenant_id = await container.directory.route(f"{kind}-secret", secret_route_key(secret))
    if tenant_id is None:
        raise Rejected(404, "unknown webhook secret")
    config = await container.directory.channel(tenant_id, kind)
    if config is None or config["secrets"].get("webhook_secret") != secret:
        raise Rejected(404, "unknown webhook secret")
    logs.bind(tenant=str(tenant_id))
    return tenant_id, config


async def _commit_routed(
    container: Container,
    tenant_id: UUID,
    kind: str,
    items: tuple[ParsedWebhook, ...],
    config: dict[str, Any],
    what: str,
) -> JSONResponse:
    """Record a webhook found by its secret: every item must name the secret's own route
    (instance), or a leaked secret would let one tenant write into another's channel."""
    for item in items:
        if item.route_key != config["route_key"]:
            raise Rejected(403, f"{what} {item.route_key!r} is not the one this secret belongs to")
    _validate(items)
    return await _commit(container, [c for item in items for c in _commands(tenant_id, kind, item)])


async def _record_states(
    container: Container,
    tenant_id: UUID,
    kind: str,
    items: tuple[ParsedWebhook, ...],
    config: dict[str, Any],
) -> JSONResponse:
    """Record the channel's link state (connection.update, qrcode.updated) on its route.

    The QR code is a way into the tenant's WhatsApp account: it is sealed in the event
    and never logged.
    """
    for item in items:
        if item.route_key != config["route_key"]:
            raise Rejected(403, f"instance {item.route_key!r} is not this secret's")
    app = container.store.app
    recorded = 0
    for item in items:
        for state in item.states:
            gate = container.ingestor.committer.gate
            if await gate.call(app.record_channel_state, tenant_id, kind, state):
                recorded += 1
                log.info("%s channel of tenant %s is %s", kind, tenant_id, state.state)
    return JSONResponse({"status": "ok", "states": recorded})


@router.post("/evolution/{webhook_secret}")
async def evolution_webhook(webhook_secret: str, request: Request) -> Response:
    container = container_of(request)
    try:
        body = await read_body(request)
        tenant_id, config = await _by_secret(container, "evolution", webhook_secret)
        jwt_key = config["secrets"].get("jwt_key")
        if jwt_key:
            evolution.verify_jwt(request.headers.get("authorization"), jwt_key)
        tenant = await container.directory.tenant(tenant_id)
        items = container.channels.evolution.parse(
            body, include_groups=tenant.settings.include_groups
        )
        if any(item.states for item in items):
            return await _record_states(container, tenant_id, "evolution", items, config)
        return await _commit_routed(container, tenant_id, "evolution", items, config, "instance")
    except Rejected as exc:
        return _rejection(exc, request)


@router.post("/zapi/{webhook_secret}")
async def zapi_webhook(webhook_secret: str, request: Request) -> Response:
    container = container_of(request)
    try:
        body = await read_body(request)
        tenant_id, config = await _by_secret(container, "zapi", webhook_secret)
        items = container.channels.zapi.parse(body)
        return await _commit_routed(container, tenant_id, "zapi", items, config, "instanceId")
    except Rejected as exc:
        return _rejection(exc, request)

"""Evolution API v2 (Baileys): webhook authentication, parsing and sending.

Envelope and payloads follow EvolutionAPI/evolution-api: `WebhookController.emit` wraps every
event as `{event, instance, data, destination, date_time, sender, server_url, apikey}`;
`messages.upsert` carries a prepared Baileys `WebMessageInfo` (`key`, `pushName`, `message`,
`messageType`, `messageTimestamp`, `contextInfo`), and `messages.update` carries
`{keyId, remoteJid, fromMe, status, ...}` with the status names of `utils/renderStatus.ts`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from datetime import UTC, datetime

import httpx
import jwt

from urbana.adapters.channels.errors import HttpGateway, require_config, unknown_outcome
from urbana.adapters.channels.evolution_state import STATE_EVENTS, connect_state
from urbana.adapters.channels.payload import AD_REPLY_KEYS, epoch_seconds, location, media, referral
from urbana.adapters.channels.payload import Json as _Json
from urbana.adapters.channels.payload import decode_json as _decode
from urbana.adapters.channels.payload import json_object as _object
from urbana.adapters.channels.payload import required_str as _required_str
from urbana.adapters.channels.payload import text as _text
from urbana.application.channels import (
    ChannelState,
    DeliveryStatus,
    InboundMessage,
    OutboundRequest,
    ParsedWebhook,
    StatusUpdate,
)
from urbana.domain.channels import ChannelKind
from urbana.errors import Rejected, UrbanaError

_PHONE_SUFFIXES = ("@s.whatsapp.net", "@c.us")
_STATUSES = {
    "SERVER_ACK": DeliveryStatus.SENT,
    "DELIVERY_ACK": DeliveryStatus.DELIVERED,
    "READ": DeliveryStatus.READ,
    "PLAYED": DeliveryStatus.READ,
    "ERROR": DeliveryStatus.FAILED,
}
# renderStatus.ts numbering, which some versions send instead of the names.
_STATUS_NUMBERS = {
    0: "ERROR",
    1: "PENDING",
    2: "SERVER_ACK",
    3: "DELIVERY_ACK",
    4: "READ",
    5: "PLAYED",
}
# Baileys wraps the real content of disappearing, view-once and captioned-document messages.
_WRAPPERS = (
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
)
# Keys that ride along with the content but are not content themselves.
_NOT_CONTENT = frozenset(
    {"messageContextInfo", "senderKeyDistributionMessage", "base64", "mediaUrl"}
)
_MEDIA = {
    "imageMessage": "image",
    "videoMessage": "video",
    "ptvMessage": "video",
    "audioMessage": "audio",
    "documentMessage": "document",
    "stickerMessage": "sticker",
}
_SKIPPED_CONTENT = frozenset({"protocolMessage", "pollUpdateMessage", "reactionMessageRemove"})
# Baileys also passes the ad's media link.
_AD_KEYS = {**AD_REPLY_KEYS, "mediaUrl": "media_url"}


class ConnectFailed(UrbanaError):
    """Evolution did not give the instance's QR code: unreachable, or it refused."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def verify_jwt(authorization_header: str | None, jwt_key: str, *, leeway_seconds: int = 30) -> None:
    """Check Evolution's `Authorization: Bearer <HS256 JWT>` (webhook `jwt_key`); 401 if invalid."""
    if authorization_header is None:
        raise Rejected(401, "missing Authorization header")
    scheme, _, token = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Rejected(401, "Authorization must be 'Bearer <token>'")
    try:
        with warnings.catch_warnings():
            # The key is the operator's Evolution setting: a short one is their choice, and a
            # warning on every webhook would only flood the logs.
            warnings.filterwarnings("ignore", message="The HMAC key is")
            jwt.decode(
                token.strip(),
                jwt_key,
                algorithms=["HS256"],
                options={"require": ["exp"]},
                leeway=leeway_seconds,
            )
    except jwt.PyJWTError as exc:
        raise Rejected(401, f"invalid webhook JWT: {exc}") from exc


class EvolutionChannel(HttpGateway):
    """The Evolution API v2 gateway."""

    kind: ChannelKind = "evolution"

    # Nothing we pass comes back in its status webhooks: a send whose outcome is unknown
    # is sent again (at-least-once).
    reconciles = False

    def parse(self, body: bytes, *, include_groups: bool = False) -> tuple[ParsedWebhook, ...]:
        """Parse an Evolution webhook; events other than messages.upsert/update give nothing."""
        root = _object(_decode(body), "webhook body")
        event = root.get("event")
        if not isinstance(event, str):
            raise Rejected(422, "event must be a string")
        # Global webhooks send MESSAGES_UPSERT, instance webhooks messages.upsert.
        event = event.lower().replace("_", ".").replace("-", ".")
        if event not in ("messages.upsert", "messages.update", *STATE_EVENTS):
            return ()
        route_key = _required_str(root, "instance", "webhook")
        if event in STATE_EVENTS:
            state = STATE_EVENTS[event](_object(root.get("data"), "data"), root.get("date_time"))
            return (ParsedWebhook(route_key, states=(state,)),) if state is not None else ()
        items = root.get("data")
        records = items if isinstance(items, list) else [items]
        if event == "messages.upsert":
            messages = tuple(
                parsed
                for record in records
                if (parsed := _message(_object(record, "data"), include_groups)) is not None
            )
            return (ParsedWebhook(route_key, messages=messages),) if messages else ()
        date_time = root.get("date_time")
        statuses = tuple(
            status
            for record in records
            if (status := _status(_object(record, "data"), date_time, include_groups)) is not None
        )
        return (ParsedWebhook(route_key, statuses=statuses),) if statuses else ()

    async def connect(self, config: Mapping[str, str]) -> ChannelState:
        """Ask Evolution to link the instance (`GET /instance/connect/{instance}`).

        Evolution answers the instance's QR code (`{pairingCode, code, base64, count}`)
        while it waits for a scan, or `{instance: {state: "open"}}` once linked.
        ConnectFailed when it cannot be reached or refuses.
        """
        require_config(config, "api_url", "api_key", "instance")
        url = f"{config['api_url'].rstrip('/')}/instance/connect/{config['instance']}"
        try:
            response = await self._client.get(
                url,
                headers={"apikey": config["api_key"]},
                timeout=httpx.USE_CLIENT_DEFAULT if self._timeout is None else self._timeout,
            )
        except httpx.HTTPError as exc:
            raise ConnectFailed(f"evolution: cannot reach {url}: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            # Evolution's error bodies name the instance, not the QR: safe to pass on.
            raise ConnectFailed(
                f"evolution: HTTP {response.status_code}: {response.text[:300]}",
                status=response.status_code,
            )
        try:
            answer = _object(_decode(response.content), "connect answer")
        except Rejected as exc:
            raise ConnectFailed(f"evolution: unreadable connect answer: {exc.reason}") from exc
        return connect_state(answer)

    async def send(self, config: Mapping[str, str], request: OutboundRequest) -> str:
        """Send a text message through `/message/sendText/{instance}`; return `key.id`."""
        require_config(config, "api_url", "api_key", "instance")
        url = f"{config['api_url'].rstrip('/')}/message/sendText/{config['instance']}"
        payload: _Json = {"number": request.to, "text": request.text}
        if (delay := config.get("delay_ms", "")).isdigit():
            payload["delay"] = int(delay)
        answer = await self._post(
            url,
            headers={"apikey": config["api_key"]},
            payload=payload,
        )
        key = answer.get("key") if isinstance(answer, dict) else None
        message_id = key.get("id") if isinstance(key, dict) else None
        if not isinstance(message_id, str) or not message_id:
            raise unknown_outcome("evolution: response has no key.id")
        return message_id


def _message(data: _Json, include_groups: bool) -> InboundMessage | None:
    key = _object(data.get("key"), "data.key")
    remote_jid = _required_str(key, "remoteJid", "data.key")
    if remote_jid.endswith(("@broadcast", "@newsletter")):
        return None
    is_group = remote_jid.endswith("@g.us")
    if is_group and not include_groups:
        return None
    message_id = _required_str(key, "id", "data.key")
    from_me = key.get("fromMe") is True
    sent_at = _epoch_seconds(data.get("messageTimestamp"))
    content = data.get("message")
    if not isinstance(content, dict):
        raise Rejected(422, "data.message must be a JSON object")
    content = _unwrap(content)
    content_key = _content_key(content, data.get("messageType"))
    if content_key is None or content_key in _SKIPPED_CONTENT:
        return None
    extra: _Json = {}
    if is_group:
        contact, phone = remote_jid, None
        if (participant := _text(key.get("participant"))) is not None:
            extra["participant"] = participant
    else:
        contact, phone = _identity(key, remote_jid, extra)
    kind, text, media_url, media_mime = _content(content_key, content.get(content_key), extra)
    context = _context(data, content.get(content_key))
    reply_to = _text(context.get("stanzaId"))
    if context.get("isForwarded") is True:
        extra["forwarded"] = True
    return InboundMessage(
        provider_message_id=message_id,
        contact=contact,
        phone=phone,
        sent_at=sent_at,
        kind=kind,
        text=text,
        # On fromMe messages pushName is the business's own name, not the lead's.
        contact_name=None if from_me else _text(data.get("pushName")),
        media_url=media_url,
        media_mime=media_mime,
        reply_to=reply_to,
        referral=referral(context.get("externalAdReply"), _AD_KEYS),
        extra=extra,
        from_me=from_me,
    )


def _identity(key: _Json, remote_jid: str, extra: _Json) -> tuple[str, str | None]:
    """The contact and phone for a one-to-one chat, resolving `@lid` through the alt fields."""
    if remote_jid.endswith("@lid"):
        extra["lid"] = remote_jid
        for alt in ("remoteJidAlt", "senderPn"):
            if (phone := _phone(key.get(alt))) is not None:
                return phone, phone
        return remote_jid, None
    phone = _phone(remote_jid)
    if phone is None:
        raise Rejected(422, f"unrecognised remoteJid {remote_jid!r}")
    return phone, phone


def _phone(jid: object) -> str | None:
    if not isinstance(jid, str):
        return None
    user, at, server = jid.partition("@")
    if at and f"@{server}" not in _PHONE_SUFFIXES:
        return None
    digits = user.partition(":")[0]  # drop a device suffix such as ":12"
    return digits if digits.isascii() and digits.isdigit() else None


def _unwrap(content: _Json) -> _Json:
    for _ in range(4):
        inner = next(
            (
                wrapped["message"]
                for name in _WRAPPERS
                if isinstance(wrapped := content.get(name), dict)
                and isinstance(wrapped.get("message"), dict)
            ),
            None,
        )
        if not isinstance(inner, dict):
            break
        content = inner
    return content


def _content_key(content: _Json, message_type: object) -> str | None:
    if isinstance(message_type, str) and message_type in content:
        return message_type
    return next((key for key in content if key not in _NOT_CONTENT), None)


def _content(
    content_key: str, part_value: object, extra: _Json
) -> tuple[str, str | None, str | None, str | None]:
    """Kind, text, media link and media MIME type of one Baileys message content."""
    part: _Json = part_value if isinstance(part_value, dict) else {}
    if content_key == "conversation":
        return "text", _text(part_value), None, None
    if content_key == "extendedTextMessage":
        return "text", _text(part.get("text")), None, None
    if content_key in _MEDIA:
        return _MEDIA[content_key], *media(part, extra, url="url", mime="mimetype")
    if content_key in ("locationMessage", "liveLocationMessage"):
        degrees = ("degreesLatitude", "degreesLongitude")
        return "location", location(part, extra, coordinates=degrees, link=False), None, None
    if content_key in ("contactMessage", "contactsArrayMessage"):
        cards = part.get("contacts") if content_key == "contactsArrayMessage" else [part]
        shared = [
            {"name": _text(card.get("displayName")), "vcard": _text(card.get("vcard"))}
            for card in (cards if isinstance(cards, list) else [])
            if isinstance(card, dict)
        ]
        extra["contacts"] = shared
        return (
            "contacts",
            ", ".join(str(c["name"]) for c in shared if c["name"]) or None,
            None,
            None,
        )
    if content_key == "reactionMessage":
        reacted = part.get("key")
        if isinstance(reacted, dict) and (reacted_id := _text(reacted.get("id"))) is not None:
            extra["reacted_message_id"] = reacted_id
        return "reaction", _text(part.get("text")), None, None
    if content_key == "buttonsResponseMessage":
        extra["reply_type"] = "button_reply"
        if (reply_id := _text(part.get("selectedButtonId"))) is not None:
            extra["reply_id"] = reply_id
        return "interactive", _text(part.get("selectedDisplayText")), None, None
    if content_key == "listResponseMessage":
        extra["reply_type"] = "list_reply"
        selected = part.get("singleSelectReply")
        if isinstance(selected, dict) and (row := _text(selected.get("selectedRowId"))):
            extra["reply_id"] = row
        if (description := _text(part.get("description"))) is not None:
            extra["description"] = description
        return "interactive", _text(part.get("title")), None, None
    if content_key == "templateButtonReplyMessage":
        if (payload := _text(part.get("selectedId"))) is not None:
            extra["payload"] = payload
        return "button", _text(part.get("selectedDisplayText")), None, None
    extra["message_type"] = content_key
    return "unknown", None, None, None


def _context(data: _Json, part: object) -> _Json:
    # v2 lifts contextInfo to the top of `data`; older payloads keep it inside the content.
    for holder in (data, part):
        if isinstance(holder, dict) and isinstance(context := holder.get("contextInfo"), dict):
            return context
    return {}


def _status(data: _Json, date_time: object, include_groups: bool) -> StatusUpdate | None:
    key = data.get("key")
    key_obj: _Json = key if isinstance(key, dict) else {}
    message_id = _text(data.get("keyId")) or _text(key_obj.get("id"))
    if message_id is None:
        raise Rejected(422, "messages.update needs data.keyId or data.key.id")
    from_me = data.get("fromMe", key_obj.get("fromMe"))
    if from_me is False:
        # Receipts for the lead's own messages (we read them) are not delivery facts.
        return None
    raw_status = data.get("status")
    if isinstance(raw_status, int) and not isinstance(raw_status, bool):
        raw_status = _STATUS_NUMBERS.get(raw_status)
    status = _STATUSES.get(raw_status.upper()) if isinstance(raw_status, str) else None
    if status is None:
        return None  # PENDING, DELETED, poll updates and edits move no delivery state
    remote_jid = _text(data.get("remoteJid")) or _text(key_obj.get("remoteJid"))
    contact = None
    if remote_jid is not None:
        if remote_jid.endswith("@g.us") and not include_groups:
            return None
        contact = _phone(remote_jid) or remote_jid
    return StatusUpdate(
        provider_message_id=message_id,
        status=status,
        at=_iso_datetime(date_time),
        contact=contact,
    )


def _epoch_seconds(value: object) -> datetime:
    # Older builds serialise protobuf Long as {low, high, unsigned}.
    if isinstance(value, dict):
        low, high = value.get("low"), value.get("high", 0)
        if type(low) is int and type(high) is int and high == 0:
            value = low & 0xFFFFFFFF
    return epoch_seconds(value, "data.messageTimestamp")


def _iso_datetime(value: object) -> datetime:
    # messages.update carries no timestamp of its own; the envelope's is the best we have.
    if isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value)
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except (ValueError, OverflowError):
            pass
    raise Rejected(422, "date_time must be an ISO 8601 timestamp")

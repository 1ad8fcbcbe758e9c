"""Z-API: webhook parsing and sending.

Payload shapes follow Z-API's docs (developer.z-api.io, repo Z-API/z-api-docs):
`ReceivedCallback` for messages (`momment` in milliseconds) and `MessageStatusCallback`
for receipts, whose `ids` is a list. Z-API signs nothing: the per-tenant secret in the
webhook path authenticates it, optionally with a header the operator configures.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from urbana.adapters.channels.errors import HttpGateway, require_config, unknown_outcome
from urbana.adapters.channels.payload import AD_REPLY_KEYS, location, media, referral
from urbana.adapters.channels.payload import Json as _Json
from urbana.adapters.channels.payload import decode_json as _decode
from urbana.adapters.channels.payload import json_list as _list
from urbana.adapters.channels.payload import json_object as _object
from urbana.adapters.channels.payload import required_str as _required_str
from urbana.adapters.channels.payload import text as _text
from urbana.application.channels import (
    DeliveryStatus,
    InboundMessage,
    OutboundRequest,
    ParsedWebhook,
    StatusUpdate,
)
from urbana.domain.channels import ChannelKind
from urbana.errors import Rejected

DEFAULT_API_BASE_URL = "https://api.z-api.io"

_MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_STATUSES = {
    "SENT": DeliveryStatus.SENT,
    "RECEIVED": DeliveryStatus.DELIVERED,
    "DELIVERED": DeliveryStatus.DELIVERED,
    "MESSAGE_RECEIVED": DeliveryStatus.DELIVERED,
    "READ": DeliveryStatus.READ,
    "PLAYED": DeliveryStatus.READ,
    "FAILED": DeliveryStatus.FAILED,
    "ERROR": DeliveryStatus.FAILED,
}
_SKIP_FLAGS = ("isGroup", "isNewsletter", "broadcast", "isStatusReply", "waitingMessage")
_MEDIA = {
    "image": ("image", "imageUrl"),
    "audio": ("audio", "audioUrl"),
    "video": ("video", "videoUrl"),
    "document": ("document", "documentUrl"),
    "sticker": ("sticker", "stickerUrl"),
}


def verify_client_token(header: str | None, expected: str) -> None:
    """Check an operator-configured webhook header (e.g. `Client-Token`); 401 when it differs."""
    if header is None or not hmac.compare_digest(header.encode(), expected.encode()):
        raise Rejected(401, "webhook token header missing or wrong")


class ZapiChannel(HttpGateway):
    """The Z-API gateway."""

    kind: ChannelKind = "zapi"

    # Nothing we pass comes back in its status webhooks: a send whose outcome is unknown
    # is sent again (at-least-once).
    reconciles = False

    def parse(self, body: bytes) -> tuple[ParsedWebhook, ...]:
        """Parse a Z-API callback; presence, connection and delivery callbacks give nothing."""
        root = _object(_decode(body), "webhook body")
        callback = root.get("type")
        if not isinstance(callback, str):
            raise Rejected(422, "type must be a string")
        # The docs spell it both ReceivedCallback and ReceivedCallBack.
        callback = callback.lower()
        if callback == "receivedcallback":
            route_key = _required_str(root, "instanceId")
            message = _message(root)
            return (ParsedWebhook(route_key, messages=(message,)),) if message else ()
        if callback == "messagestatuscallback":
            route_key = _required_str(root, "instanceId")
            statuses = _statuses(root)
            return (ParsedWebhook(route_key, statuses=statuses),) if statuses else ()
        return ()

    async def send(self, config: Mapping[str, str], request: OutboundRequest) -> str:
        """Send a text message through `/send-text`; return the WhatsApp message id."""
        require_config(config, "instance_id", "token", "client_token")
        base = (config.get("api_base_url") or DEFAULT_API_BASE_URL).rstrip("/")
        url = f"{base}/instances/{config['instance_id']}/token/{config['token']}/send-text"
        answer = await self._post(
            url,
            headers={"Client-Token": config["client_token"]},
            payload={"phone": request.to, "message": request.text},
        )
        if isinstance(answer, dict):
            # messageId is WhatsApp's id, which status callbacks quote; zaapId is Z-API's own.
            for key in ("messageId", "id", "zaapId"):
                if isinstance(value := answer.get(key), str) and value:
                    return value
        raise unknown_outcome("zapi: response has no messageId")


def _message(root: _Json) -> InboundMessage | None:
    if any(root.get(flag) is True for flag in _SKIP_FLAGS) or "notification" in root:
        # Groups, channels, status replies, undecrypted placeholders and call/system notices.
        return None
    message_id = _required_str(root, "messageId")
    phone_field = _required_str(root, "phone")
    if phone_field.endswith(("-group", "@g.us", "@newsletter", "@broadcast")):
        return None
    sent_at = _epoch_ms(root.get("momment"))
    from_me = root.get("fromMe") is True
    extra: _Json = {}
    if phone_field.endswith("@lid"):
        contact, phone = phone_field, None
        extra["lid"] = phone_field
    elif phone_field.isascii() and phone_field.isdigit():
        contact = phone = phone_field
        lid = _text(root.get("chatLid")) or (None if from_me else _text(root.get("senderLid")))
        if lid is not None and lid.endswith("@lid"):
            extra["lid"] = lid
    else:
        raise Rejected(422, f"unrecognised phone {phone_field!r}")
    kind, text, media_url, media_mime = _content(root, extra)
    if root.get("forwarded") is True:
        extra["forwarded"] = True
    contact_name = None
    if not from_me:
        contact_name = _text(root.get("senderName")) or _text(root.get("chatName"))
    return InboundMessage(
        provider_message_id=message_id,
        contact=contact,
        phone=phone,
        sent_at=sent_at,
        kind=kind,
        text=text,
        contact_name=contact_name,
        media_url=media_url,
        media_mime=media_mime,
        reply_to=_text(root.get("referenceMessageId")),
        referral=referral(root.get("externalAdReply"), AD_REPLY_KEYS),
        extra=extra,
        from_me=from_me,
    )


def _content(root: _Json, extra: _Json) -> tuple[str, str | None, str | None, str | None]:
    """Kind, text, media link and media MIME type of one ReceivedCallback."""
    for field, (kind, url_key) in _MEDIA.items():
        if isinstance(part := root.get(field), dict):
            return kind, *media(part, extra, url=url_key, mime="mimeType")
    if isinstance(part := root.get("text"), dict):
        return "text", _text(part.get("message")), None, None
    if isinstance(part := root.get("location"), dict):
        return "location", location(part, extra), None, None
    if isinstance(part := root.get("contact"), dict):
        phones = [p for p in _list(part.get("phones")) if isinstance(p, str)]
        name = _text(part.get("displayName"))
        extra["contacts"] = [{"name": name, "phones": phones, "vcard": _text(part.get("vCard"))}]
        return "contacts", name, None, None
    if isinstance(part := root.get("reaction"), dict):
        referenced = part.get("referencedMessage")
        if isinstance(referenced, dict) and (reacted := _text(referenced.get("messageId"))):
            extra["reacted_message_id"] = reacted
        return "reaction", _text(part.get("value")), None, None
    if isinstance(part := root.get("buttonsResponseMessage"), dict):
        extra["reply_type"] = "button_reply"
        if (reply_id := _text(part.get("buttonId"))) is not None:
            extra["reply_id"] = reply_id
        return "interactive", _text(part.get("message")), None, None
    if isinstance(part := root.get("listResponseMessage"), dict):
        extra["reply_type"] = "list_reply"
        if (reply_id := _text(part.get("selectedRowId"))) is not None:
            extra["reply_id"] = reply_id
        if (description := _text(part.get("message"))) is not None:
            extra["description"] = description
        return "interactive", _text(part.get("title")), None, None
    return "unknown", None, None, None


def _statuses(root: _Json) -> tuple[StatusUpdate, ...]:
    if root.get("isGroup") is True:
        return ()
    raw_status = root.get("status")
    if not isinstance(raw_status, str):
        raise Rejected(422, "status must be a string")
    # READ_BY_ME is the business reading the lead's message; unknown values move nothing.
    status = _STATUSES.get(raw_status.upper())
    if status is None:
        return ()
    ids = root.get("ids")
    if ids is None and isinstance(root.get("id"), str):
        ids = [root["id"]]
    if not isinstance(ids, list) or not ids or not all(_text(item) for item in ids):
        raise Rejected(422, "ids must be a non-empty list of message ids")
    at = _epoch_ms(root.get("momment"))
    contact = _text(root.get("phone"))
    return tuple(
        StatusUpdate(provider_message_id=str(item), status=status, at=at, contact=contact)
        for item in ids
    )


def _epoch_ms(value: object) -> datetime:
    millis: int | None = None
    if type(value) is int:
        millis = value
    elif isinstance(value, str) and 0 < len(value) <= 15 and value.isascii() and value.isdigit():
        millis = int(value)
    if millis is None or not 0 <= millis <= _MAX_EPOCH_MS:
        raise Rejected(422, "momment must be epoch milliseconds")
    seconds, rest = divmod(millis, 1000)
    return datetime.fromtimestamp(seconds, tz=UTC) + timedelta(milliseconds=rest)

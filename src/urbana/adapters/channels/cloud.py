"""Meta WhatsApp Cloud API: webhook authentication, parsing and sending.

Payload shapes follow Meta's `messages` webhook reference
(developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages),
including the business-scoped user id (BSUID) fields Meta added in 2026: a message may carry
`from_user_id` without `from`, a contact `user_id` without `wa_id`, and a status
`recipient_user_id` without `recipient_id`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Mapping

from urbana.adapters.channels.errors import (
    BodyVerdict,
    HttpGateway,
    require_config,
    unknown_outcome,
)
from urbana.adapters.channels.payload import Json as _Json
from urbana.adapters.channels.payload import decode_json as _decode
from urbana.adapters.channels.payload import epoch_seconds as _epoch_seconds
from urbana.adapters.channels.payload import json_list as _list
from urbana.adapters.channels.payload import json_object as _object
from urbana.adapters.channels.payload import location
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

DEFAULT_API_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v21.0"
DEFAULT_TEMPLATE_LANGUAGE = "pt_BR"
BSUID_PREFIX = "bsuid:"

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_MEDIA_KINDS = frozenset({"image", "audio", "video", "document", "sticker"})
_REFERRAL_KEYS = (
    "source_url",
    "source_id",
    "source_type",
    "headline",
    "body",
    "media_type",
    "image_url",
    "video_url",
    "thumbnail_url",
    "ctwa_clid",
)
_STATUSES = {
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "played": DeliveryStatus.READ,  # voice notes: played implies read
    "failed": DeliveryStatus.FAILED,
}
# Graph API error codes that mean "slow down", often sent with HTTP 400 rather than 429:
# app call rate (4), API rate (613), WABA rate (80007), number throughput (130429),
# spam-rate restriction (131048). They concern the whole number.
_RATE_LIMIT_CODES = frozenset({4, 613, 80007, 130429, 131048})
# Too many messages to one recipient in a short time: only that recipient waits.
_PAIR_RATE_LIMIT = 131056
# Meta's own temporary faults: service down or overloaded (2), "something went wrong"
# (131000), service unavailable (131016), server temporarily unavailable (133004).
_TRANSIENT_CODES = frozenset({2, 131000, 131016, 133004})
# Longest opaque callback data Meta accepts on a send.
MAX_CALLBACK_DATA = 512


def verify_signature(body: bytes, header: str | None, app_secret: str) -> None:
    """Check `X-Hub-Signature-256` against the raw body; Rejected(401) on mismatch."""
    if header is None:
        raise Rejected(401, "missing X-Hub-Signature-256 header")
    match = _SIGNATURE.fullmatch(header.strip())
    if match is None:
        raise Rejected(401, "malformed X-Hub-Signature-256 header")
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), match.group(1).lower().encode()):
        raise Rejected(401, "X-Hub-Signature-256 does not match the body")


def verify_handshake(params: Mapping[str, str], verify_token: str) -> str:
    """Answer Meta's subscription check: return `hub.challenge`, or raise Rejected."""
    mode = params.get("hub.mode")
    token = params.get("hub.verify_token")
    challenge = params.get("hub.challenge")
    if mode is None or token is None or challenge is None:
        raise Rejected(400, "hub.mode, hub.verify_token and hub.challenge are required")
    if mode != "subscribe":
        raise Rejected(403, f"unexpected hub.mode {mode!r}")
    if not hmac.compare_digest(token.encode(), verify_token.encode()):
        raise Rejected(403, "hub.verify_token does not match")
    return challenge


class CloudChannel(HttpGateway):
    """The WhatsApp Cloud API gateway."""

    kind: ChannelKind = "cloud"
    reconciles = True  # Meta echoes biz_opaque_callback_data in the message's statuses

    def parse(self, body: bytes) -> tuple[ParsedWebhook, ...]:
        """Parse a Cloud API webhook into one ParsedWebhook per `phone_number_id`."""
        root = _object(_decode(body), "webhook body")
        if root.get("object") != "whatsapp_business_account":
            raise Rejected(422, "object must be 'whatsapp_business_account'")
        grouped: dict[str, tuple[list[InboundMessage], list[StatusUpdate]]] = {}
        for entry in _array(root.get("entry"), "entry"):
            for change in _array(_object(entry, "entry item").get("changes"), "entry.changes"):
                change_obj = _object(change, "change")
                # account_update, message_template_status_update, ... carry nothing for us.
                if change_obj.get("field") != "messages":
                    continue
                value = _object(change_obj.get("value"), "change.value")
                metadata = _object(value.get("metadata"), "value.metadata")
                route_key = _required_str(metadata, "phone_number_id", "value.metadata")
                contacts = [c for c in _optional_array(value, "contacts") if isinstance(c, dict)]
                messages = [
                    parsed
                    for raw in _optional_array(value, "messages")
                    if (parsed := _message(_object(raw, "message"), contacts)) is not None
                ]
                statuses = [
                    status
                    for raw in _optional_array(value, "statuses")
                    if (status := _status(_object(raw, "status"))) is not None
                ]
                if messages or statuses:
                    bucket = grouped.setdefault(route_key, ([], []))
                    bucket[0].extend(messages)
                    bucket[1].extend(statuses)
        return tuple(
            ParsedWebhook(route_key=key, messages=tuple(msgs), statuses=tuple(sts))
            for key, (msgs, sts) in grouped.items()
        )

    async def send(self, config: Mapping[str, str], request: OutboundRequest) -> str:
        """Send a text, or a template when `request.template` is set; return the wamid."""
        require_config(config, "access_token", "phone_number_id")
        base = (config.get("api_base_url") or DEFAULT_API_BASE_URL).rstrip("/")
        version = config.get("api_version") or DEFAULT_API_VERSION
        url = f"{base}/{version}/{config['phone_number_id']}/messages"
        payload: _Json = {"messaging_product": "whatsapp", "recipient_type": "individual"}
        if request.to.startswith(BSUID_PREFIX):
            # Users with a username may have no phone; Meta accepts their BSUID as `recipient`.
            payload["recipient"] = request.to.removeprefix(BSUID_PREFIX)
        else:
            payload["to"] = request.to
        if request.template:
            language = (
                request.template_language
                or config.get("template_language")
                or DEFAULT_TEMPLATE_LANGUAGE
            )
            template: _Json = {"name": request.template, "language": {"code": language}}
            if request.template_values:
                template["components"] = [
                    {
                        "type": "body",
                        "parameters": [
                            {"type": "text", "text": v} for v in request.template_values
                        ],
                    }
                ]
            payload["type"] = "template"
            payload["template"] = template
        else:
            payload["type"] = "text"
            payload["text"] = {"body": request.text, "preview_url": False}
        if request.callback_data:
            payload["biz_opaque_callback_data"] = request.callback_data[:MAX_CALLBACK_DATA]
        answer = await self._post(
            url,
            headers={"Authorization": f"Bearer {config['access_token']}"},
            payload=payload,
            judge_body=judge_error,
        )
        messages = answer.get("messages") if isinstance(answer, dict) else None
        first = messages[0] if isinstance(messages, list) and messages else None
        message_id = first.get("id") if isinstance(first, dict) else None
        if not isinstance(message_id, str) or not message_id:
            raise unknown_outcome("cloud: response has no messages[0].id")
        return message_id


def judge_error(body: object) -> BodyVerdict:
    """Read a Graph API error body: its code, and whether it is a rate limit or transient."""
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        return BodyVerdict()
    if code == _PAIR_RATE_LIMIT:
        return BodyVerdict(code=str(code), retryable=True, channel_wide=False)
    if code in _RATE_LIMIT_CODES or code in _TRANSIENT_CODES:
        return BodyVerdict(code=str(code), retryable=True)
    return BodyVerdict(code=str(code))


def _message(msg: _Json, contacts: list[_Json]) -> InboundMessage | None:
    if "group_id" in msg:
        # Groups API traffic is not a customer conversation.
        return None
    message_id = _required_str(msg, "id", "message")
    sent_at = _epoch_seconds(msg.get("timestamp"), "message.timestamp")
    kind = _required_str(msg, "type", "message")
    phone = _text(msg.get("from"))
    user_id = _text(msg.get("from_user_id"))
    profile = _matching_contact(contacts, phone, user_id)
    if profile is not None:
        phone = phone or _text(profile.get("wa_id"))
        user_id = user_id or _text(profile.get("user_id"))
    if phone is not None:
        contact = phone
    elif user_id is not None:
        contact = BSUID_PREFIX + user_id
    else:
        raise Rejected(422, "message has neither from nor from_user_id")
    extra: _Json = {}
    if user_id is not None:
        extra["bsuid"] = user_id
    contact_name = None
    if profile is not None and isinstance(profile_obj := profile.get("profile"), dict):
        contact_name = _text(profile_obj.get("name"))
        if (username := _text(profile_obj.get("username"))) is not None:
            extra["username"] = username
    text, media_url, media_mime, details = _content(kind, msg)
    extra.update(details)
    reply_to = None
    if isinstance(context := msg.get("context"), dict):
        reply_to = _text(context.get("id"))
        if context.get("forwarded") is True or context.get("frequently_forwarded") is True:
            extra["forwarded"] = True
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
        reply_to=reply_to,
        referral=_referral(msg.get("referral")),
        extra=extra,
    )


def _matching_contact(
    contacts: list[_Json], phone: str | None, user_id: str | None
) -> _Json | None:
    for candidate in contacts:
        if phone is not None and candidate.get("wa_id") == phone:
            return candidate
        if user_id is not None and candidate.get("user_id") == user_id:
            return candidate
    # A single contact with no usable key still names the only sender of the change.
    return contacts[0] if len(contacts) == 1 else None


def _content(kind: str, msg: _Json) -> tuple[str | None, str | None, str | None, _Json]:
    """Text, media link, media MIME type and kind-specific details of one message."""
    body = msg.get(kind)
    part: _Json = body if isinstance(body, dict) else {}
    extra: _Json = {}
    if kind == "text":
        return _text(part.get("body")), None, None, extra
    if kind in _MEDIA_KINDS:
        media_id = _text(part.get("id"))
        url = _text(part.get("url"))
        for key, value in (("media_id", media_id), ("url", url), ("sha256", part.get("sha256"))):
            if isinstance(value, str) and value:
                extra[key] = value
        if (filename := _text(part.get("filename"))) is not None:
            extra["filename"] = filename
        for flag in ("voice", "animated"):
            if isinstance(part.get(flag), bool):
                extra[flag] = part[flag]
        return _text(part.get("caption")), media_id or url, _text(part.get("mime_type")), extra
    if kind == "location":
        return location(part, extra, number=_number), None, None, extra
    if kind == "contacts":
        return _shared_contacts(body, extra), None, None, extra
    if kind == "interactive":
        return _interactive(part, extra), None, None, extra
    if kind == "button":
        if (payload := _text(part.get("payload"))) is not None:
            extra["payload"] = payload
        return _text(part.get("text")), None, None, extra
    if kind == "reaction":
        if (reacted := _text(part.get("message_id"))) is not None:
            extra["reacted_message_id"] = reacted
        # No emoji means the user removed their reaction.
        return _text(part.get("emoji")), None, None, extra
    if kind == "system":
        if (system_type := _text(part.get("type"))) is not None:
            extra["system_type"] = system_type
        return _text(part.get("body")), None, None, extra
    if kind == "unsupported" and (inner := _text(part.get("type"))) is not None:
        extra["unsupported_type"] = inner
    return None, None, None, extra


def _shared_contacts(cards: object, extra: _Json) -> str | None:
    shared: list[_Json] = []
    for card in cards if isinstance(cards, list) else []:
        if not isinstance(card, dict):
            continue
        name_obj = card.get("name")
        name = _text(name_obj.get("formatted_name")) if isinstance(name_obj, dict) else None
        phones = [
            number
            for entry in _list(card.get("phones"))
            if isinstance(entry, dict)
            and (number := _text(entry.get("wa_id")) or _text(entry.get("phone"))) is not None
        ]
        shared.append({"name": name, "phones": phones})
    extra["contacts"] = shared
    return ", ".join(str(card["name"]) for card in shared if card["name"]) or None


def _interactive(part: _Json, extra: _Json) -> str | None:
    reply_type = _text(part.get("type"))
    if reply_type is None:
        return None
    extra["reply_type"] = reply_type
    reply = part.get(reply_type)
    if not isinstance(reply, dict):
        return None
    if reply_type == "nfm_reply":
        if (response := _text(reply.get("response_json"))) is not None:
            extra["response_json"] = response
        return _text(reply.get("body"))
    if (reply_id := _text(reply.get("id"))) is not None:
        extra["reply_id"] = reply_id
    if (description := _text(reply.get("description"))) is not None:
        extra["description"] = description
    return _text(reply.get("title"))


def _referral(value: object) -> Mapping[str, str] | None:
    if not isinstance(value, dict):
        return None
    referral = {key: item for key in _REFERRAL_KEYS if isinstance(item := value.get(key), str)}
    return referral or None


def _status(raw: _Json) -> StatusUpdate | None:
    message_id = _required_str(raw, "id", "status")
    name = _required_str(raw, "status", "status")
    status = _STATUSES.get(name.lower())
    if status is None or raw.get("recipient_type") == "group":
        # "deleted", "warning" and group receipts say nothing about a lead's message.
        return None
    at = _epoch_seconds(raw.get("timestamp"), "status.timestamp")
    contact = _text(raw.get("recipient_id"))
    if contact is None and (user_id := _text(raw.get("recipient_user_id"))) is not None:
        contact = BSUID_PREFIX + user_id
    error_code = error_title = None
    errors = _list(raw.get("errors"))
    if errors and isinstance(first := errors[0], dict):
        code = first.get("code")
        if isinstance(code, int | str) and not isinstance(code, bool):
            error_code = str(code)
        error_title = _text(first.get("title")) or _text(first.get("message"))
    return StatusUpdate(
        provider_message_id=message_id,
        status=status,
        at=at,
        contact=contact,
        error_code=error_code,
        error_title=error_title,
        callback_data=_text(raw.get("biz_opaque_callback_data")),
    )


def _array(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise Rejected(422, f"{where} must be a JSON array")
    return value


def _optional_array(obj: _Json, key: str) -> list[object]:
    value = obj.get(key)
    return [] if value is None else _array(value, f"value.{key}")


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None

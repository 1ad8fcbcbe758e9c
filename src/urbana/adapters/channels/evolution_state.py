"""Evolution API v2's word on a linked number: `connection.update`, `qrcode.updated` and
the answer of its connect endpoint, read as a channel state (see docs/architecture.md,
Channel state). The QR code is a credential: it is parsed here, never logged.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from urbana.adapters.channels.payload import text as _text
from urbana.application.channels import ChannelState
from urbana.errors import Rejected

_Json = dict[str, object]

# connection.update's `state` (Baileys' WAConnectionState) in our words.
_LINK_STATES = {"open": "connected", "connecting": "connecting", "close": "disconnected"}


def _connection_update(data: _Json, date_time: object) -> ChannelState | None:
    """`connection.update`: `{instance, state: open|connecting|close, statusReason}`."""
    state = _LINK_STATES.get(str(data.get("state")))
    if state is None:
        return None  # refused, or a state Baileys added since: nothing we can show
    reason = data.get("statusReason")
    return ChannelState(
        state=state,
        at=_when(date_time),
        reason=str(reason) if isinstance(reason, int | str) and reason != "" else None,
    )


def _qrcode_updated(data: _Json, date_time: object) -> ChannelState | None:
    """`qrcode.updated`: `{qrcode: {instance, pairingCode, code, base64}}` (some builds put
    the QR's fields at the top of `data`)."""
    qrcode = data.get("qrcode")
    holder: _Json = qrcode if isinstance(qrcode, dict) else data
    image = _text(holder.get("base64"))
    if image is None:
        raise Rejected(422, "qrcode.updated needs data.qrcode.base64")
    return ChannelState(
        state="waiting_qr",
        at=_when(date_time),
        qr_code=image,
        pairing_code=_text(holder.get("pairingCode")),
    )


STATE_EVENTS: dict[str, Callable[[_Json, object], ChannelState | None]] = {
    "connection.update": _connection_update,
    "qrcode.updated": _qrcode_updated,
}


def connect_state(answer: _Json) -> ChannelState:
    """The answer of `/instance/connect/{instance}` as a channel state."""
    now = datetime.now(UTC)
    instance = answer.get("instance")
    if isinstance(instance, dict):
        linked = _LINK_STATES.get(str(instance.get("state") or instance.get("status")))
        qrcode = answer.get("qrcode")
        if linked is not None and not isinstance(qrcode, dict):
            return ChannelState(state=linked, at=now)
        answer = qrcode if isinstance(qrcode, dict) else {}
    image = _text(answer.get("base64"))
    if image is None:
        # Still starting (`{count: 0}`): the QR code follows in a qrcode.updated webhook.
        return ChannelState(state="connecting", at=now)
    return ChannelState(
        state="waiting_qr", at=now, qr_code=image, pairing_code=_text(answer.get("pairingCode"))
    )


def _when(date_time: object) -> datetime:
    """The envelope's `date_time` ("2025-05-02T03:01:20.092Z" or "2024-01-01 00:00:00");
    now when it is absent or unreadable: a link's state is news, not history."""
    if isinstance(date_time, str) and len(date_time) <= 40:
        try:
            parsed = datetime.fromisoformat(date_time)
        except ValueError:
            return datetime.now(UTC)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return datetime.now(UTC)

"""What the WhatsApp gateways and the application exchange.

A channel adapter authenticates and parses a gateway's webhook into these normalised
types (refusing a bad one with `urbana.errors.Rejected`), and sends outbound messages
(the `Sender` port, in `urbana.application.ports`).
Everything gateway-specific stays in `urbana.adapters.channels`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from urbana.errors import UrbanaError


class DeliveryStatus(StrEnum):
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message a lead (or the business phone itself, `from_me`) wrote."""

    provider_message_id: str
    contact: str  # wa_id / phone digits, or "bsuid:..." / "...@lid" when there is no phone
    phone: str | None  # E.164 digits without '+', when the gateway gave one
    sent_at: datetime  # provider timestamp, UTC
    kind: str  # text, image, audio, video, document, sticker, location, contacts, ...
    text: str | None = None  # body, caption, button/list title, reaction emoji, ...
    contact_name: str | None = None  # profile / push name
    media_url: str | None = None  # link or provider media id
    media_mime: str | None = None
    reply_to: str | None = None  # provider id of the quoted message
    referral: Mapping[str, str] | None = None  # click-to-WhatsApp ad source
    extra: Mapping[str, object] = field(default_factory=dict)  # kind-specific details
    from_me: bool = False


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A provider delivery status for a message we (or the business phone) sent."""

    provider_message_id: str
    status: DeliveryStatus
    at: datetime
    contact: str | None = None
    error_code: str | None = None
    error_title: str | None = None
    # What we passed with the send (Cloud API `biz_opaque_callback_data`), echoed back:
    # it names the outbound message even when we never learnt its provider id.
    callback_data: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelState:
    """What a gateway says of its link to WhatsApp (`urbana.domain.tenant.CHANNEL_STATES`)."""

    state: str  # connected | connecting | disconnected | waiting_qr
    at: datetime
    reason: str | None = None
    qr_code: str | None = None  # waiting_qr: the QR image as the gateway sends it (base64)
    pairing_code: str | None = None  # waiting_qr: the code typed on the phone instead


@dataclass(frozen=True, slots=True)
class ParsedWebhook:
    """What one webhook carried: the routing key and the normalised items."""

    route_key: str  # phone_number_id (cloud) or instance name/id (evolution, zapi)
    messages: tuple[InboundMessage, ...] = ()
    statuses: tuple[StatusUpdate, ...] = ()
    states: tuple[ChannelState, ...] = ()


@dataclass(frozen=True, slots=True)
class OutboundRequest:
    """A message to send to one contact through a connected channel."""

    to: str
    text: str  # a template's is its text filled in, for gateways that send only text
    template: str | None = None  # an approved template's name (the Cloud API sends it)
    template_language: str | None = None
    template_values: tuple[str, ...] = ()  # its body parameters {{1}}.. in order
    # Echoed by gateways that support it in the message's status webhooks.
    callback_data: str | None = None


class SendFailed(UrbanaError):
    """A gateway refused or failed to take an outbound message: the dispatcher's retry signal.

    `retryable`: a transient fault (5xx, 429, rate-limit codes, timeouts, connection
    errors); otherwise the request itself is refused and retrying will not help.
    `outcome_unknown`: the request may have reached the gateway (a timeout after it was
    sent): the message may be out. `retry_after`: seconds the gateway asked us to wait.
    `channel_wide`: the fault is the gateway's or the number's as a whole, not this
    recipient's (a per-recipient rate limit says nothing about the others).
    """

    def __init__(
        self,
        retryable: bool,
        reason: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
        channel_wide: bool = True,
    ) -> None:
        super().__init__(reason)
        self.retryable = retryable
        self.reason = reason
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown
        self.channel_wide = channel_wide

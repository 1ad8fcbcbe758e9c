"""A channel that writes outbound messages to a terminal, for the demo and local runs."""

from __future__ import annotations

import sys
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

from urbana.application.channels import OutboundRequest, ParsedWebhook
from urbana.domain.channels import ChannelKind
from urbana.errors import Rejected


@dataclass(frozen=True, slots=True)
class ConsoleDelivery:
    """One message the console channel "sent"."""

    provider_message_id: str
    request: OutboundRequest
    config: Mapping[str, str]


class ConsoleChannel:
    """Prints what would be sent and remembers the latest; it has no webhook.

    It serves console conversations (the tenant testing its bot) in every API process,
    so it remembers a bounded number of deliveries, not all of them.
    """

    kind: ChannelKind = "console"
    reconciles = False

    def __init__(self, stream: TextIO | None = None, *, remember: int = 1000) -> None:
        # None means "whatever sys.stdout is at send time", so pytest's capture still works.
        self._stream = stream
        self.sent: deque[ConsoleDelivery] = deque(maxlen=remember)

    def parse(self, body: bytes) -> tuple[ParsedWebhook, ...]:
        """Always reject: nothing posts webhooks for the console channel."""
        raise Rejected(404, "the console channel has no webhook")

    async def send(self, config: Mapping[str, str], request: OutboundRequest) -> str:
        """Print the message, record it in `sent`, and return a generated id."""
        message_id = f"console.{uuid.uuid4().hex}"
        body = f"[template {request.template}] {request.text}" if request.template else request.text
        print(f"-> {request.to}: {body}", file=self._stream or sys.stdout, flush=True)
        self.sent.append(ConsoleDelivery(message_id, request, dict(config)))
        return message_id

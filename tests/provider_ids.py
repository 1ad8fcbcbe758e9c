"""Provider message ids shaped as the gateways really make them.

A Cloud API `wamid` is base64 of a small Thrift compact struct whose first field is the
contact's phone (its wa_id), then the direction (0x12 from the user, 0x11 from the
business) and a random id: `wamid.HBgNNTUxMTk...` decodes to the phone. Evolution API
(Baileys) and Z-API ids are random upper-case hex, with no phone in them.
"""

from __future__ import annotations

import base64
import secrets


def cloud_wamid(phone: str, *, from_business: bool = False) -> str:
    """A wamid that embeds `phone`, as Meta sends for a message from (or to) that phone."""
    # A user's message id is 20 characters (an iPhone's "3A..." or an Android's hex),
    # a business message's 18.
    direction, tail = (
        (0x11, secrets.token_hex(9)) if from_business else (0x12, secrets.token_hex(10))
    )
    raw = (
        b"\x1c\x18"
        + bytes([len(phone)])
        + phone.encode()
        + b"\x15\x02\x00"
        + bytes([direction, 0x18, len(tail)])
        + tail.upper().encode()
        + b"\x00"
    )
    return "wamid." + base64.b64encode(raw).decode()


def evolution_id() -> str:
    """An Evolution API (Baileys) key id: "3EB0" and 18 hex digits, say."""
    return "3EB0" + secrets.token_hex(9).upper()


def zapi_id() -> str:
    """A Z-API messageId: 32 hex digits."""
    return secrets.token_hex(16).upper()

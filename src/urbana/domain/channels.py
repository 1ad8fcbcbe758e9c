"""The kinds of channel a conversation can run on: the one list of them."""

from __future__ import annotations

from typing import Literal, get_args

# Meta's WhatsApp Cloud API, Evolution API v2, Z-API, and the console (local printing).
ChannelKind = Literal["cloud", "evolution", "zapi", "console"]
CHANNELS: tuple[ChannelKind, ...] = get_args(ChannelKind)

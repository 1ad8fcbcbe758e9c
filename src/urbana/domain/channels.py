"""The kinds of channel a conversation can run on: the one list of them."""

from __future__ import annotations

from typing import Literal, get_args

# Meta's WhatsApp Cloud API, Evolution API v2, Z-API, and the console (local printing).
ChannelKind = Literal["cloud", "evolution", "zapi", "console"]
CHANNELS: tuple[ChannelKind, ...] = get_args(ChannelKind)
# The console channel is the tenant's own test bench (the panel's Testar, `urbana chat`):
# its conversations run the real path but never reach a gateway, the KPIs or attendants.
CONSOLE: ChannelKind = "console"

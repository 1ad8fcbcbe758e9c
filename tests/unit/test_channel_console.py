"""The console sender: what console conversations (and the demo) "send"."""

from __future__ import annotations

import io

from urbana.adapters.channels.console import ConsoleChannel
from urbana.application.channels import OutboundRequest


async def test_it_prints_every_message_and_remembers_only_the_latest() -> None:
    printed = io.StringIO()
    channel = ConsoleChannel(printed, remember=2)
    ids = [await channel.send({}, OutboundRequest(f"console:s{n}", f"oi {n}")) for n in range(3)]
    assert printed.getvalue().splitlines() == [f"-> console:s{n}: oi {n}" for n in range(3)]
    assert [d.provider_message_id for d in channel.sent] == ids[1:]
    assert len(set(ids)) == 3
    assert all(i.startswith("console.") for i in ids)

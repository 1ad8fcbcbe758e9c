"""Live events on the wire: what an EventSource receives, and the Last-Event-ID it sends."""

from __future__ import annotations

import pytest

from urbana.adapters.http.sse import last_event_id, sse_message
from urbana.application.live import Heartbeat, LiveEvent


def test_a_live_event_has_its_position_as_id_its_type_as_event_and_json_data() -> None:
    event = LiveEvent(
        id=1234,
        type="message.created",
        tenant_id="t",
        data={"conversation_id": "c", "author": "lead", "seq": 3},
    )
    assert sse_message(event).encode() == (
        b"id: 1234\r\nevent: message.created\r\n"
        b'data: {"conversation_id":"c","author":"lead","seq":3}\r\n\r\n'
    )


def test_a_heartbeat_is_a_comment_that_moves_no_id() -> None:
    assert sse_message(Heartbeat(99)).encode() == b": heartbeat\r\n\r\n"


def test_last_event_id_is_a_position_or_nothing() -> None:
    assert last_event_id(None) is None
    assert last_event_id(" ") is None
    assert last_event_id("1234") == 1234
    assert last_event_id(" 0 ") == 0
    for bad in ("-1", "abc", "12.5", "1e3", "²"):
        with pytest.raises(ValueError, match="position"):
            last_event_id(bad)

"""How long each consumer lets the broker hold a fetch: as the settings say, and at
least the background wait for the roles nobody waits on."""

from __future__ import annotations

import pytest

from urbana.adapters.kafka.consumer import (
    BACKGROUND_FETCH_MAX_WAIT_MS,
    FETCH_MAX_WAIT_MS,
    group_consumer,
)
from urbana.adapters.roles import _timeouts
from urbana.config import Settings


@pytest.mark.parametrize(
    ("configured", "foreground", "background"),
    [
        (None, FETCH_MAX_WAIT_MS, BACKGROUND_FETCH_MAX_WAIT_MS),  # Tansu's default
        (500, 500, BACKGROUND_FETCH_MAX_WAIT_MS),  # Apache Kafka, as infra/compose.yaml
        (2000, 2000, 2000),
    ],
)
async def test_consumers_wait_as_long_as_the_settings_say(
    configured: int | None, foreground: int, background: int
) -> None:
    settings = Settings() if configured is None else Settings(kafka_fetch_max_wait_ms=configured)
    timeouts = _timeouts(settings)
    waits = []
    for quiet in (False, True):
        consumer = group_consumer(
            "t", bootstrap="127.0.0.1:1", group_id="g", timeouts=timeouts, background=quiet
        )
        waits.append(consumer._fetch_max_wait_ms)
        await consumer.stop()  # never started: nothing to leave, only closed
    assert waits == [foreground, background]


def test_a_wait_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="kafka_fetch_max_wait_ms"):
        Settings(kafka_fetch_max_wait_ms=0)

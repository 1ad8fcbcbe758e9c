"""The consumer-group settings every consumer of ours shares (projection runner, workers).

A member that dies without leaving keeps its partitions until the group's session
timeout runs out, and Tansu (the embedded broker) also holds every JoinGroup for about
half the session timeout. With aiokafka's defaults (10 s session, 3 s heartbeats) a
worker restarted after a kill idled about 20 s before it consumed again. With a 2 s
session and 500 ms heartbeats it is back within about 4 s of the kill, and within about
1 s of a clean stop, which leaves the group (`stop_consumer`).

Apache Kafka refuses sessions shorter than its `group.min.session.timeout.ms` (6 s by
default) with INVALID_SESSION_TIMEOUT: set `URBANA_KAFKA_SESSION_TIMEOUT_MS` to at least
that there (`infra/compose.yaml` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import InvalidSessionTimeoutError, KafkaError
from aiokafka.protocol.group import LeaveGroupRequest

log = logging.getLogger(__name__)

# How long the broker may hold a fetch (`URBANA_KAFKA_FETCH_MAX_WAIT_MS`). Tansu does
# not answer when a record arrives but when it next looks, which is later the longer the
# wait: a record sent at random reached a consumer after p50 7 / max 14 ms at 20 ms,
# 16 / 50 ms at 100 ms and 121 / 252 ms at aiokafka's default of 500 ms. So 20 ms here.
# Apache Kafka answers a fetch as soon as a record arrives (fetch.min.bytes 1), so there
# the wait costs no latency and 500 ms (`infra/compose.yaml`) spares the polling: an
# idle consumer at 20 ms asks 50 times a second, each empty fetch about 1 ms of its CPU
# and 1.4 ms of Tansu's on the 2-core bench box (12 partitions; the same with one).
FETCH_MAX_WAIT_MS = 20
# Roles nobody waits on in a conversation (indexing a document, a Telegram notice) fetch
# less often whatever the broker: that polling was most of an idle worker's and the
# broker's CPU (bench/ttfr.py's profile).
BACKGROUND_FETCH_MAX_WAIT_MS = 500

SESSION_TIMEOUT_MS = 2_000
LEAVE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class GroupTimeouts:
    """How soon a group notices a member gone, how long a rebalance may take, and how
    long the broker may hold a fetch (`FETCH_MAX_WAIT_MS`)."""

    session_timeout_ms: int = SESSION_TIMEOUT_MS
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS

    @property
    def heartbeat_interval_ms(self) -> int:
        # A quarter: a member misses three heartbeats before it counts as gone.
        return max(100, self.session_timeout_ms // 4)

    @property
    def rebalance_timeout_ms(self) -> int:
        # Members rejoin from aiokafka's own task, not after our handlers, so a rebalance
        # needs no more than a few round trips; a little room for a loaded host.
        return max(10_000, self.session_timeout_ms)

    def consumer_options(self) -> dict[str, int]:
        return {
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "rebalance_timeout_ms": self.rebalance_timeout_ms,
        }


def group_consumer(
    *topics: str,
    bootstrap: str,
    group_id: str,
    timeouts: GroupTimeouts,
    background: bool = False,
    **options: Any,
) -> AIOKafkaConsumer:
    """A consumer of group `group_id`: manual commits, from the beginning for a new group.

    `background` for a role nobody waits on: it fetches at least every
    BACKGROUND_FETCH_MAX_WAIT_MS.
    """
    wait = timeouts.fetch_max_wait_ms
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=max(wait, BACKGROUND_FETCH_MAX_WAIT_MS) if background else wait,
        **timeouts.consumer_options(),
        **options,
    )


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop the consumer and leave its group, so a successor is assigned at once.

    aiokafka sends LeaveGroup only for a generation above 0 (Kafka's first is 1), but
    Tansu numbers a new group's first generation 0: its first member would never leave,
    and whoever replaced it would wait out its session. That member leaves here.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and coordinator.generation == 0 and coordinator.member_id:
        request = LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
        # Best effort, as aiokafka's own: the session timeout covers a failure.
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            async with asyncio.timeout(LEAVE_TIMEOUT_S):
                await coordinator._send_req(request)
    await consumer.stop()


def describe_fault(exc: BaseException) -> str:
    """A broker fault, with the fix when it is ours to make."""
    if isinstance(exc, InvalidSessionTimeoutError):
        return (
            f"{exc!r}: the broker refuses this session timeout; set "
            "URBANA_KAFKA_SESSION_TIMEOUT_MS to at least its group.min.session.timeout.ms"
        )
    return str(exc)

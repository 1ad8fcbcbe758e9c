"""Background roles of a process: relay, projector, responder, dispatcher, knowledge,
notifier, assigner, scheduler.

`urbana dev` runs them all inside the API process; `urbana worker --role ROLE`
runs one per process against external services. The composition root
(`adapters.roles.build_role`) builds each role; the runtime supervises them: each
is a task that stops when the shared stop event is set, and is built anew and restarted
after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from urbana.errors import ConfigurationError

log = logging.getLogger(__name__)

ROLES = (
    "relay",
    "projector",
    "responder",
    "dispatcher",
    "knowledge",
    "notifier",
    "assigner",
    "scheduler",
)

# A role that ran this long before it crashed restarts after the shortest pause again.
HEALTHY_RUN_S = 60.0


@dataclass(frozen=True)
class Role:
    """A background role as the composition root built it."""

    run: Callable[[asyncio.Event], Awaitable[None]]  # until the event is set
    metrics: Callable[[], dict[str, Any]]  # its figures, as they appear in /metrics


@dataclass
class Runtime:
    build_role: Callable[[str], Role]
    roles: tuple[str, ...]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    running: dict[str, Role] = field(default_factory=dict)  # the latest build of each

    def metrics(self) -> dict[str, Any]:
        """This process's roles: relay position and lag, projections, workers."""
        out: dict[str, Any] = {}
        for role in self.running.values():
            out.update(role.metrics())
        return out

    async def start(self) -> None:
        for role in self.roles:
            self.tasks.append(asyncio.create_task(self._supervise(role), name=f"role:{role}"))

    async def aclose(self) -> None:
        self.stop.set()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _supervise(self, name: str) -> None:
        """Run a role; an unexpected crash is logged and the role restarted after a pause."""
        delay = 1.0
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                role = self.build_role(name)
                self.running[name] = role
                await role.run(self.stop)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                if time.monotonic() - began > HEALTHY_RUN_S:
                    delay = 1.0  # a crash after a good run is not a crash loop
                log.exception("role %s crashed; restarting in %.0f s", name, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=delay)
                delay = min(delay * 2, 30.0)


def parse_roles(values: Iterable[str]) -> tuple[str, ...]:
    roles = tuple(dict.fromkeys(v.strip() for v in values if v.strip()))
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ConfigurationError(f"unknown role(s): {', '.join(unknown)} ({', '.join(ROLES)})")
    return roles

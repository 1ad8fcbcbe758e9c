"""What is started before use and closed after it, usable as `async with`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Service(ABC):
    """`async with service:` starts it and, however the block ends, closes it."""

    @abstractmethod
    async def start(self) -> None:
        """Connect (idempotent)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release what `start` took."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

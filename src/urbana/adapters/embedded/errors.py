"""What an embedded stack raises."""

from __future__ import annotations


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started or stopped."""


class DataDirInUseError(EmbeddedServiceError):
    """Another live process is running embedded services on this data dir."""

"""The master key a process runs with: from the settings, or made once in the data dir."""

from __future__ import annotations

import os
from pathlib import Path

from urbana.adapters.crypto import new_master_key, parse_master_key
from urbana.config import Settings
from urbana.errors import ConfigurationError


def master_key_for(settings: Settings) -> bytes:
    """The master key from settings; locally, one kept in the data dir is made once."""
    if settings.master_key is not None:
        return parse_master_key(settings.master_key.get_secret_value())
    if settings.env == "production":
        raise ConfigurationError("URBANA_MASTER_KEY is required in production")
    path = Path(settings.data_dir) / "master.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new_master_key())
    return parse_master_key(path.read_text().strip())

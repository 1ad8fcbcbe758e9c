"""The master key and the token secret a process runs with: from the settings, or made
once in the data dir."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from urbana.adapters.crypto import new_master_key, parse_master_key
from urbana.config import Settings
from urbana.errors import ConfigurationError


def jwt_secret_for(settings: Settings) -> bytes:
    """The secret that signs access tokens; locally, one kept in the data dir is made once.

    Every process of an installation must sign with the same secret, as with the master key.
    """
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value().encode()
    if settings.env == "production":
        raise ConfigurationError("URBANA_JWT_SECRET is required in production")
    return _made_once(
        Path(settings.data_dir) / "jwt.key", lambda: secrets.token_urlsafe(48)
    ).encode()


def _made_once(path: Path, make: Callable[[], str]) -> str:
    """The file's content, made by the first process that asks (`serve --workers N` starts
    several at once): written aside, then linked into place, so no one reads it half made."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(make())
        try:
            os.link(aside, path)
        except FileExistsError:
            pass  # another process made it first: theirs is the one
        finally:
            aside.unlink()
    return path.read_text().strip()


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

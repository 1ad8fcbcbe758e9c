"""Settings defaults, where the CLI takes them from, and what git must never pick up."""

from __future__ import annotations

import inspect
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr
from typer.core import TyperGroup

from urbana.adapters.llm.openai_llm import PRICES, OpenAILLM
from urbana.cli import app
from urbana.config import Settings, conninfo

ROOT = Path(__file__).resolve().parents[2]


def defaults(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings with nothing from the environment or a `.env` file."""
    for name in ("URBANA_LLM_MODEL", "URBANA_LLM_FALLBACK_MODEL", "URBANA_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    return Settings(_env_file=None)


def test_the_default_fallback_model_costs_less_than_the_primary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = defaults(monkeypatch)
    primary_in, primary_out = PRICES[settings.llm_model]
    fallback_in, fallback_out = PRICES[settings.llm_fallback_model]
    assert fallback_in < primary_in
    assert fallback_out < primary_out
    adapter_default = inspect.signature(OpenAILLM).parameters["fallback_model"].default
    assert adapter_default == settings.llm_fallback_model


@pytest.mark.parametrize("name", [".env", ".env.local", "sub/.env"])
def test_env_files_are_ignored_by_git(name: str) -> None:
    checked = subprocess.run(
        ["git", "check-ignore", "--quiet", "--no-index", name], cwd=ROOT, check=False
    )
    assert checked.returncode == 0, f"{name} is not git-ignored"


def commands(group: TyperGroup, prefix: str = "") -> dict[str, Any]:
    """Every leaf command by its full name ("kb add")."""
    found: dict[str, Any] = {}
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            found.update(commands(command, f"{prefix}{name} "))
        else:
            found[prefix + name] = command
    return found


def test_every_command_takes_its_data_dir_from_the_settings() -> None:
    group = typer.main.get_group(app)
    assert isinstance(group, TyperGroup)
    every = commands(group)
    with_data_dir = {
        name: next(p for p in command.params if p.name == "data_dir")
        for name, command in every.items()
        if any(p.name == "data_dir" for p in command.params)
    }
    assert {
        "dev",
        "demo",
        "serve",
        "worker",
        "tenant create",
        "channel connect",
        "kb add",
        "kb reindex",
        "kafka init",
        "replay",
    } <= set(with_data_dir)
    # No default of its own: unset, the command reads URBANA_DATA_DIR (or `.env`).
    assert {name: p.default for name, p in with_data_dir.items()} == dict.fromkeys(with_data_dir)


def test_a_jwt_secret_shorter_than_32_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="32 characters"):
        Settings(jwt_secret=SecretStr("x" * 31))


def test_a_placeholder_jwt_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        Settings(jwt_secret=SecretStr("changeme"))


def test_the_token_lifetime_defaults_to_15_minutes() -> None:
    assert Settings().token_ttl_s == 900


def test_the_jwt_secret_is_made_once_in_the_data_dir_and_kept(tmp_path: Path) -> None:
    from urbana.adapters.keys import jwt_secret_for

    settings = Settings(data_dir=tmp_path)
    first = jwt_secret_for(settings)
    assert len(first) >= 32
    assert (tmp_path / "jwt.key").stat().st_mode & 0o777 == 0o600
    assert jwt_secret_for(settings) == first


def test_a_given_jwt_secret_wins_and_production_requires_one(tmp_path: Path) -> None:
    from urbana.adapters.keys import jwt_secret_for
    from urbana.errors import ConfigurationError

    given = Settings(data_dir=tmp_path, jwt_secret=SecretStr("k" * 40))
    assert jwt_secret_for(given) == b"k" * 40
    assert not (tmp_path / "jwt.key").exists()
    with pytest.raises(ConfigurationError, match="URBANA_JWT_SECRET"):
        jwt_secret_for(Settings(env="production", data_dir=tmp_path))


def test_a_statement_timeout_joins_the_search_path_in_the_connection_options() -> None:
    given = "postgresql://u@db:5432/x?sslmode=require"
    read = conninfo_to_dict(conninfo(given, "tenant_a", statement_timeout_s=2.5))
    assert read["options"] == "-c search_path=tenant_a,public -c statement_timeout=2500"
    assert read["sslmode"] == "require"
    plain = conninfo_to_dict(conninfo(given, "tenant_a"))
    assert plain["options"] == "-c search_path=tenant_a,public"
    assert "options" not in conninfo_to_dict(conninfo(given))

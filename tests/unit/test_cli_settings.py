"""A bad URBANA_* variable stops every command with its name and what is wrong, not a
traceback, and before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from urbana.cli import app


@pytest.mark.parametrize(
    "command", [["dev"], ["serve"], ["worker", "--role", "relay"], ["tenant", "create", "Loja"]]
)
def test_an_invalid_setting_is_named_and_nothing_starts(command: list[str], tmp_path: Path) -> None:
    env = {"URBANA_KAFKA_FETCH_MAX_WAIT_MS": "0", "URBANA_DATA_DIR": str(tmp_path / "data")}
    result = CliRunner().invoke(app, command, env=env)
    assert result.exit_code == 2, result.output
    assert "urbana: URBANA_KAFKA_FETCH_MAX_WAIT_MS: Input should be greater than 0" in (
        result.stderr
    )
    assert "Traceback" not in result.output
    assert not (tmp_path / "data").exists()

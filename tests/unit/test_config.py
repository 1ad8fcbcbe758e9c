"""Settings defaults, where the CLI takes them from, and what git must never pick up."""

from __future__ import annotations

import inspect
import subprocess
from pathlib import Path

import pytest

from urbana.adapters.llm.openai_llm import PRICES, OpenAILLM
from urbana.config import Settings

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

"""Settings defaults, where the CLI takes them from, and what git must never pick up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", [".env", ".env.local", "sub/.env"])
def test_env_files_are_ignored_by_git(name: str) -> None:
    checked = subprocess.run(
        ["git", "check-ignore", "--quiet", "--no-index", name], cwd=ROOT, check=False
    )
    assert checked.returncode == 0, f"{name} is not git-ignored"

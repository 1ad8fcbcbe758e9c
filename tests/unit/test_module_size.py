"""No module of the package grows past 450 lines (docs/architecture.md, Layers): one that
long holds more than one job, and is split by job instead."""

from __future__ import annotations

from pathlib import Path

import urbana

LIMIT = 450


def test_no_module_is_over_450_lines() -> None:
    root = Path(urbana.__file__).parent
    sizes = {
        str(path.relative_to(root)): len(path.read_text(encoding="utf-8").splitlines())
        for path in root.rglob("*.py")
    }
    assert len(sizes) > 100  # the package itself, not an empty directory
    assert {name: n for name, n in sizes.items() if n > LIMIT} == {}

"""Refuse to start a compose profile whose secrets are unset or placeholders.

    python infra/check_env.py NAME...

Compose reads the whole compose file before it picks the profiles, so a profile's
secrets cannot be required with `${NAME:?}` (that would stop the stacks without the
profile too). Each profile's one-shot `*-env-check` service runs this instead, and the
profile's services wait for it. Exit 0 when every NAME has a real value, 1 naming those
that do not.
"""

from __future__ import annotations

import os
import sys

from urbana.config import PLACEHOLDERS


def refused(names: list[str]) -> list[str]:
    """The names whose value is missing, empty or a placeholder word."""
    return [n for n in names if os.environ.get(n, "").strip().lower() in PLACEHOLDERS]


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: check_env.py NAME...", file=sys.stderr)
        return 2
    bad = refused(argv)
    if bad:
        print(
            f"set {', '.join(bad)} in the stack's .env (see .env.example): "
            "unset, empty and placeholder values are refused",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`urbana demo`: the end-to-end showcase on the embedded default."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from urbana.cli.common import out, settings_of, setup_logging


def demo(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Keep data here (default: URBANA_DATA_DIR, else a temp dir)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """The end-to-end showcase on the embedded default."""
    from urbana.demo import run_demo

    setup_logging()
    settings = settings_of(ctx)
    if data_dir is None and "data_dir" in settings.model_fields_set:
        data_dir = Path(settings.data_dir)
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        run_demo(settings, data_dir.resolve(), out)
        return
    with tempfile.TemporaryDirectory(prefix="urbana-demo-") as tmp:
        run_demo(settings, Path(tmp), out)

"""`urbana kafka`: the topics."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from urbana.cli.common import (
    DataDir,
    JsonOut,
    emit,
    refusals,
    require_kafka,
    service_settings,
)

app = typer.Typer(help="Kafka topics.", no_args_is_help=True)


@app.command("init")
def init(
    ctx: typer.Context,
    topics_file: Annotated[
        Path | None, typer.Option(help="Default: infra/kafka/topics.yaml")
    ] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Create the topics of topics.yaml (idempotent)."""
    from urbana.adapters.kafka.topics import init_topics
    from urbana.errors import UrbanaError

    bootstrap = require_kafka(service_settings(ctx, data_dir, need_database=False))
    with refusals(1, UrbanaError):  # a bad topics file, or a broker that is down
        created = asyncio.run(init_topics(bootstrap, topics_file))
    emit(as_json, {"created": created}, "created: " + (", ".join(created) or "nothing (all exist)"))

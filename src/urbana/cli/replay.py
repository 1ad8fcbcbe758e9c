"""`urbana replay`: rebuild read models from the event store, or republish it to Kafka."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from urbana.cli.common import (
    DataDir,
    JsonOut,
    emit,
    err,
    refusals,
    require_kafka,
    service_settings,
)
from urbana.config import Settings

if TYPE_CHECKING:
    from rich.progress import Progress


def replay(
    ctx: typer.Context,
    projection: Annotated[
        list[str] | None, typer.Option("--projection", help="Read model(s) to rebuild.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Rebuild every read model.")] = False,
    from_position: Annotated[
        int | None, typer.Option("--from", help="Skip events at or below this position.")
    ] = None,
    to_kafka: Annotated[
        bool, typer.Option("--to-kafka", help="Republish events to Kafka instead.")
    ] = False,
    from_pos: Annotated[int | None, typer.Option("--from-position")] = None,
    to_pos: Annotated[int | None, typer.Option("--to-position")] = None,
    since: Annotated[datetime | None, typer.Option(help="occurred-at >= (ISO 8601)")] = None,
    until: Annotated[datetime | None, typer.Option(help="occurred-at < (ISO 8601)")] = None,
    conversation: Annotated[str | None, typer.Option(help="Only this conversation.")] = None,
    topic: Annotated[str | None, typer.Option(help="Topic for --to-kafka.")] = None,
    restart: Annotated[bool, typer.Option(help="--to-kafka: ignore a saved checkpoint.")] = False,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Rebuild read models from the event store (resumable), or republish to Kafka."""
    settings = service_settings(ctx, data_dir)
    if to_kafka:
        _republish(settings, from_pos, to_pos, since, until, conversation, topic, restart, as_json)
        return
    if projection and all_:
        err.print("error: give --projection or --all, not both")
        raise typer.Exit(2)
    _rebuild(settings, projection, from_position, as_json)


def _rebuild(
    settings: Settings, projection: list[str] | None, from_position: int | None, as_json: bool
) -> None:
    from urbana.adapters.postgres.replay import replay as rebuild
    from urbana.adapters.postgres.schema import ensure_schema

    ensure_schema(settings.database_url or "", settings.database_schema)
    # The total is known once the first page is read; until then the bar pulses.
    progress = _progress(as_json, None)
    with progress:
        task = progress.add_task("replaying", total=None, rate=0.0)

        def advance(done: int, total: int, rate: float) -> None:
            progress.update(task, completed=done, total=total, rate=rate)

        with refusals(2, ValueError):
            result = rebuild(
                settings.database_url or "",
                settings.database_schema,
                projection or None,
                from_position,
                advance,
            )
    emit(
        as_json,
        {
            "projections": result.projections,
            "events": result.events,
            "position": result.position,
            "seconds": round(result.seconds, 3),
            "events_per_s": round(result.events_per_s, 1),
            "resumed_from": result.resumed_from,
        },
        f"rebuilt {', '.join(result.projections)}: {result.events:,} events in "
        f"{result.seconds:.1f} s ({result.events_per_s:,.0f} ev/s), position {result.position}",
    )


def _republish(
    settings: Settings,
    from_pos: int | None,
    to_pos: int | None,
    since: datetime | None,
    until: datetime | None,
    conversation: str | None,
    topic: str | None,
    restart: bool,
    as_json: bool,
) -> None:
    from urbana.adapters.kafka.republish import republish
    from urbana.adapters.postgres.schema import ensure_schema

    bootstrap = require_kafka(settings)
    ensure_schema(settings.database_url or "", settings.database_schema)
    # How many events a range holds is not known before it is read (filters apply
    # event by event): count what went out and show the store position reached.
    progress = _progress(as_json, "{task.completed:,} events, position {task.fields[position]}")
    with progress:
        task = progress.add_task("republishing", total=None, rate=0.0, position=0)
        started = time.monotonic()

        def tick(done: int, position: int) -> None:
            rate = done / max(time.monotonic() - started, 1e-6)
            progress.update(task, completed=done, rate=rate, position=position)

        published = asyncio.run(
            republish(
                settings.database_url or "",
                settings.database_schema,
                bootstrap,
                topic or settings.events_topic,
                from_pos,
                to_pos,
                since,
                until,
                conversation,
                restart=restart,
                progress=tick,
            )
        )
    emit(
        as_json,
        dataclasses.asdict(published),
        f"republished {published.published:,} events up to position {published.position} "
        f"(job {published.job})",
    )


def _progress(as_json: bool, counts: str | None) -> Progress:
    """A progress bar on stderr (none with --json) whose columns accept an unknown total.

    `counts` formats the count column; by default "done/total events", with "?" for a
    total not known yet.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    count: list[ProgressColumn] = (
        [MofNCompleteColumn(), TextColumn("events")] if counts is None else [TextColumn(counts)]
    )
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *count,
        TextColumn("{task.fields[rate]:,.0f} ev/s"),
        TimeRemainingColumn(),
        console=err,
        disable=as_json,
    )

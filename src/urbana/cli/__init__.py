"""The `urbana` command (typer): one module per command group, composed here.

`serve` (dev, serve, worker), `tenant`, `channel`, `kb`, `kafka`, `replay`, `dlq`,
`user` and `apikey` (access), `jobs`, `privacy`, `demo` and `chat`; `common` holds what
they share (consoles, options, the settings, the store).
"""

from __future__ import annotations

import typer

# `erasure` adds its commands (erase, retention run) to the `privacy` group.
from urbana.cli import (
    access,
    channel,
    chat,
    demo,
    dlq,
    erasure,  # noqa: F401
    jobs,
    kafka,
    kb,
    privacy,
    replay,
    serve,
    tenant,
)

app = typer.Typer(help="Urbana: event-sourced WhatsApp conversation engine.", no_args_is_help=True)
app.command()(serve.dev)
app.command()(serve.serve)
app.command()(serve.worker)
app.command()(replay.replay)
app.command()(demo.demo)
app.command()(chat.chat)
app.add_typer(tenant.app, name="tenant")
app.add_typer(channel.app, name="channel")
app.add_typer(kb.app, name="kb")
app.add_typer(kafka.app, name="kafka")
app.add_typer(dlq.app, name="dlq")
app.add_typer(access.users, name="user")
app.add_typer(access.apikeys, name="apikey")
app.add_typer(jobs.app, name="jobs")
app.add_typer(privacy.app, name="privacy")


def main() -> None:
    app()

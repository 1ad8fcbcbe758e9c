"""The processes of a bench's topology and what they cost: CPU seconds and resident memory.

A topology is every process this bench started (and their children), plus the embedded
servers that detached from it (PostgreSQL's `pg_ctl` leaves the postmaster to init)
but keep the run's temporary directory in their command line, and their children
(PostgreSQL's backends). The bench process itself (load generator, fake LLM and
gateway) is not part of it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable

import psutil


def topology(marker: str) -> list[psutil.Process]:
    """This process's descendants and the processes whose command line holds `marker`
    (a temporary directory of the run), with their descendants."""
    me = psutil.Process(os.getpid())
    roots = list(me.children(recursive=True))
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.pid != me.pid and any(marker in part for part in cmdline):
            roots.append(proc)
    found: dict[int, psutil.Process] = {}
    for root in roots:
        try:
            for proc in [root, *root.children(recursive=True)]:
                found[proc.pid] = proc
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def label(proc: psutil.Process) -> str:
    """A short name for a process: `urbana worker --role relay` -> `worker relay`."""
    try:
        cmdline = proc.cmdline()
    except psutil.Error:
        return "gone"
    for i, part in enumerate(cmdline):
        if part.endswith("urbana") and i + 1 < len(cmdline):
            args = cmdline[i + 1 :]
            if args[0] == "worker" and "--role" in args:
                return f"worker {args[args.index('--role') + 1]}"
            return args[0]
    name = proc.name()
    for server in ("postgres", "tansu", "redis"):
        if server in name or any(server in part for part in cmdline[:1]):
            return server
    return name


def cpu_by_label(marker: str) -> dict[str, float]:
    """CPU seconds (user + system, with reaped children) so far, by process label."""
    out: dict[str, float] = defaultdict(float)
    for proc in topology(marker):
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        out[label(proc)] += t.user + t.system + t.children_user + t.children_system
    return dict(out)


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent between two `cpu_by_label` readings, by label.

    A process that exited in between takes its time with it unless its parent reaped
    it (PostgreSQL's backends are reaped by the postmaster, so they count)."""
    return {k: max(0.0, after.get(k, 0.0) - before.get(k, 0.0)) for k in after}


def rss_by_label(processes: Iterable[psutil.Process]) -> dict[str, float]:
    """Resident memory in MB, summed by process label.

    RSS counts shared pages in every process that maps them (PostgreSQL's shared
    buffers, the interpreter's libraries), so the sum is an upper bound."""
    out: dict[str, float] = defaultdict(float)
    for proc in processes:
        try:
            out[label(proc)] += proc.memory_info().rss / 2**20
        except psutil.Error:
            continue
    return {k: round(v, 1) for k, v in out.items()}

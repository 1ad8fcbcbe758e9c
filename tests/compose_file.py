"""Reading infra/compose.yaml and infra/Dockerfile the way Docker would, without Docker.

Compose's interpolation (`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
`${VAR?error}`, `${VAR:+alt}`, `$VAR`, `$$`) applied to every string value after YAML
parsing (anchors and `<<` merge keys resolved), a service's container environment (its
image's `ENV`, then its `environment`, where a key without a value is passed on from the
operator's environment or left out), and the final stage of the Dockerfile (`ENV`,
`WORKDIR`, `COPY`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "infra" / "compose.yaml"
DOCKERFILE = ROOT / "infra" / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

_VAR = re.compile(
    r"\$(?:\$|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\})"
)


class InterpolationError(ValueError):
    """A required variable (`${VAR:?...}`) is missing; compose refuses to start."""


def raw() -> dict[str, Any]:
    """The compose file as YAML, before interpolation."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def interpolate(value: str, env: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("bare") or m.group("name")
        op, arg = m.group("op"), m.group("arg") or ""
        current = env.get(name)
        present = current is not None and (current != "" or not (op or "").startswith(":"))
        if op in (":-", "-"):
            return current if present and current is not None else interpolate(arg, env)
        if op in (":?", "?"):
            if not present or current is None:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return current
        if op in (":+", "+"):
            return interpolate(arg, env) if present else ""
        return current or ""

    return _VAR.sub(sub, value)


def variables(value: str) -> set[str]:
    """The names a string interpolates."""
    return {m.group("bare") or m.group("name") for m in _VAR.finditer(value) if m.group(0) != "$$"}


def _walk(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {k: _walk(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, env) for v in node]
    return node


def load(env: Mapping[str, str]) -> dict[str, Any]:
    """The compose file as Compose sees it with these variables (raises InterpolationError)."""
    interpolated: dict[str, Any] = _walk(raw(), env)
    return interpolated


def interpolated_names() -> set[str]:
    """Every variable the compose file interpolates, and every one it passes on by name."""
    names: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, str):
            names.update(variables(node))
        elif isinstance(node, dict):
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)

    compose = raw()
    collect(compose)
    for service in compose["services"].values():
        names.update(k for k, v in _environment(service).items() if v is None)
    return names


def _environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {k: (v if sep else None) for k, sep, v in pairs}
    return {k: None if v is None else str(v) for k, v in env.items()}


def env_example() -> dict[str, str]:
    """The .env.example's uncommented assignments (what an unedited copy sets)."""
    return {k: v or "" for k, v in dotenv_values(ENV_EXAMPLE).items()}


def env_example_documented() -> set[str]:
    """Every variable .env.example names as `NAME=` or `# NAME=` (optional ones)."""
    pattern = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)
    return set(pattern.findall(ENV_EXAMPLE.read_text()))


@dataclass(frozen=True)
class Image:
    """The final stage of infra/Dockerfile: its environment, working dir and copied files."""

    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    copies: list[tuple[str, str]] = field(default_factory=list)  # (source in repo, target)


def urbana_image() -> Image:
    stages = re.split(r"^FROM\s", DOCKERFILE.read_text(), flags=re.MULTILINE)
    env: dict[str, str] = {}
    workdir = "/"
    copies: list[tuple[str, str]] = []
    for line in _instructions(stages[-1]):
        word, _, rest = line.partition(" ")
        if word == "ENV":
            for item in shlex.split(rest):
                key, value = item.split("=", 1)
                env[key] = value
        elif word == "WORKDIR":
            workdir = rest.strip()
        elif word == "COPY" and not rest.startswith("--"):
            *sources, target = shlex.split(rest)
            for source in sources:
                dest = target + Path(source).name if target.endswith("/") else target
                copies.append((source, dest))
    return Image(env=env, workdir=workdir, copies=copies)


def _instructions(stage: str) -> list[str]:
    lines = []
    for line in stage.replace("\\\n", " ").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lines.append(stripped)
    return lines


def container_env(
    service: Mapping[str, Any], operator: Mapping[str, str], image: Image | None
) -> dict[str, str]:
    """A service's environment in its container: the image's, then the service's own; a
    key without a value comes from the operator's environment, or stays unset."""
    env = dict(image.env) if image is not None else {}
    for key, value in _environment(service).items():
        if value is not None:
            env[key] = value
        elif key in operator:
            env[key] = operator[key]
    return env


def command(service: Mapping[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """Dependency -> condition (service_started when given as a list)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def healthcheck(service: Mapping[str, Any]) -> list[str] | None:
    """The healthcheck's argv (CMD form), or None."""
    check = service.get("healthcheck")
    if not check or check.get("disable"):
        return None
    test = check["test"]
    if isinstance(test, str):
        return ["sh", "-c", test]
    if test[0] == "CMD":
        return [str(t) for t in test[1:]]
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", str(test[1])]
    return None


def uses_urbana_image(service: Mapping[str, Any]) -> bool:
    build = service.get("build") or {}
    return isinstance(build, dict) and build.get("dockerfile") == "infra/Dockerfile"


def active(services: Mapping[str, Any], profiles: set[str]) -> dict[str, Any]:
    """The services `docker compose --profile P...` starts."""
    return {
        name: s
        for name, s in services.items()
        if not s.get("profiles") or profiles & set(s["profiles"])
    }


def one_shots(services: Mapping[str, Any]) -> set[str]:
    """Services others wait for to complete: jobs that run once and exit."""
    return {
        dep
        for s in services.values()
        for dep, cond in depends_on(s).items()
        if cond == "service_completed_successfully"
    }


def service_references(value: str, names: set[str]) -> set[str]:
    """Compose services a value names as a host (URL, host:port or host[:port]/path)."""
    found = set()
    for token in re.split(r"[\s,;]+", value):
        host = urlparse(token).hostname if "://" in token else token.split(":")[0].split("/")[0]
        if host in names:
            found.add(host)
    return found

"""infra/compose.yaml checked without Docker: against the Compose Specification's schema,
against the `urbana` command and its settings, and for a stack that can start (every
dependency waited for exists, is started by the same profiles and can report healthy).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import typer
import yaml
from tests import compose_file as cf
from tests.conftest import free_port

import urbana.cli
from urbana.config import Settings

SCHEMA = cf.ROOT / "infra" / "compose-spec" / "compose-spec.json"
INFRA = cf.ROOT / "infra"
# Upstream images published under `latest` only (the compose file says how to pin them).
LATEST_ONLY = {"atendai/evolution-audio-converter"}


def operator_env() -> dict[str, str]:
    """A filled-in .env: .env.example with a real value for each secret it leaves empty."""
    env = cf.env_example()
    for name, value in env.items():
        if value == "":
            env[name] = base64.urlsafe_b64encode(os.urandom(24)).decode()
    env["URBANA_MASTER_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    return env


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return cf.load(operator_env())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


def profile_sets(services: dict[str, Any]) -> Iterator[set[str]]:
    """No profile, each profile alone, and every combination of them."""
    profiles = sorted({p for s in services.values() for p in s.get("profiles") or ()})
    for n in range(len(profiles) + 1):
        for chosen in combinations(profiles, n):
            yield set(chosen)


def test_the_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(compose)
    ]
    assert errors == []


def test_the_file_as_written_follows_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(cf.raw())]
    assert errors == []


def test_an_unedited_env_example_is_refused() -> None:
    with pytest.raises(cf.InterpolationError, match="required variable"):
        cf.load(cf.env_example())


def test_each_core_secret_is_required_by_name() -> None:
    required = {m.group(1) for m in re.finditer(r"\$\{([A-Z0-9_]+):\?", cf.COMPOSE.read_text())}
    assert required == {
        "POSTGRES_PASSWORD",
        "URBANA_MASTER_KEY",
        "URBANA_ADMIN_API_KEY",
        "URBANA_JWT_SECRET",
    }
    for name in required:
        env = operator_env()
        env[name] = ""
        with pytest.raises(cf.InterpolationError, match=name):
            cf.load(env)
    assert all(cf.env_example()[name] == "" for name in required)


def test_env_example_documents_every_variable_the_stack_uses_and_no_other() -> None:
    used = cf.interpolated_names()
    documented = cf.env_example_documented()
    assert sorted(used - documented) == []
    assert sorted(documented - used) == []


def env_checks(services: dict[str, Any]) -> dict[str, set[str]]:
    """The `*-env-check` one-shots and the variables each refuses unset or placeholders."""
    return {
        name: set(cf.command(s)[2:])
        for name, s in services.items()
        if cf.command(s)[:2] == ["python", "infra/check_env.py"]
    }


def waits_for(services: dict[str, Any], name: str, target: str) -> bool:
    """Whether `name` starts only after `target` completed (directly or through a job)."""
    for dep, condition in cf.depends_on(services[name]).items():
        if condition != "service_completed_successfully":
            continue
        if dep == target or waits_for(services, dep, target):
            return True
    return False


def test_every_profile_secret_is_checked_before_its_services_start(
    services: dict[str, Any],
) -> None:
    core = {
        "POSTGRES_PASSWORD",
        "URBANA_MASTER_KEY",
        "URBANA_ADMIN_API_KEY",
        "URBANA_JWT_SECRET",
    }
    secrets = {n for n, v in cf.env_example().items() if v == ""} - core
    checks = env_checks(services)
    assert secrets <= set().union(*checks.values())
    for name in services:
        if name in checks:
            continue
        used = cf.variables(yaml.safe_dump(cf.raw()["services"][name])) & secrets
        for check, names in checks.items():
            if used & names:
                assert waits_for(services, name, check), f"{name} uses {sorted(used)}"


def urbana_services(services: dict[str, Any]) -> dict[str, Any]:
    return {n: s for n, s in services.items() if cf.uses_urbana_image(s)}


def resolve(argv: list[str]) -> Any:
    """Parse an `urbana` argv with the real CLI, as it would run (nothing is run): the
    command's context, with its options parsed and validated."""
    assert argv[0] == "urbana"
    command: Any = typer.main.get_group(urbana.cli.app)
    args = argv[1:]
    path = ["urbana"]
    while hasattr(command, "commands"):  # a group: the next word names a command
        name, *args = args
        assert name in command.commands, f"{' '.join(path)} has no command {name!r}"
        path.append(name)
        command = command.commands[name]
    return command.make_context(" ".join(path), list(args))


def test_every_urbana_command_and_option_exists(services: dict[str, Any]) -> None:
    commands = [
        cf.command(s) for s in urbana_services(services).values() if cf.command(s)[0] == "urbana"
    ]
    assert len(commands) >= 7  # kafka init, serve and a worker per role
    for argv in commands:
        try:
            context = resolve(argv)
        except Exception as exc:  # the CLI's usage errors (unknown option, bad value)
            pytest.fail(f"{' '.join(argv)}: {exc}")
        given = {a.split("=")[0] for a in argv if a.startswith("--")}
        declared = {o for p in context.command.params for o in p.opts}
        assert given <= declared, " ".join(argv)


def setting_names() -> set[str]:
    names = set()
    for field_name, field in Settings.model_fields.items():
        names.add(f"URBANA_{field_name.upper()}")
        alias = field.validation_alias
        if alias is not None:
            names.update(str(choice) for choice in getattr(alias, "choices", [alias]))
    return names


def test_every_urbana_variable_is_a_setting(services: dict[str, Any]) -> None:
    settings = setting_names()
    used = {
        key
        for s in urbana_services(services).values()
        for key in s.get("environment") or {}
        if key.startswith("URBANA_")
    }
    used |= {n for n in cf.env_example_documented() if n.startswith("URBANA_")}
    used |= {k for k in cf.urbana_image().env if k.startswith("URBANA_")}
    assert sorted(used - settings) == []


@pytest.mark.parametrize("openai_key", [None, "sk-operator"])
def test_each_urbana_service_loads_its_settings_from_its_container_env(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch, openai_key: str | None
) -> None:
    operator = operator_env()
    if openai_key is not None:
        operator["OPENAI_API_KEY"] = openai_key
    image = cf.urbana_image()
    for name, service in urbana_services(services).items():
        if cf.command(service)[0] != "urbana":
            continue
        env = cf.container_env(service, operator, image)
        for key in list(os.environ):
            if key.startswith(("URBANA_", "OPENAI_", "OTEL_")):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings(_env_file=None)
        assert settings.env == "production", name
        api_key = settings.openai_api_key
        # Unset stays unset: the offline responder answers, not OpenAI with an empty key.
        assert (api_key.get_secret_value() if api_key else None) == (
            openai_key if "OPENAI_API_KEY" in service.get("environment", {}) else None
        ), name
        assert settings.openai_base_url is None, name


def test_every_service_healthy_dependency_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for dep, condition in cf.depends_on(service).items():
            assert dep in services, f"{name} depends on {dep}, which is not a service"
            if condition == "service_healthy":
                assert cf.healthcheck(services[dep]), f"{name} waits for {dep} to be healthy"


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    jobs = cf.one_shots(services)
    missing = [n for n, s in services.items() if n not in jobs and cf.healthcheck(s) is None]
    assert missing == []


def test_one_shot_jobs_run_once(services: dict[str, Any]) -> None:
    for name in cf.one_shots(services):
        assert services[name].get("restart", "no") == "no", name
        assert cf.command(services[name]), name


def test_every_profile_starts_the_services_its_services_wait_for(
    services: dict[str, Any],
) -> None:
    for profiles in profile_sets(services):
        started = cf.active(services, profiles)
        for name, service in started.items():
            for dep in cf.depends_on(service):
                assert dep in started, f"--profile {sorted(profiles)}: {name} needs {dep}"


def test_every_service_named_as_a_host_runs_with_its_user(services: dict[str, Any]) -> None:
    names = set(services)
    for profiles in profile_sets(services):
        started = cf.active(services, profiles)
        for name, service in started.items():
            for value in cf.container_env(service, operator_env(), None).values():
                for host in cf.service_references(value, names) - {name}:
                    assert host in started, f"{name} names {host}, not started with {profiles}"


def test_database_urls_carry_the_database_services_credentials(
    services: dict[str, Any],
) -> None:
    def owner(service: str) -> tuple[str, str, str]:
        env = services[service]["environment"]
        return env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]

    urls = {
        "api": ("URBANA_DATABASE_URL", "postgres"),
        "relay": ("URBANA_DATABASE_URL", "postgres"),
        "evolution": ("DATABASE_CONNECTION_URI", "evolution-postgres"),
    }
    for name, (variable, database) in urls.items():
        url = urlparse(services[name]["environment"][variable])
        assert url.hostname == database
        assert (url.username, url.password, url.path.lstrip("/")) == owner(database), name
    init = services["metabase-init"]["environment"]
    assert init["PGHOST"] == "postgres"
    assert (init["PGUSER"], init["PGPASSWORD"], init["PGDATABASE"]) == owner("postgres")
    metabase = services["metabase"]["environment"]
    assert metabase["MB_DB_HOST"] == "postgres"


def test_evolution_is_wired_to_its_converter_storage_and_cache(services: dict[str, Any]) -> None:
    evolution = services["evolution"]
    assert re.fullmatch(r"evoapicloud/evolution-api:v2\.\d+\.\d+", evolution["image"])
    env = evolution["environment"]
    converter = urlparse(env["API_AUDIO_CONVERTER"])
    assert converter.hostname == "evolution-audio-converter"
    assert str(converter.port) == services["evolution-audio-converter"]["environment"]["PORT"]
    assert converter.path == "/process-audio"
    assert (
        env["API_AUDIO_CONVERTER_KEY"]
        == services["evolution-audio-converter"]["environment"]["API_KEY"]
    )
    assert env["S3_ENDPOINT"] == "evolution-minio"
    minio = services["evolution-minio"]
    assert (env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"]) == (
        minio["environment"]["MINIO_ROOT_USER"],
        minio["environment"]["MINIO_ROOT_PASSWORD"],
    )
    assert cf.healthcheck(minio) == ["mc", "ready", "local"]
    assert urlparse(env["CACHE_REDIS_URI"]).hostname == "evolution-redis"
    assert any(v.endswith(":/evolution/instances") for v in evolution["volumes"])


def test_observability_configs_point_at_the_stack(services: dict[str, Any]) -> None:
    collector = yaml.safe_load((INFRA / "otel" / "collector.yaml").read_text())
    for exporter in collector["exporters"].values():
        host = exporter["endpoint"].split(":")[0]
        assert "observability" in services[host]["profiles"]
    health_port = collector["extensions"]["health_check"]["endpoint"].rsplit(":", 1)[1]
    assert f"127.0.0.1:{health_port}/" in " ".join(cf.healthcheck(services["otel-collector"]) or [])
    prometheus = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    jobs = prometheus["scrape_configs"]
    targets = [t for job in jobs for c in job.get("static_configs", []) for t in c["targets"]]
    assert targets == [f"api:{services['api']['environment']['URBANA_PORT']}"]
    assert all(job["metrics_path"] == "/metrics" for job in jobs)
    # Every worker service is scraped on the port its command serves /metrics on.
    found = {d["names"][0]: str(d["port"]) for job in jobs for d in job.get("dns_sd_configs", [])}
    workers = {
        name: cf.command(s)
        for name, s in services.items()
        if cf.uses_urbana_image(s) and cf.command(s)[:2] == ["urbana", "worker"]
    }
    assert set(found) == set(workers)
    for name, command in workers.items():
        assert command[command.index("--metrics-port") + 1] == found[name], name
        assert services[name]["environment"]["URBANA_HOST"] == "0.0.0.0", name
    # Prometheus sends the operator's metrics token, read from the file its entrypoint writes.
    entrypoint = " ".join(services["prometheus"]["entrypoint"])
    for job in jobs:
        assert job["authorization"]["credentials_file"] in entrypoint
    assert "URBANA_METRICS_TOKEN" in services["prometheus"]["environment"]
    endpoint = cf.env_example_documented() & {"OTEL_EXPORTER_OTLP_ENDPOINT"}
    assert endpoint, "the collector's address is documented for the Urbana services"
    example = re.search(r"OTEL_EXPORTER_OTLP_ENDPOINT=(\S+)", cf.ENV_EXAMPLE.read_text())
    assert example is not None
    assert urlparse(example.group(1)).hostname == "otel-collector"


def test_mounts_are_named_volumes_or_read_only_config_files(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in compose["services"].items():
        for mount in service.get("volumes") or []:
            source, _target, *mode = mount.split(":")
            if source.startswith((".", "/")):
                assert (INFRA / source).is_file(), f"{name}: {source} does not exist"
                assert mode == ["ro"], f"{name}: {source} is mounted writable"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared


def test_upstream_images_are_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue
        repository, _, tag = service["image"].rpartition(":")
        assert repository, f"{name}: {service['image']} has no tag"
        assert tag, f"{name}: {service['image']} has no tag"
        if repository in LATEST_ONLY:
            continue
        assert tag != "latest", f"{name}: {service['image']}"


def test_the_image_holds_every_file_its_services_name(services: dict[str, Any]) -> None:
    image = cf.urbana_image()
    provided = {target for _, target in image.copies}
    for source, _ in image.copies:
        assert (cf.ROOT / source).exists(), source
    for name, service in urbana_services(services).items():
        argv = cf.command(service) + (cf.healthcheck(service) or [])
        for arg in argv:
            if arg.startswith("infra/"):
                inside = str(Path(image.workdir) / arg)
                assert any(
                    inside == t or inside.startswith(t.rstrip("/") + "/") for t in provided
                ), f"{name}: {arg} is not in the image"


def test_profile_checks_refuse_placeholders_and_accept_real_values(tmp_path: Path) -> None:
    script = INFRA / "check_env.py"

    def run(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), "A_SECRET", "B_SECRET"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
        )

    refused = run(A_SECRET="changeme", B_SECRET="")
    assert refused.returncode == 1
    assert "A_SECRET, B_SECRET" in refused.stderr
    assert run(A_SECRET="Xk3-real-value", B_SECRET="another-real-one").returncode == 0


@pytest.mark.parametrize(
    ("check", "env", "reason"),
    [
        ("worker", {"URBANA_KAFKA_BOOTSTRAP": "127.0.0.1:{port}"}, "kafka: 127.0.0.1:"),
        ("worker", {"URBANA_REDIS_URL": "redis://127.0.0.1:{port}/0"}, "redis: "),
        ("api", {"URBANA_PORT": "{port}"}, "/readyz: "),
    ],
)
def test_healthchecks_fail_naming_what_does_not_answer(
    tmp_path: Path, check: str, env: dict[str, str], reason: str
) -> None:
    port = free_port()  # nothing listens there
    done = subprocess.run(
        [sys.executable, str(INFRA / "healthcheck.py"), check],
        env={
            "PATH": os.environ["PATH"],
            **{k: v.format(port=port) for k, v in env.items()},
        },
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(reason)

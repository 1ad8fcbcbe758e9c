"""Settings: environment variables prefixed URBANA_, or a .env file."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlparse

from psycopg.conninfo import make_conninfo
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDERS = {"changeme", "change-me", "secret", "admin", ""}
# The longest a request waits for PostgreSQL before it is answered 503.
DEFAULT_STORE_WAIT_S = 2.0
_SCHEMA_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="URBANA_", env_file=".env", extra="ignore")

    env: Literal["local", "test", "production"] = "local"
    data_dir: Path = Path(".urbana")
    database_url: str | None = None
    database_schema: str | None = None
    kafka_bootstrap: str | None = None
    events_topic: str = "urbana.events.v1"
    consumer_group_prefix: str = "urbana"
    # Short, so a restarted worker is assigned its partitions in seconds; Apache Kafka
    # needs at least its group.min.session.timeout.ms (6000 by default).
    kafka_session_timeout_ms: int = 2000
    # How long the broker may hold a consumer's fetch: small for Tansu, whose delivery
    # lag grows with it; 500 for Apache Kafka, which answers when a record arrives
    # (see urbana.adapters.kafka.consumer).
    kafka_fetch_max_wait_ms: int = Field(default=20, gt=0, le=30_000)
    redis_url: str | None = None
    master_key: SecretStr | None = None
    admin_api_key: SecretStr | None = None
    jwt_secret: SecretStr | None = None  # signs access tokens; at least 32 characters
    token_ttl_s: int = Field(default=900, gt=0, le=86_400)
    # Failed sign-ins allowed per email and per client address in the window (Redis).
    login_attempts_per_email: int = Field(default=5, gt=0)
    login_attempts_per_address: int = Field(default=50, gt=0)
    login_window_s: int = Field(default=900, gt=0, le=86_400)
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("URBANA_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_fallback_model: str = "gpt-4.1-nano"
    llm_timeout_s: float = 20.0
    embeddings: Literal["local", "openai"] = "local"
    debounce_ms: int = 1500
    pool_size: int = 4
    store_wait_s: float = Field(default=DEFAULT_STORE_WAIT_S, gt=0)
    # The longest one read-model query (and the credential check sent with it) may run.
    read_timeout_s: float = Field(default=10.0, gt=0)
    host: str = "127.0.0.1"
    port: int = 8000
    # Outbound: how long a gateway call may take, and how the dispatcher retries.
    send_timeout_s: float = Field(default=10.0, gt=0)
    dispatch_horizon_s: float = Field(default=900.0, gt=0, le=86_400)  # within WhatsApp's 24 h
    dispatch_backoff_initial_s: float = Field(default=1.0, gt=0)
    dispatch_backoff_max_s: float = Field(default=60.0, gt=0)
    dispatch_reconcile_wait_s: float = Field(default=20.0, ge=0)
    dispatch_breaker_failures: int = Field(default=5, ge=1)
    dispatch_breaker_open_s: float = Field(default=5.0, gt=0)
    dispatch_breaker_max_open_s: float = Field(default=120.0, gt=0)
    # Handoff notifications (the notifier role): the Telegram Bot API, and where the
    # notice's button points (the attendants' panel; Telegram wants a public URL).
    telegram_api_url: str = "https://api.telegram.org"
    panel_url: str | None = None  # default: http://HOST:PORT/panel
    notify_backoff_initial_s: float = Field(default=1.0, gt=0)
    notify_backoff_max_s: float = Field(default=30.0, gt=0)
    notify_horizon_s: float = Field(default=3_600.0, gt=0)  # then the notice ends expired
    # The live feed under /v1/stream.
    live_heartbeat_s: float = Field(default=15.0, gt=0)
    live_queue_size: int = Field(default=1_000, ge=1)
    # The assigner: how often the inactivity rule looks for conversations to take back.
    inactivity_sweep_s: float = Field(default=30.0, gt=0)
    # The scheduler: how often it looks for due jobs, and how often a waiting one tries
    # to take over (the lead passes within this after the leader dies).
    scheduler_tick_s: float = Field(default=30.0, gt=0)
    scheduler_takeover_s: float = Field(default=1.0, gt=0)
    # GET /metrics: a bearer token it asks for (unset: open, as on a private network),
    # and the port a worker process serves it on (unset: a worker serves none).
    metrics_token: SecretStr | None = None
    metrics_port: int | None = Field(default=None, ge=0, le=65_535)

    @field_validator("admin_api_key", "master_key", "jwt_secret", "metrics_token")
    @classmethod
    def _no_placeholders(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip().lower() in PLACEHOLDERS:
            raise ValueError("refusing a placeholder secret")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("URBANA_JWT_SECRET needs at least 32 characters")
        return value


def postgres_parts(url: str) -> dict[str, str]:
    """Split a libpq URL into the parts the eventsourcing library wants.

    Handles Unix-socket URLs of the form postgresql://user:@/db?host=/dir.
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"not a PostgreSQL URL: {parsed.scheme}://...")
    query = parse_qs(parsed.query)
    host = query.get("host", [parsed.hostname or "localhost"])[0]
    port = query.get("port", [str(parsed.port or 5432)])[0]
    return {
        "dbname": unquote(parsed.path.lstrip("/")) or "postgres",
        "host": host,
        "port": port,
        "user": unquote(parsed.username or "postgres"),
        "password": unquote(parsed.password or ""),
    }


def conninfo(
    url: str,
    schema: str | None = None,
    *,
    wait_s: float = DEFAULT_STORE_WAIT_S,
    statement_timeout_s: float | None = None,
) -> str:
    """The libpq conninfo of every connection Urbana makes to PostgreSQL.

    The URL's own parameters (sslmode, ...) are kept; the search_path starts with
    `schema` (then `public`, where the `vector` type lives), connecting gives up within
    the store wait, and with `statement_timeout_s` every statement is cancelled after it.
    """
    if schema and not _SCHEMA_NAME.match(schema):
        raise ValueError(f"bad schema name {schema!r}")
    extra = {"connect_timeout": str(connect_timeout_s(wait_s))}
    options = []
    if schema:
        options.append(f"-c search_path={schema},public")
    if statement_timeout_s is not None:
        options.append(f"-c statement_timeout={max(1, round(statement_timeout_s * 1000))}")
    if options:
        extra["options"] = " ".join(options)
    return make_conninfo(url, **extra)


def connect_timeout_s(wait_s: float) -> int:
    """libpq's connect timeout for a wait: whole seconds, and anything under 2 counts as 2."""
    return max(2, math.ceil(wait_s))

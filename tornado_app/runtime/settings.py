"""Every setting of the server, read once at start from the environment and a `.env` file (the
environment wins), and validated."""

import os
import re
import resource
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

from .listen import default_backlog

_ORIGIN = re.compile(r"https?://[^/\s]+")


def _default_max_connections() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    # Leave room for the database, Redis, log files and the listening sockets.
    return max(64, soft - 256)


class Settings(BaseSettings):
    # The `.env` file is named by load_settings (ENV_FILE); a variable of the process environment
    # wins over the same one in the file, and both over the defaults. An empty value (`NAME=`,
    # as a copied .env.example may have) is the default.
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore",
                                      env_file_encoding="utf-8", env_ignore_empty=True)

    app_env: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(8888, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # `console`: one coloured, human-readable line per record (colour only on a terminal or with
    # FORCE_COLOR); `json`: one object per line. `auto`: console under `serve --dev`, else json.
    log_format: Literal["auto", "console", "json"] = "auto"
    # Autoreload on a change of the code, one worker, console logs (`make dev`, `serve --dev`).
    dev: bool = False
    data_dir: Path = Path("./var")

    mongodb_uri: str | None = None
    mongodb_db: str = Field("tornado_app", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    # Seconds before a database call is given up and answered with 503.
    db_timeout: float = Field(3.0, gt=0, le=60)
    ferretdb_bin: str | None = None

    jwt_secret: str | None = None
    jwt_issuer: str = "tornado-app"
    jwt_audience: str = "tornado-app-api"
    access_token_ttl: int = Field(15 * 60, ge=1)
    refresh_token_ttl: int = Field(7 * 24 * 3600, ge=1)
    bcrypt_rounds: int = Field(12, ge=4, le=31)
    login_max_failures: int = Field(5, ge=1)
    login_window: int = Field(15 * 60, ge=1)
    # Seconds between re-checks of open WebSockets, SSE streams and parked long-polls against
    # the database: how soon a logout, role change or expired token reaches them in any worker.
    auth_recheck_interval: float = Field(2.0, gt=0, le=60)

    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    # Comma-separated, e.g. "https://app.example.com,https://admin.example.com".
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    event_retention: int = Field(24 * 3600, ge=1)
    # Seconds a request holds its Idempotency-Key before a retry may take it over (its process
    # died): longer than any request takes.
    idempotency_lease: float = Field(30.0, gt=0, le=3600)
    ws_ping_interval: float = Field(20.0, gt=0)
    ws_max_message_bytes: int = Field(64 * 1024, ge=256)
    ws_max_subscriptions: int = Field(100, ge=1)
    ws_max_pending_bytes: int = Field(1024 * 1024, ge=1024)
    # permessage-deflate (RFC 7692) for WebSockets whose client offers it: each event is
    # compressed once and the same bytes go to every such subscriber. False: never negotiated.
    ws_compression: bool = True
    redis_url: str | None = None
    # `--workers N > 1` on FerretDB is refused: its updates are read-then-write, and only one
    # process can keep them to one connection. This lets it start anyway, for read-only load
    # (the benchmark's multi-worker scenario); concurrent updates of one document may then both
    # succeed (a stock oversold).
    allow_unsafe_multiworker_ferretdb: bool = False
    shutdown_timeout: float = Field(10.0, gt=0)

    # Seconds a connection may sit idle (also the limit for sending request headers), and for
    # sending a request body: slow clients cannot hold connections open forever.
    http_idle_timeout: float = Field(60.0, gt=0)
    http_body_timeout: float = Field(30.0, gt=0)
    # Open connections per process before new ones are refused with 503; by default what the
    # open-files limit leaves room for.
    max_connections: int = Field(default_factory=lambda: _default_max_connections(), ge=1)
    # Connections the kernel may hold, handshake done, until the server accepts them: room for
    # every client reconnecting at once after a deploy. Past the system's maximum for one socket
    # (net.core.somaxconn) it is spread over several sockets on the port (runtime/listen.py).
    listen_backlog: int = Field(default_factory=lambda: default_backlog(), ge=1, le=1 << 20)
    ws_max_messages_per_second: float = Field(50.0, gt=0)
    # Posts and products read by id kept in the process until a write to their collection
    # (storage/read_cache.py). `auto`: on against FerretDB without REDIS_URL (this process is
    # then the only server writing); `on` promises that no other server process writes.
    read_cache: Literal["auto", "on", "off"] = "auto"

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not an origin like https://example.com")
        return [origin.rstrip("/").lower() for origin in value]

    @model_validator(mode="after")
    def _production_needs_secret(self):
        if self.app_env == "production":
            if not self.jwt_secret or len(self.jwt_secret.encode()) < 32:
                raise ValueError("APP_ENV=production requires JWT_SECRET of at least 32 bytes")
        if self.refresh_token_ttl < self.access_token_ttl:
            raise ValueError("REFRESH_TOKEN_TTL must not be shorter than ACCESS_TOKEN_TTL")
        return self

    @property
    def embedded_database(self) -> bool:
        return not self.mongodb_uri


class SettingsError(Exception):
    """A setting from the environment is invalid; the message names each one."""


# The file read for settings: ENV_FILE names another one, and ENV_FILE= (empty) reads none (the
# test suite does that, so a developer's .env cannot change what the tests run against).
DEFAULT_ENV_FILE = ".env"


def env_file() -> str | None:
    return os.environ.get("ENV_FILE", DEFAULT_ENV_FILE) or None


def load_settings(**overrides) -> Settings:
    try:
        return Settings(_env_file=env_file(), **overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "_".join(str(part) for part in err["loc"]).upper() or "settings"
            lines.append(f"  {name}: {err['msg']}")
        raise SettingsError("invalid configuration:\n" + "\n".join(lines)) from None
    except _SourceError as exc:
        raise SettingsError(f"invalid configuration: {exc}") from None

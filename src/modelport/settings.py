"""The one place that reads the environment and the operator's config file.

`load_settings()` builds one frozen `Settings` value from `MODELPORT_*` environment variables
and the optional TOML file named by `MODELPORT_CONFIG`; the environment wins over the file.
Everything else receives the value; nothing else reads `os.environ`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from modelport.core.catalog import ConfigError

PREFIX = "MODELPORT_"
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s]+")
LogLevel = Literal["debug", "info", "warning", "error"]


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    data_dir: str = "./data"
    config: str | None = None
    database_url: str | None = None  # default: SQLite in data_dir
    public_url: str | None = None  # used in model pages and code samples
    log_level: LogLevel = "info"
    # Log lines as JSON objects (one per line), readable text, or "auto": text when stderr is
    # a terminal (`make serve`), JSON otherwise (docs/operations.md).
    log_format: Literal["auto", "json", "text"] = "auto"
    # An access line per request (probes of /healthz, /readyz and /metrics: failures only).
    access_log: bool = True
    # GET /metrics (Prometheus): with a token, for `Authorization: Bearer <token>` only;
    # without one, for clients on the loopback address only.
    metrics_token: str | None = None
    # HTTPS served by modelport itself: a PEM certificate (chain) and its private key.
    tls_cert: str | None = None
    tls_key: str | None = None
    workers: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 1
    llama_threads: int = 1  # default n_threads for llama.cpp backends that set none
    # Load local models at start-up instead of on first use (a request then never waits for
    # a load, and a model that cannot load stops the start).
    preload: bool = False
    key_cache_ttl: float = 5.0  # seconds an API key lookup is trusted before re-reading
    max_request_bytes: int = 32 * 1024 * 1024
    # Slow and idle clients (docs/configuration.md, "Slow and idle clients"). Seconds from
    # a connection's start, or the end of its previous response, until a request's headers are
    # complete: bounds slowloris headers and idle keep-alive connections at once (granian).
    header_timeout: Annotated[float, msgspec.Meta(gt=0)] = 20.0
    # Seconds a request body may take to arrive, plus one more per `body_min_rate` bytes that
    # did arrive (a large body on a slow link gets longer, a trickle does not); 0: no limit.
    body_timeout: Annotated[float, msgspec.Meta(ge=0)] = 15.0
    body_min_rate: Annotated[int, msgspec.Meta(ge=0)] = 32 * 1024
    # Requests one client address may have in flight in one worker process (429 beyond it);
    # 0: no cap.
    max_requests_per_client: Annotated[int, msgspec.Meta(ge=0)] = 128
    # Connections open at once, all workers together (granian); more wait in the listen queue.
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 1024
    # The model the Anthropic door serves for Claude model ids ("claude-…"), which Claude
    # Code sends unless ANTHROPIC_MODEL is set; None: such ids are a 404 that says so.
    claude_model: str | None = None
    # Failed authentications (401) one client address may have within `auth_failure_window`
    # seconds; further attempts get 429 until the window ends. 0: no throttling.
    auth_failure_limit: Annotated[int, msgspec.Meta(ge=0)] = 20
    auth_failure_window: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    # Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For names the client;
    # empty: the header is ignored and the client is the connection's peer.
    trusted_proxies: tuple[str, ...] = ()
    # Origins a browser may call the API from (CORS), "*" for any; empty: none.
    cors_origins: tuple[str, ...] = ()
    # Who may create an account in the browser (/console/signup): "open" (anyone), "invite"
    # (with a top-up code as the invitation, its amount the account's first credit) or
    # "closed" (accounts come from the operator's CLI), and the credit in CNY a new account
    # starts with besides.
    signup: Literal["open", "invite", "closed"] = "open"
    signup_credit: str = "0"
    # Days a stored response of the Responses API (`store: true`) is kept for
    # previous_response_id and GET /v1/responses/{id}.
    responses_retention_days: Annotated[float, msgspec.Meta(gt=0, le=3650)] = 30.0
    # Redis for several replicas: shared rate-limit counters and key-cache invalidation.
    redis_url: str | None = None
    # Names in Redis start with this: installations sharing one Redis need different ones.
    redis_prefix: str = "modelport"
    # Seconds a credit lease outlives its process's last heartbeat (sent every quarter of
    # it): credit leased by a process that died goes back to its account this long after.
    hold_ttl: float = 120.0
    # Milliseconds a settled request's usage row and charge may wait, to be written together
    # with others (write-behind): the most a kill -9 can leave unbilled beyond requests in flight.
    write_behind_ms: float = 10.0
    # [[models]] entries from the config file, merged into the shipped catalog by id
    models: tuple[dict[str, Any], ...] = ()
    # Secrets referenced as "env:NAME" in the config file, resolved here at load time.
    secrets: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both, or neither")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"tls: {path!r} is not a readable file")
        if self.tls_cert is not None and self.tls_key is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.tls_cert, self.tls_key)
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(
                    f"tls: {self.tls_cert!r} and {self.tls_key!r} are not a PEM certificate and "
                    f"its unencrypted private key ({exc})"
                ) from None
        if self.metrics_token is not None and not self.metrics_token.strip():
            raise ValueError("metrics_token is empty: unset it (loopback only) or give a token")
        for entry in self.trusted_proxies:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {entry!r} is not an IP address or network (CIDR)"
                ) from None
        for origin in self.cors_origins:
            if origin.strip() != "*" and not _ORIGIN.fullmatch(origin.strip().rstrip("/")):
                raise ValueError(
                    f"cors_origins: {origin!r} is not an origin (scheme://host[:port], no path) "
                    "or *"
                )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'modelport.db'}"


# Settings that can come from the environment (all but the file-only `models`/`secrets`).
ENV_FIELDS: tuple[str, ...] = tuple(
    name for name in Settings.__struct_fields__ if name not in ("models", "secrets")
)
FILE_FIELDS: tuple[str, ...] = tuple(
    name for name in Settings.__struct_fields__ if name not in ("config", "secrets")
)
# Lists: comma-separated in the environment, TOML arrays in the file.
LIST_FIELDS: tuple[str, ...] = ("trusted_proxies", "cors_origins")


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _secret_references(value: object, found: set[str]) -> None:
    if isinstance(value, str) and value.startswith("env:"):
        found.add(value[4:])
    elif isinstance(value, Mapping):
        for item in value.values():
            _secret_references(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _secret_references(item, found)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from `environ` (default: the process environment) and the file."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    config_path = env.get(PREFIX + "CONFIG")
    if config_path:
        try:
            with open(config_path, "rb") as handle:
                file_values = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"MODELPORT_CONFIG={config_path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: invalid TOML: {exc}") from None
        unknown = sorted(set(file_values) - set(FILE_FIELDS))
        if unknown:
            raise ConfigError(
                f"{config_path}: unknown setting(s) {', '.join(unknown)}; "
                f"valid: {', '.join(FILE_FIELDS)}"
            )
        raw.update(file_values)
        raw["config"] = config_path
    for key, value in env.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :].lower()
        if name not in ENV_FIELDS:
            valid = ", ".join(PREFIX + field.upper() for field in ENV_FIELDS)
            raise ConfigError(f"unknown environment variable {key}; valid: {valid}")
        raw[name] = _split(value) if name in LIST_FIELDS else value
    references: set[str] = set()
    _secret_references(raw.get("models", ()), references)
    missing = sorted(name for name in references if name not in env)
    if missing:
        raise ConfigError(f"config refers to unset environment variable(s): {', '.join(missing)}")
    raw["secrets"] = {name: env[name] for name in references}
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid settings: {exc}") from None


def resolve_secret(value: str | None, settings: Settings) -> str | None:
    """Turn an `env:NAME` reference into its value (captured at load time)."""
    if value is not None and value.startswith("env:"):
        return settings.secrets[value[4:]]
    return value

"""Settings: one YAML file with ``${VAR}`` interpolation, validated once at start-up.

Where the file comes from: ``--config PATH``, else ``$IMAGEGATE_CONFIG``, else ``./imagegate.yaml``
if present, else built-in defaults. Unknown keys and bad values are refused with a message that
names the key (``channels.0.weight: ...``). Settings are resolved once and passed in; nothing
else in imagegate reads the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(Exception):
    """A configuration problem, worded for the operator."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BreakerConfig(_Strict):
    """When a channel's circuit breaker opens (routing then skips the channel) and when it probes again."""

    failures: int = Field(default=5, ge=1)
    """Retryable failures in a row (5xx, timeouts, connection errors, a refused key) that open it."""
    error_rate: float = Field(default=0.5, gt=0, le=1)
    """Share of failed requests over ``window`` seconds that opens it, once ``min_requests`` were seen."""
    window: float = Field(default=60.0, gt=0)
    min_requests: int = Field(default=20, ge=1)
    cooldown: float = Field(default=30.0, gt=0)
    """Seconds an open breaker waits before letting one probe request through (half-open)."""


class ChannelConfig(_Strict):
    """One upstream account: a provider protocol, where to reach it, and which models it serves."""

    name: str
    provider: str
    base_url: str | None = None
    api_key: str | None = None
    models: dict[str, str] | None = None
    """Public model name → upstream model name; default: every model the provider usually serves."""
    priority: int = 0
    """Lower is tried first."""
    weight: int = Field(default=1, ge=1)
    """Share of traffic among channels of equal priority."""
    timeout: float = Field(default=180.0, gt=0)
    """Seconds for one upstream HTTP exchange."""
    poll_interval: float = Field(default=2.0, gt=0)
    """Seconds between polls of queue-style upstreams."""
    deadline: float = Field(default=600.0, gt=0)
    """Seconds a job may take on this channel, polling included, before it fails."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Provider-specific settings, validated by the adapter."""
    proxy: str | None = None
    """HTTP(S) proxy for this channel; default: from ``HTTPS_PROXY``/``NO_PROXY`` at start-up."""
    max_inflight: int | None = Field(default=None, ge=1)
    """Upstream submissions this channel may have running at once in one process; a request over the
    cap fails over to the next channel (none left: 503 ``channel_busy``). Default: no cap."""
    rpm: int | None = Field(default=None, ge=1)
    """Submissions per minute to this channel from one process (a moving window); over it, the next
    channel. Default: no limit."""
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)


class PriceConfig(_Strict):
    """A model's price in currency units (converted to integer micro-units internally).

    Per image (``per_image``, refined by ``by_size``/``by_quality``) or per token
    (``input_per_million``/``output_per_million``) for upstreams that report token usage.
    """

    per_image: Decimal | None = Field(default=None, ge=0)
    by_size: dict[str, Decimal] = Field(default_factory=dict)
    by_quality: dict[str, Decimal] = Field(default_factory=dict)
    input_per_million: Decimal | None = Field(default=None, ge=0)
    output_per_million: Decimal | None = Field(default=None, ge=0)
    max_output_tokens_per_image: int = Field(default=8000, gt=0)
    """What a hold assumes one image may cost in output tokens, for per-token prices."""
    max_input_tokens: int = Field(default=2000, gt=0)
    """What a hold assumes the input may cost in tokens, for per-token prices."""


class BillingConfig(_Strict):
    """When the reaper may release a sync request's hold left behind by a crash."""

    hold_margin: float = Field(default=60.0, gt=0)
    """Seconds a sync hold outlives the longest its request can run before the reaper may release
    it even though its process still beats (a backstop)."""
    reap_interval: float = Field(default=10.0, gt=0)
    """Seconds between two passes of the hold reaper (it also runs once at start-up)."""
    heartbeat_interval: float = Field(default=10.0, gt=0)
    """Seconds between two heartbeats of a gateway process (``instances`` table)."""
    instance_stale_after: float = Field(default=30.0, gt=0)
    """Seconds without a heartbeat after which a process counts as dead and its holds are released."""

    @model_validator(mode="after")
    def _stale_after_beats(self) -> BillingConfig:
        if self.instance_stale_after < 2 * self.heartbeat_interval:
            raise ValueError("instance_stale_after must be at least twice heartbeat_interval "
                             "(a live process must never look dead)")
        return self


class LimitsConfig(_Strict):
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_file_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    max_files: int = Field(default=16, gt=0)
    max_image_pixels: int = Field(default=64_000_000, gt=0, le=8192 * 8192)
    """Pixels (width x height, read from the header) a reference image or mask may have; more is a
    400 ``image_too_large`` before anything is decoded. At most 8192 x 8192, the decoder's own
    ceiling for untrusted images (``imaging.MAX_PIXELS``)."""
    max_prompt_chars: int = Field(default=32_000, gt=0)
    """Characters of prompt any model takes; a model whose vendor documents a lower limit has its own
    (``ModelSpec.max_prompt``)."""


class TasksConfig(_Strict):
    workers: int = Field(default=32, ge=0)
    """Task steps run concurrently per gateway process (0: this process only accepts tasks).
    Steps are I/O-bound (a sync upstream holds one for the whole generation), so this is high."""
    lease_seconds: float = Field(default=60.0, gt=0)
    deadline: float = Field(default=900.0, gt=0)
    """Seconds from submission after which an unfinished task fails."""
    retention_days: float = Field(default=7.0, gt=0)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_timeout: float = Field(default=15.0, gt=0)
    webhook_backoff: float = Field(default=30.0, gt=0)
    """Seconds before the first webhook retry; doubled per attempt, with jitter (or the endpoint's
    ``Retry-After``, when it asks for longer)."""
    webhook_pause_after: int = Field(default=20, ge=0)
    """Failed attempts in a row after which a webhook URL is paused until resumed (0: never)."""
    poll_seconds: float = Field(default=1.0, gt=0)
    """How often idle workers look in the database for tasks other processes queued (this
    process's own submissions and due polls wake them at once)."""


class StorageConfig(_Strict):
    """How long stored images are kept, and how to reach an S3-compatible store (``storage_url``
    says where they are kept). The S3 settings left out are taken from the AWS SDKs' standard
    variables by ``load_settings`` (``s3_settings_from_env``): a value in the file wins."""

    retention_days: float | None = Field(default=30.0, ge=0)
    """Days a stored image (generated, or uploaded for an async task) is kept; 0 or null: forever.
    An async task's images stay as long as the task itself does (``tasks.retention_days``)."""
    sweep_interval: float = Field(default=3600.0, gt=0)
    """Seconds between two passes of the sweeper (it also runs once at start-up)."""
    endpoint_url: str | None = None
    """``s3://`` stores: the S3-compatible server (``http://`` allowed, e.g. MinIO); default: AWS
    (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``)."""
    region: str | None = None
    """``s3://`` stores: the bucket's region (``AWS_REGION``, ``AWS_DEFAULT_REGION``); default us-east-1."""
    access_key_id: str | None = None
    """``s3://`` stores (``AWS_ACCESS_KEY_ID``); none at all: the host's credentials (instance role,
    web identity), found by the S3 client."""
    secret_access_key: str | None = None
    """``s3://`` stores (``AWS_SECRET_ACCESS_KEY``)."""
    session_token: str | None = None
    """``s3://`` stores: for temporary credentials (``AWS_SESSION_TOKEN``)."""
    path_style: bool | None = None
    """``s3://`` stores: ``<endpoint>/<bucket>/<key>`` addressing instead of ``<bucket>.<endpoint>``;
    default: true when ``endpoint_url`` is set (what MinIO-like servers expect), else false."""
    presign: bool = False
    """``s3://`` stores: hand out the object store's own presigned URLs (clients download from the
    bucket) instead of this gateway's signed ``/files/`` URLs (the gateway streams from the bucket)."""

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_http(cls, v: str | None) -> str | None:
        if v is None:
            return None
        scheme, sep, rest = v.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
            raise ValueError("endpoint_url must be an http:// or https:// URL, e.g. http://127.0.0.1:9000")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _key_pairs(self) -> StorageConfig:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key are given together (or neither)")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        return self

    @property
    def keeps_forever(self) -> bool:
        return not self.retention_days

    @property
    def uses_path_style(self) -> bool:
        return self.path_style if self.path_style is not None else self.endpoint_url is not None


_AWS_VARIABLES = {"endpoint_url": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
                  "region": ("AWS_REGION", "AWS_DEFAULT_REGION")}
_AWS_KEYS = {"access_key_id": "AWS_ACCESS_KEY_ID", "secret_access_key": "AWS_SECRET_ACCESS_KEY",
             "session_token": "AWS_SESSION_TOKEN"}


def s3_settings_from_env(storage: Any, env: Mapping[str, str]) -> Any:
    """The ``storage:`` section with the S3 settings it leaves out taken from the AWS SDKs'
    standard variables. Keys come as a set: from the file if it names either key, else from the
    environment (a key id from one place never meets a secret from the other)."""
    if storage is None:
        storage = {}
    if not isinstance(storage, dict):
        return storage  # validation names the problem
    merged = dict(storage)
    for name, variables in _AWS_VARIABLES.items():
        if merged.get(name) is None:
            merged[name] = next((env[v] for v in variables if env.get(v)), None)
    if merged.get("access_key_id") is None and merged.get("secret_access_key") is None:
        for name, variable in _AWS_KEYS.items():
            if merged.get(name) is None:
                merged[name] = env.get(variable) or None
    return {k: v for k, v in merged.items() if v is not None or k in storage}


class Settings(_Strict):
    public_url: str = "http://127.0.0.1:8000"
    database_url: str = "sqlite+aiosqlite:///./data/imagegate.db"
    storage_url: str = "file://./data/images"
    secret_key: str | None = None
    """Signs file URLs; default: generated once and kept in the database."""
    url_ttl: int = Field(default=3600, gt=0)
    channels: list[ChannelConfig] | None = None
    """None: one channel per provider whose usual key variable is set."""
    local_model: bool = True
    """Serve the embedded ``imagegate-shapes`` model (no keys, no network)."""
    catalog: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Model catalog additions and overrides, keyed by catalog model name (``imagegate.catalog``:
    validated when the router is built, errors named ``catalog.<name>.<key>``)."""
    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    billing: BillingConfig = Field(default_factory=BillingConfig)
    outbound_allowlist: list[str] = Field(default_factory=list)
    """Hosts or CIDRs that reference-image and webhook fetches may reach although not public."""
    cache_check_interval: float = Field(default=0.25, gt=0)
    """Seconds between two looks at the change counters that keep every process's key cache
    true (a revocation elsewhere takes effect within this time)."""
    redis_url: str | None = None
    """Redis shared by several gateway processes and replicas: rate-limit windows and wake-up hints
    (``events.py``); default: none (per-process memory, database polls)."""
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    admin_token: str | None = None
    metrics_token: str | None = None
    """Bearer token for ``/metrics`` (default: the admin token; neither set: ``/metrics`` is a 404
    on the main port)."""
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """Serve ``/metrics`` on this port instead of the main one (every worker shares it)."""
    metrics_host: str = "127.0.0.1"
    """The address ``metrics_port`` listens on (``0.0.0.0`` for a scraper on another host)."""
    log_format: Literal["auto", "json", "console"] = "auto"
    """``auto``: human-readable when stderr is a terminal, else one JSON object per line."""
    log_level: str = "info"
    log_prompts: bool = False
    """Put prompts in the request log lines (off: they may hold personal data)."""
    drain_seconds: float = Field(default=0.0, ge=0)
    """On SIGTERM, ``/readyz`` answers 503 and the listener stays open at least this long (then until
    the requests in flight are done) so a load balancer stops sending traffic first."""
    console_session_ttl: int = Field(default=28800, gt=0)
    """Seconds a web console sign-in lasts (``/console``)."""

    @field_validator("prices", mode="before")
    @classmethod
    def _plain_price(cls, v: Any) -> Any:
        # ``gpt-image-1: 0.04`` is shorthand for ``{per_image: 0.04}``.
        if isinstance(v, Mapping):
            return {k: {"per_image": p} if isinstance(p, int | float | str) else p for k, p in v.items()}
        return v

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, v: str) -> str:
        return v.rstrip("/")


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed YAML tree."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            if m[1] in env:
                return env[m[1]]
            if m[2] is not None:
                return m[2]
            raise ConfigError(f"environment variable {m[1]} is not set (used as ${{{m[1]}}})")

        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def config_path(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if env.get("IMAGEGATE_CONFIG"):
        return Path(env["IMAGEGATE_CONFIG"])
    default = Path("imagegate.yaml")
    return default if default.exists() else None


def load_settings(path: str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    file = config_path(path, env)
    raw: Any = {}
    if file is not None:
        try:
            raw = yaml.safe_load(file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {file}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {file} must hold a mapping of keys")
    raw = interpolate(raw, env)
    raw.setdefault("admin_token", env.get("IMAGEGATE_ADMIN_TOKEN") or None)
    if env.get("IMAGEGATE_PUBLIC_URL"):  # set by ``serve`` from --host/--port when the file has none
        raw.setdefault("public_url", env["IMAGEGATE_PUBLIC_URL"])
    if str(raw.get("storage_url", "")).lower().startswith("s3://"):
        raw["storage"] = s3_settings_from_env(raw.get("storage"), env)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
        )
        where = f" in {file}" if file else ""
        raise ConfigError(f"invalid configuration{where}: {problems}") from exc

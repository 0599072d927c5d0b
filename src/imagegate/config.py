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
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(Exception):
    """A configuration problem, worded for the operator."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    """Seconds a sync hold outlives the longest its request can run before the reaper may release it."""
    reap_interval: float = Field(default=30.0, gt=0)
    """Seconds between two passes of the hold reaper (it also runs once at start-up)."""


class LimitsConfig(_Strict):
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_file_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    max_files: int = Field(default=16, gt=0)
    max_image_pixels: int = Field(default=64_000_000, gt=0)


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
    """Seconds before the first webhook retry; doubled per attempt, with jitter."""
    poll_seconds: float = Field(default=1.0, gt=0)
    """How often idle workers look in the database for tasks other processes queued (this
    process's own submissions and due polls wake them at once)."""


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
    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    billing: BillingConfig = Field(default_factory=BillingConfig)
    outbound_allowlist: list[str] = Field(default_factory=list)
    """Hosts or CIDRs that reference-image and webhook fetches may reach although not public."""
    redis_url: str | None = None
    """Rate-limit storage shared by several gateway processes; default in memory."""
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    admin_token: str | None = None

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
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
        )
        where = f" in {file}" if file else ""
        raise ConfigError(f"invalid configuration{where}: {problems}") from exc

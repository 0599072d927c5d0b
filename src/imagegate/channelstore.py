"""Channels kept in the database, next to the configuration's: made, edited, disabled, re-enabled
and removed at runtime (admin API, ``imagegate channels``), in force without a restart.

A stored channel has the fields of a YAML channel; its API key is encrypted at rest with a key
derived from the gateway's secret (``secret_key``, or the secret kept in the database): Fernet
(AES-128-CBC + HMAC-SHA256) under an HKDF-SHA256 key, so the database alone never reveals it.
Every change bumps the ``channels`` change counter in its transaction; each process's
``EpochWatcher`` then calls ``ChannelRuntime.reload``, which builds a new ``Router`` (the
configuration's channels, then the enabled stored ones) and swaps it in whole — jobs already
planned keep the routes they were planned with. Configuration channels are read-only here.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.catalog import Catalog
from imagegate.config import ChannelConfig, ConfigError, Settings
from imagegate.db.models import ChannelRow
from imagegate.epochs import CHANNELS, bump
from imagegate.routing import Router, default_channels, with_proxy

log = logging.getLogger("imagegate.channels")


class Sealer:
    """Encrypts channel API keys with a key derived from the gateway's secret."""

    def __init__(self, secret: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"imagegate channel api keys").derive(secret)
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigError("a stored channel key cannot be decrypted: the secret key changed") from None


class ChannelExists(ValueError):
    """A channel of that name exists already (in the configuration or the database)."""


def stored_fields(cfg: ChannelConfig) -> dict[str, Any]:
    """What the ``config`` column keeps: the fields set, without the name and the key."""
    return cfg.model_dump(mode="json", exclude={"name", "api_key"}, exclude_unset=True)


def config_of(row: ChannelRow, sealer: Sealer) -> ChannelConfig:
    key = sealer.open(row.api_key_sealed) if row.api_key_sealed else None
    return ChannelConfig.model_validate({**row.config, "name": row.name, "api_key": key})


async def rows(session: AsyncSession) -> list[ChannelRow]:
    return list((await session.execute(select(ChannelRow).order_by(ChannelRow.created_at, ChannelRow.name)))
                .scalars())


async def load(session: AsyncSession, sealer: Sealer) -> list[ChannelConfig]:
    """The enabled stored channels."""
    return [config_of(r, sealer) for r in await rows(session) if not r.disabled]


async def add(session: AsyncSession, cfg: ChannelConfig, sealer: Sealer) -> ChannelRow:
    if await session.get(ChannelRow, cfg.name) is not None:
        raise ChannelExists(f"A channel named {cfg.name!r} exists already.")
    now = time.time()
    row = ChannelRow(name=cfg.name, config=stored_fields(cfg), disabled=False, created_at=now, updated_at=now,
                     api_key_sealed=sealer.seal(cfg.api_key) if cfg.api_key else None)
    session.add(row)
    await bump(session, CHANNELS)
    return row


async def find(session: AsyncSession, name: str) -> ChannelRow:
    row = await session.get(ChannelRow, name)
    if row is None:
        raise LookupError(f"No channel {name!r} in the database.")
    return row


def merged(row: ChannelRow, changes: Mapping[str, Any], sealer: Sealer) -> ChannelConfig:
    """The channel with ``changes`` applied (a ``ValidationError`` names a bad field; ``name``
    cannot change)."""
    if "name" in changes and changes["name"] != row.name:
        raise ValueError("a channel's name cannot change; remove it and add it anew")
    current = config_of(row, sealer)
    base = current.model_dump(mode="json", exclude_unset=True)
    base["api_key"] = current.api_key
    return ChannelConfig.model_validate({**base, **changes, "name": row.name})


async def edit(session: AsyncSession, row: ChannelRow, cfg: ChannelConfig, sealer: Sealer) -> None:
    row.config = stored_fields(cfg)
    row.api_key_sealed = sealer.seal(cfg.api_key) if cfg.api_key else None
    row.updated_at = time.time()
    await bump(session, CHANNELS)


async def set_disabled(session: AsyncSession, row: ChannelRow, disabled: bool) -> None:
    row.disabled = disabled
    row.updated_at = time.time()
    await bump(session, CHANNELS)


async def remove(session: AsyncSession, row: ChannelRow) -> None:
    await session.delete(row)
    await bump(session, CHANNELS)


def view(cfg: ChannelConfig) -> dict[str, Any]:
    """A channel as the operator sees it: every field but the key (only whether it has one)."""
    body = cfg.model_dump(mode="json", exclude={"api_key"})
    body["has_api_key"] = bool(cfg.api_key)
    return body


def check(channels: list[ChannelConfig], http: aiohttp.ClientSession, catalog: Catalog) -> None:
    """Raise ``ConfigError`` when a channel cannot be built (unknown provider, model or option)."""
    Router.build(channels, http, catalog)


class ChannelRuntime:
    """This process's channels: the configuration's (fixed) and the database's (reloaded)."""

    def __init__(self, settings: Settings, http: aiohttp.ClientSession,
                 sessions: async_sessionmaker[AsyncSession], sealer: Sealer, env: Mapping[str, str],
                 swap: Callable[[Router], None]) -> None:
        self.settings = settings
        self.http = http
        self.sessions = sessions
        self.sealer = sealer
        self.env = env
        self.catalog = Catalog.load(settings.catalog)
        self.configured = default_channels(settings, env)
        """Channels from the configuration (or the environment): read-only at runtime."""
        self.stored: list[ChannelConfig] = []
        self._swap = swap

    @property
    def configured_names(self) -> set[str]:
        return {c.name for c in self.configured}

    def build(self, stored: list[ChannelConfig]) -> Router:
        channels = [*self.configured, *(with_proxy(c, self.env) for c in stored)]
        return Router.build(channels, self.http, self.catalog, max_prompt_chars=self.settings.limits.max_prompt_chars)

    async def reload(self) -> None:
        """Read the stored channels and swap in a router serving them. A stored channel the
        router refuses (its model left the catalog) is left out and logged; the rest serve."""
        async with self.sessions() as s:
            stored = [c for c in await load(s, self.sealer) if c.name not in self.configured_names]
        good: list[ChannelConfig] = []
        for c in stored:
            try:
                check([c], self.http, self.catalog)
            except ConfigError as exc:
                log.error("stored channel %r left out: %s", c.name, exc)
                continue
            good.append(c)
        self._swap(self.build(good))
        self.stored = good

"""The key cache keeps the database off the hot path: one lookup per key however many requests
arrive together, and a busy key refreshed before it expires. Lookups are counted as the SQL
statements the real database receives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.accounts import KeyCache, create_key
from imagegate.core.errors import AuthenticationFailed
from imagegate.db.migrate import upgrade
from imagegate.db.session import make_engine, make_sessionmaker
from imagegate.net import env_proxy


class Db:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.key_lookups = 0


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Db]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'k.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    d = Db(make_sessionmaker(engine))

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM api_keys" in statement:
            d.key_lookups += 1

    yield d
    await engine.dispose()


async def new_key(db: Db) -> str:
    async with db.sessions.begin() as s:
        return (await create_key(s, name="k")).key


async def test_concurrent_requests_share_one_lookup(db: Db) -> None:
    key = await new_key(db)
    cache = KeyCache(db.sessions, ttl=60)
    principals = await asyncio.gather(*(cache.authenticate(key) for _ in range(100)))
    assert len({p.key_id for p in principals}) == 1
    assert db.key_lookups == 1
    await cache.authenticate(key)
    assert db.key_lookups == 1


async def test_unknown_keys_are_refused_with_one_lookup(db: Db) -> None:
    cache = KeyCache(db.sessions, ttl=60)
    results = await asyncio.gather(*(cache.authenticate("ig-nope") for _ in range(20)), return_exceptions=True)
    assert all(isinstance(r, AuthenticationFailed) for r in results)
    assert db.key_lookups == 1


async def test_a_busy_key_is_refreshed_before_it_expires(db: Db) -> None:
    key = await new_key(db)
    cache = KeyCache(db.sessions, ttl=0.5)
    await cache.authenticate(key)
    await asyncio.sleep(0.45)  # inside the last fifth of the entry's life
    await cache.authenticate(key)  # answered from the cache; starts a background refresh
    await asyncio.sleep(0.05)
    assert db.key_lookups == 2
    await asyncio.sleep(0.2)  # past the first entry's expiry, within the refreshed one
    await cache.authenticate(key)
    assert db.key_lookups == 2


def test_env_proxy() -> None:
    env = {"HTTPS_PROXY": "http://proxy:3128", "no_proxy": "internal.example,.corp"}
    assert env_proxy("https://api.openai.com/v1", env) == "http://proxy:3128"
    assert env_proxy("https://internal.example/v1", env) is None
    assert env_proxy("https://a.b.corp/v1", env) is None
    assert env_proxy("http://api.openai.com/v1", env) is None  # no HTTP_PROXY set
    assert env_proxy("https://x", {}) is None

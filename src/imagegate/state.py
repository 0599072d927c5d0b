"""Everything a running gateway process holds, built once at start-up and closed at shutdown."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

import aiohttp
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from imagegate.accounts import KeyCache
from imagegate.billing import Billing
from imagegate.billing.ledger import Ledger
from imagegate.billing.prices import Pricer
from imagegate.billing.usage import UsageLog
from imagegate.config import Settings
from imagegate.db.models import Meta
from imagegate.db.session import make_engine, make_sessionmaker
from imagegate.epochs import KEYS, EpochWatcher
from imagegate.gateway import Gateway
from imagegate.idempotency import IdempotencyKeys
from imagegate.instance import InstanceLease
from imagegate.net import SafeClient, make_session
from imagegate.periodic import Periodic
from imagegate.ratelimit import RateLimiter
from imagegate.routing import Router, router_for
from imagegate.storage import open_store
from imagegate.storage.base import BlobStore
from imagegate.storage.signing import UrlSigner
from imagegate.storage.urls import FileUrls
from imagegate.tasks.service import TaskService


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    http: aiohttp.ClientSession
    safe: SafeClient
    store: BlobStore
    urls: FileUrls
    router: Router
    gateway: Gateway
    keys: KeyCache
    billing: Billing
    usage_log: UsageLog
    limiter: RateLimiter
    tasks: TaskService
    idempotency: IdempotencyKeys
    instance: InstanceLease | None = None
    chores: list[Periodic] = field(default_factory=list)
    """Background loops of this process: heartbeat, hold reaper, change watcher."""

    async def aclose(self) -> None:
        for chore in self.chores:
            await chore.stop()
        if self.instance is not None:
            await self.instance.retire()
        await self.usage_log.stop()
        await self.http.close()
        await self.safe.aclose()
        self.limiter.close()
        await self.engine.dispose()


async def url_secret(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> bytes:
    """The file-URL signing secret: configured, or made once and shared through the database so
    every worker process and replica signs alike."""
    if settings.secret_key:
        return settings.secret_key.encode()
    async with sessions() as s:
        row = await s.get(Meta, "url_secret")
        if row is not None:
            return row.value.encode()
    try:
        async with sessions.begin() as s:
            s.add(Meta(key="url_secret", value=secrets.token_urlsafe(32)))
    except IntegrityError:
        pass  # another process made it first
    async with sessions() as s:
        row = await s.get(Meta, "url_secret")
        assert row is not None
        return row.value.encode()


async def build_state(settings: Settings) -> AppState:
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    http = make_session()
    safe = SafeClient(settings.outbound_allowlist)
    secret = await url_secret(settings, sessions)
    urls = FileUrls(settings.public_url, UrlSigner(secret))
    store = open_store(settings.storage_url, public_url=settings.public_url, secret=secret, storage=settings.storage)
    router = router_for(settings, http, os.environ)
    instance = InstanceLease(sessions, stale_after=settings.billing.instance_stale_after)
    await instance.register()
    billing = Billing(Pricer(settings.prices), Ledger(sessions), hold_margin=settings.billing.hold_margin,
                      instance=instance)
    usage_log = UsageLog(sessions)
    gateway = Gateway(router=router, store=store, urls=urls, safe=safe, billing=billing,
                      usage_log=usage_log, max_file_bytes=settings.limits.max_file_bytes,
                      max_image_pixels=settings.limits.max_image_pixels)
    tasks = TaskService(settings, sessions, gateway)
    usage_log.start()
    keys = KeyCache(sessions)
    watcher = EpochWatcher(sessions)
    watcher.on(KEYS, keys.forget)
    idempotency = IdempotencyKeys(sessions, instance)
    chores = [Periodic("heartbeat", instance.beat, settings.billing.heartbeat_interval),
              Periodic("hold-reaper", billing.reap, settings.billing.reap_interval),
              Periodic("change-watcher", watcher.check, settings.cache_check_interval),
              Periodic("idempotency-sweeper", idempotency.sweep, 3600)]
    for chore in chores:
        chore.start()
    return AppState(settings=settings, engine=engine, sessions=sessions, http=http, safe=safe, store=store,
                    urls=urls, router=router, gateway=gateway, keys=keys,
                    billing=billing, usage_log=usage_log, limiter=RateLimiter(settings.redis_url),
                    tasks=tasks, idempotency=idempotency, instance=instance, chores=chores)

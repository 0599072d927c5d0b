"""Everything a running gateway process holds, built once at start-up and closed at shutdown."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from imagegate import metrics
from imagegate.accounts import KeyCache
from imagegate.billing import Billing
from imagegate.billing.ledger import Ledger
from imagegate.billing.prices import Pricer, stored_prices
from imagegate.billing.usage import UsageLog
from imagegate.breaker import ChannelHealth
from imagegate.channelstore import ChannelRuntime, Sealer
from imagegate.config import Settings
from imagegate.db.models import Meta
from imagegate.db.session import make_engine, make_sessionmaker
from imagegate.epochs import CHANNELS, KEYS, PRICES, EpochWatcher, announce
from imagegate.events import EPOCHS, Events, NoEvents, open_events
from imagegate.gateway import Gateway
from imagegate.idempotency import IdempotencyKeys
from imagegate.instance import InstanceLease
from imagegate.net import SafeClient, make_session
from imagegate.periodic import Periodic
from imagegate.ratelimit import RateLimiter
from imagegate.routing import Router
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
    gateway: Gateway
    keys: KeyCache
    billing: Billing
    usage_log: UsageLog
    limiter: RateLimiter
    tasks: TaskService
    idempotency: IdempotencyKeys
    channels: ChannelRuntime
    """The configuration's channels and the database's (reloaded when the ``channels`` counter moves)."""
    instance: InstanceLease | None = None
    events: Events = field(default_factory=NoEvents)
    """Cross-replica hints (Redis pub/sub; a no-op without ``redis_url``)."""
    unannounce: Callable[[], None] | None = None
    chores: list[Periodic] = field(default_factory=list)
    """Background loops of this process: heartbeat, hold reaper, change watcher."""

    @property
    def router(self) -> Router:
        """The router in force now (swapped whole when stored channels change)."""
        return self.gateway.router

    @property
    def health(self) -> ChannelHealth:
        return self.gateway.health

    async def reload_prices(self) -> None:
        """The configuration's prices with the database's over them (the ``prices`` counter moved)."""
        async with self.sessions() as s:
            stored = await stored_prices(s)
        self.billing.pricer = Pricer({**self.settings.prices, **stored})

    async def aclose(self) -> None:
        for chore in self.chores:
            await chore.stop()
        if self.unannounce is not None:
            self.unannounce()
        await self.events.stop()
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
    limiter = RateLimiter(settings.redis_url)  # per-key limits and per-channel rpm windows
    secret = await url_secret(settings, sessions)
    urls = FileUrls(settings.public_url, UrlSigner(secret))
    store = open_store(settings.storage_url, public_url=settings.public_url, secret=secret, storage=settings.storage)
    channels = ChannelRuntime(settings, http, sessions, Sealer(secret), os.environ,
                              swap=lambda router: setattr(gateway, "router", router))
    instance = InstanceLease(sessions, stale_after=settings.billing.instance_stale_after)
    await instance.register()
    billing = Billing(Pricer(settings.prices), Ledger(sessions), hold_margin=settings.billing.hold_margin,
                      instance=instance)
    usage_log = UsageLog(sessions)
    gateway = Gateway(router=channels.build([]), store=store, urls=urls, safe=safe, billing=billing,
                      usage_log=usage_log, max_file_bytes=settings.limits.max_file_bytes,
                      max_image_pixels=settings.limits.max_image_pixels,
                      health=ChannelHealth(on_change=metrics.channel_state, slots=limiter.channel_slot))
    await channels.reload()  # the stored channels join the configuration's
    events = open_events(settings.redis_url)
    tasks = TaskService(settings, sessions, gateway, events)
    usage_log.start()
    keys = KeyCache(sessions)
    watcher = EpochWatcher(sessions)
    watcher.on(KEYS, keys.forget)
    watcher.on(CHANNELS, channels.reload)
    events.on(EPOCHS, watcher.poke)  # a counter moved in another replica: look now
    unannounce = announce(lambda: events.notify(EPOCHS))
    events.start()
    idempotency = IdempotencyKeys(sessions, instance)
    chores = [Periodic("heartbeat", instance.beat, settings.billing.heartbeat_interval),
              Periodic("hold-reaper", billing.reap, settings.billing.reap_interval),
              Periodic("change-watcher", watcher.check, settings.cache_check_interval),
              Periodic("idempotency-sweeper", idempotency.sweep, 3600)]
    for chore in chores:
        chore.start()
    state = AppState(settings=settings, engine=engine, sessions=sessions, http=http, safe=safe, store=store,
                    urls=urls, gateway=gateway, keys=keys, channels=channels,
                    billing=billing, usage_log=usage_log, limiter=limiter,
                    tasks=tasks, idempotency=idempotency, instance=instance, chores=chores,
                    events=events, unannounce=unannounce)
    watcher.on(PRICES, state.reload_prices)
    await state.reload_prices()
    return state

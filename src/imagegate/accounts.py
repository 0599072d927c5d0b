"""API keys and the accounts that own them.

Keys are 32 random bytes shown once; the database keeps their SHA-256 (a key is high-entropy, so
a fast hash is the right one) and a short prefix for display. Authentication is on the hot path,
so verified keys are cached in memory; a revocation anywhere bumps the ``keys`` change counter,
which every process watches (``epochs``), so it takes effect everywhere within a fraction of a
second with no database read per request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate import epochs
from imagegate.core.errors import AuthenticationFailed, PermissionDenied
from imagegate.db.models import Account, ApiKey, Hold

KEY_PREFIX = "ig-"


def new_id(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex[:24]}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_webhook_secret() -> str:
    """Standard Webhooks symmetric secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expiry(text: str, now: float | None = None) -> float:
    """When a key expires, as Unix seconds: a duration from now (``30d``, ``12h``, ``90m``,
    ``2w``) or an ISO 8601 date or date-time (``2026-01-31``: that day's start, UTC unless the
    text names a zone)."""
    now = time.time() if now is None else now
    text = text.strip()
    if m := _DURATION.fullmatch(text):
        return now + float(m[1]) * _SECONDS[m[2]]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a duration (30d, 12h) or ISO date: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the verified key and the facts about it the gateway needs."""

    key_id: str
    account_id: str
    models: frozenset[str] | None
    rpm: int | None
    unlimited: bool
    expires_at: float | None = None
    owner: bool = False
    """Manages its account's keys (``/v1/keys``)."""

    def require_model(self, model: str) -> None:
        if self.models is not None and model not in self.models:
            raise PermissionDenied(f"This API key may not use the model {model!r}.", param="model")


@dataclass(frozen=True)
class NewKey:
    id: str
    account_id: str
    key: str
    webhook_secret: str
    owner: bool = False


async def create_account(session: AsyncSession, name: str, *, balance: int = 0,
                         unlimited: bool = False) -> Account:
    account = Account(id=new_id("acct"), name=name, balance=balance, unlimited=unlimited,
                      created_at=time.time())
    session.add(account)
    return account


async def create_key(session: AsyncSession, *, name: str, models: list[str] | None = None,
                     account_id: str | None = None, rpm: int | None = None,
                     expires_at: float | None = None, owner: bool | None = None) -> NewKey:
    """Create a key; without ``account_id`` it gets its own unlimited account. ``models``: the
    public model names it may use (None: all); ``rpm``: requests per minute (None: no limit);
    ``owner``: manages its account's keys (default: only a key that gets a new account)."""
    if models is not None:
        models = sorted({m.strip() for m in models if m.strip()})
        if not models:
            raise ValueError("an allow-list of models needs at least one model (omit it to allow all)")
    if rpm is not None and rpm < 1:
        raise ValueError("rpm must be a positive number of requests per minute")
    if owner is None:
        owner = account_id is None
    if account_id is None:
        account_id = (await create_account(session, name, unlimited=True)).id
    elif await session.get(Account, account_id) is None:
        raise LookupError(f"no account {account_id}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=new_id("key"), account_id=account_id, name=name, key_hash=hash_key(key),
                 prefix=key[:10], models=models, rpm=rpm, expires_at=expires_at,
                 webhook_secret=new_webhook_secret(), created_at=time.time(), owner=owner)
    session.add(row)
    return NewKey(row.id, account_id, key, row.webhook_secret, owner)


async def revoke_key(session: AsyncSession, key: ApiKey) -> None:
    """Revoke ``key`` in ``session``'s transaction; every process's key cache forgets it within
    ``cache_check_interval`` (``epochs``)."""
    if key.revoked_at is None:
        key.revoked_at = time.time()
        await epochs.bump(session, epochs.KEYS)


@dataclass(frozen=True)
class AccountRow:
    """An account as listings show it: ``held`` is the sum of its open holds (micro-units)."""

    id: str
    name: str
    balance: int
    held: int
    unlimited: bool
    created_at: float


async def list_accounts(session: AsyncSession, *, limit: int | None = None, offset: int = 0) -> list[AccountRow]:
    """Accounts, oldest first, with what their open holds set aside."""
    held = (select(Hold.account_id, func.sum(Hold.amount).label("held"))
            .where(Hold.settled.is_(False)).group_by(Hold.account_id).subquery())
    stmt = (select(Account, func.coalesce(held.c.held, 0))
            .outerjoin(held, held.c.account_id == Account.id)
            .order_by(Account.created_at, Account.id).limit(limit).offset(offset))
    return [AccountRow(a.id, a.name, a.balance, int(h), a.unlimited, a.created_at)
            for a, h in (await session.execute(stmt)).all()]


async def list_keys(session: AsyncSession, *, account_id: str | None = None) -> list[ApiKey]:
    """Keys, oldest first (of one account, when given)."""
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if account_id is not None:
        stmt = stmt.where(ApiKey.account_id == account_id)
    return list((await session.execute(stmt)).scalars())


async def find_key(session: AsyncSession, key_or_id: str) -> ApiKey | None:
    stmt = select(ApiKey).where(or_(ApiKey.id == key_or_id, ApiKey.key_hash == hash_key(key_or_id)))
    return (await session.execute(stmt)).scalar_one_or_none()


class KeyCache:
    """Verifies bearer keys, with a short in-memory cache in front of the database.

    Under load the same few keys arrive hundreds of times a second, so two things keep the
    database out of the hot path: a key is looked up by one request at a time while the others
    await that lookup (single flight), and a key in use is refreshed in the background shortly
    before its entry expires, so a busy key never expires for everyone at once.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl: float = 5.0) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Principal | str]] = {}
        self._inflight: dict[str, asyncio.Future[Principal | str]] = {}

    async def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise AuthenticationFailed("Missing API key: send 'Authorization: Bearer <key>'.")
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is None or hit[0] < now:
            found = await self._lookup(digest)
        else:
            found = hit[1]
            if hit[0] - now < self._ttl / 5 and digest not in self._inflight:
                self._refresh_ahead(digest)
        if isinstance(found, str):
            raise AuthenticationFailed(found)
        # Checked on every request, not only on a cache miss: expiry is exact to the second.
        if found.expires_at is not None and found.expires_at <= time.time():
            raise AuthenticationFailed("This API key has expired.")
        return found

    def _start(self, digest: str) -> asyncio.Future[Principal | str]:
        async def load() -> Principal | str:
            try:
                found = await self._load(digest)
                if len(self._cache) > 100_000:
                    self._cache.clear()
                ttl = self._ttl if isinstance(found, Principal) else 1.0
                self._cache[digest] = (time.monotonic() + ttl, found)
                return found
            finally:
                self._inflight.pop(digest, None)

        future = self._inflight[digest] = asyncio.ensure_future(load())
        return future

    async def _lookup(self, digest: str) -> Principal | str:
        future = self._inflight.get(digest) or self._start(digest)
        # Shielded: one caller giving up must not cancel the lookup the others await.
        return await asyncio.shield(future)

    def _refresh_ahead(self, digest: str) -> None:
        future = self._start(digest)
        # A failed background refresh is not anyone's error: the next miss looks up again.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _load(self, digest: str) -> Principal | str:
        """The key's principal, or why it is refused."""
        async with self._sessions() as session:
            row = (await session.execute(
                select(ApiKey, Account).join(Account, Account.id == ApiKey.account_id)
                .where(ApiKey.key_hash == digest)
            )).first()
        if row is None:
            return "Incorrect API key provided."
        key, account = row
        if key.revoked_at is not None:
            return "This API key has been revoked."
        return Principal(key.id, key.account_id, frozenset(key.models) if key.models is not None else None,
                         key.rpm, account.unlimited, key.expires_at, key.owner)

    def forget(self) -> None:
        self._cache.clear()

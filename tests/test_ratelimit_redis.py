"""Per-key limits shared by several gateway processes through Redis (``redis_url``). Skipped
where no Redis answers on 127.0.0.1:6379 (a user's fresh machine has none; CI's has one)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from imagegate.accounts import Principal
from imagegate.core.errors import RateLimited
from imagegate.ratelimit import RateLimiter

REDIS = "redis://127.0.0.1:6379"


@pytest.fixture(autouse=True)
def _redis() -> None:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError as exc:
        pytest.skip(f"no Redis at 127.0.0.1:6379 ({exc})")


@pytest.fixture
async def limiter() -> AsyncIterator[Callable[[], RateLimiter]]:
    """Limiters closed while the test's event loop still runs (their sockets belong to it)."""
    made: list[RateLimiter] = []

    def make() -> RateLimiter:
        made.append(RateLimiter(REDIS))
        return made[-1]

    yield make
    for one in made:
        one.close()


async def test_two_processes_share_one_window(limiter: Callable[[], RateLimiter]) -> None:
    first, second = limiter(), limiter()  # two processes' limiters
    who = Principal(f"key_{uuid.uuid4().hex}", "acct", None, 3, True, None)
    await first.hit(who)
    await second.hit(who)
    await first.hit(who)
    with pytest.raises(RateLimited) as exc:
        await second.hit(who)
    assert exc.value.retry_after >= 1


async def test_keys_have_their_own_windows(limiter: Callable[[], RateLimiter]) -> None:
    shared = limiter()
    a = Principal(f"key_{uuid.uuid4().hex}", "acct", None, 1, True, None)
    b = Principal(f"key_{uuid.uuid4().hex}", "acct", None, 1, True, None)
    await shared.hit(a)
    await shared.hit(b)
    with pytest.raises(RateLimited):
        await shared.hit(a)

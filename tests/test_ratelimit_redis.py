"""Per-key limits and per-channel ``rpm`` shared by several gateway processes through Redis
(``redis_url``). Skipped
where no Redis answers on 127.0.0.1:6379 (a user's fresh machine has none; CI's has one)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable

import httpx2 as httpx
import pytest
from openai import OpenAI

from imagegate.accounts import Principal
from imagegate.core.errors import RateLimited
from imagegate.ratelimit import RateLimiter
from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator
from tests.harness import channel

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
    for i in range(60):  # reads have their own window, shared too: max(60, 10 x rpm)
        await (first, second)[i % 2].hit(who, "read")
    with pytest.raises(RateLimited, match="60 reads per minute"):
        await first.hit(who, "read")


async def test_keys_have_their_own_windows(limiter: Callable[[], RateLimiter]) -> None:
    shared = limiter()
    a = Principal(f"key_{uuid.uuid4().hex}", "acct", None, 1, True, None)
    b = Principal(f"key_{uuid.uuid4().hex}", "acct", None, 1, True, None)
    await shared.hit(a)
    await shared.hit(b)
    with pytest.raises(RateLimited):
        await shared.hit(a)


def test_a_gateway_with_two_workers_counts_once(gateway_factory: StartGateway) -> None:
    gw = gateway_factory({"redis_url": REDIS}, workers=2)  # the embedded model, no upstream needed
    key = gw.key(rpm=4)
    statuses = []
    body = {"model": "imagegate-shapes", "prompt": "a white square", "size": "64x64", "response_format": "b64_json"}
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        for _ in range(8):  # new connections: uvicorn spreads them over both workers
            statuses.append(client.post("/v1/images/generations", json=body,
                                        headers={"Connection": "close"}).status_code)
    assert statuses.count(200) == 4 and statuses.count(429) == 4


def test_two_replicas_send_a_channel_no_more_than_its_rpm(gateway_factory: StartGateway) -> None:
    """A channel's ``rpm`` is the upstream's quota: two replicas on one Redis spend one window, and
    the excess goes to the next channel (each replica alone would have sent 2 + 2)."""
    name = f"quota-{uuid.uuid4().hex[:8]}"  # a window of its own in the shared Redis
    with OpenAIEmulator() as limited, OpenAIEmulator() as spare:
        config = {"redis_url": REDIS, "local_model": False, "channels": [
            channel(name, "openai", limited.url + "/v1", {"gpt-image-1": "gpt-image-1"}, priority=0, rpm=2),
            channel("spare", "openai", spare.url + "/v1", {"gpt-image-1": "gpt-image-1"}, priority=1)]}
        replicas = [gateway_factory(config, name="a"), gateway_factory(config, name="b")]
        for i in range(6):
            gw = replicas[i % 2]
            r = OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0).images.generate(
                model="gpt-image-1", prompt="a lighthouse", response_format="b64_json")
            assert r.data and r.data[0].b64_json
        assert (len(limited.calls), len(spare.calls)) == (2, 4)

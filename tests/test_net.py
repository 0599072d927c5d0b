from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from imagegate.core.errors import InvalidRequest
from imagegate.net import (
    AddressPolicy,
    AddressRefused,
    FilteringResolver,
    PostAnswer,
    SafeClient,
    is_public_address,
    make_session,
    retry_after_seconds,
)

BODY = bytes(range(256)) * 4  # 1 KiB


class MapResolver(AbstractResolver):
    """Resolves test names to fixed addresses, like a DNS server the test controls."""

    def __init__(self, names: dict[str, Sequence[str]]) -> None:
        self.names = names

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.names:
            raise OSError(f"unknown host {host}")
        return [
            ResolveResult(
                hostname=host,
                host=addr,
                port=port,
                family=socket.AF_INET6 if ":" in addr else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for addr in self.names[host]
        ]

    async def close(self) -> None:
        pass


@dataclass
class Origin:
    base: str
    port: int
    hooks: list[bytes] = field(default_factory=list)


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    release = asyncio.Event()
    state = Origin(base="", port=0)

    async def img(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="image/png")

    async def streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # chunked: no Content-Length to trust
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(BODY)
        await resp.write_eof()
        return resp

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(body=b"late")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such image")

    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound("/img" if n == 0 else f"/chain/{n - 1}")

    async def to(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["url"])

    async def hook(request: web.Request) -> web.Response:
        state.hooks.append(await request.read())
        return web.Response(status=204)

    async def hook_moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/hook")

    app = web.Application()
    app.router.add_get("/img", img)
    app.router.add_get("/streamed", streamed)
    app.router.add_get("/slow", slow)
    app.router.add_get("/missing", missing)
    app.router.add_get("/chain/{n}", chain)
    app.router.add_get("/to", to)
    app.router.add_post("/hook", hook)
    app.router.add_post("/hook-moved", hook_moved)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.base, state.port = f"http://127.0.0.1:{port}", port
    yield state
    release.set()
    await runner.cleanup()


@pytest.fixture
async def clients() -> AsyncIterator[list[SafeClient]]:
    made: list[SafeClient] = []
    yield made
    for client in made:
        await client.aclose()


def client(
    made: list[SafeClient],
    allowlist: Sequence[str] = (),
    *,
    resolver: AbstractResolver | None = None,
    max_redirects: int = 5,
) -> SafeClient:
    c = SafeClient(allowlist, resolver=resolver, max_redirects=max_redirects)
    made.append(c)
    return c


async def refused(coro: Awaitable[object], code: str = "url_not_allowed") -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        await coro
    assert info.value.code == code
    assert info.value.param == "image"
    return info.value


async def test_loopback_refused_by_default(origin: Origin, clients: list[SafeClient]) -> None:
    err = await refused(client(clients).fetch(f"{origin.base}/img", param="image", max_bytes=10_000))
    assert "127.0.0.1" in err.message


@pytest.mark.parametrize("entry", ["127.0.0.1", "127.0.0.0/8"])
async def test_loopback_allowed_by_allowlist(origin: Origin, clients: list[SafeClient], entry: str) -> None:
    got = await client(clients, [entry]).fetch(f"{origin.base}/img", param="image", max_bytes=10_000)
    assert got.data == BODY
    assert got.content_type == "image/png"
    assert got.url == f"{origin.base}/img"


async def test_name_resolving_to_loopback_refused(origin: Origin, clients: list[SafeClient]) -> None:
    dns = MapResolver({"images.test": ["127.0.0.1"]})
    err = await refused(
        client(clients, resolver=dns).fetch(f"http://images.test:{origin.port}/img", param="image", max_bytes=10_000)
    )
    assert "images.test" in err.message and "127.0.0.1" in err.message


@pytest.mark.parametrize("entry", ["images.test", "IMAGES.test.", "127.0.0.0/8"])
async def test_name_allowed_by_host_or_cidr(origin: Origin, clients: list[SafeClient], entry: str) -> None:
    dns = MapResolver({"images.test": ["127.0.0.1"]})
    safe = client(clients, [entry], resolver=dns)
    got = await safe.fetch(f"http://images.test:{origin.port}/img", param="image", max_bytes=10_000)
    assert got.data == BODY


async def test_resolver_returns_only_allowed_addresses() -> None:
    dns = MapResolver({"mixed.test": ["10.0.0.7", "93.184.215.14", "::1"], "private.test": ["10.0.0.7"]})
    resolver = FilteringResolver(dns, AddressPolicy())
    got = await resolver.resolve("mixed.test", 443)
    assert [r["host"] for r in got] == ["93.184.215.14"]
    with pytest.raises(AddressRefused) as info:
        await resolver.resolve("private.test", 443)
    assert info.value.addresses == ("10.0.0.7",)


async def test_unresolvable_name(clients: list[SafeClient]) -> None:
    safe = client(clients, resolver=MapResolver({}))
    err = await refused(safe.fetch("http://nowhere.test/x.png", param="image", max_bytes=10), "url_fetch_failed")
    assert "nowhere.test" in err.message


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
        "http://[::1]/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[2002:7f00:1::]/",
        "http://[64:ff9b::a00:1]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://localhost/",
        "http://LOCALHOST./",
        "http://api.localhost/",
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "gopher://example.com/",
        "http://user:pw@example.com/a.png",
        "http://example.com@127.0.0.1/",
        "http:///a.png",
        "/relative/a.png",
        "http://exa mple.com/",
    ],
)
def test_check_url_refuses(url: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        SafeClient().check_url(url, param="image")
    assert info.value.param == "image"
    assert info.value.code == "url_not_allowed"


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/a.png",
        "http://93.184.215.14/a.png",
        "https://[2606:4700::1111]/",
        "https://bücher.example/",
    ],
)
def test_check_url_accepts_public(url: str) -> None:
    SafeClient().check_url(url, param="image")


def test_check_url_honours_allowlist() -> None:
    SafeClient(["10.0.0.0/8", "internal.example", "localhost"]).check_url("http://10.1.2.3/", param="image")
    SafeClient(["internal.example"]).check_url("http://internal.example:8080/", param="image")
    SafeClient(["localhost"]).check_url("http://localhost:8080/", param="image")


@pytest.mark.parametrize(
    ("addr", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("64:ff9b::808:808", True),
        ("2002:808:808::1", True),
        ("100.100.1.1", False),
        ("fec0::1", False),
        ("ff02::1", False),
        ("64:ff9b:1::1", False),
        ("::", False),
    ],
)
def test_is_public_address(addr: str, public: bool) -> None:
    assert is_public_address(ip_address(addr)) is public


async def test_redirect_to_disallowed_host_refused(origin: Origin, clients: list[SafeClient]) -> None:
    dns = MapResolver({"images.test": ["127.0.0.1"]})
    safe = client(clients, ["images.test"], resolver=dns)
    url = f"http://images.test:{origin.port}/to?url={origin.base}/img"
    err = await refused(safe.fetch(url, param="image", max_bytes=10_000))
    assert "127.0.0.1" in err.message


async def test_redirect_to_private_name_refused(origin: Origin, clients: list[SafeClient]) -> None:
    dns = MapResolver({"images.test": ["127.0.0.1"], "evil.test": ["127.0.0.1"]})
    safe = client(clients, ["images.test"], resolver=dns)
    url = f"http://images.test:{origin.port}/to?url=http://evil.test:{origin.port}/img"
    await refused(safe.fetch(url, param="image", max_bytes=10_000))


async def test_redirects_followed_up_to_the_limit(origin: Origin, clients: list[SafeClient]) -> None:
    safe = client(clients, ["127.0.0.1"], max_redirects=2)
    got = await safe.fetch(f"{origin.base}/chain/1", param="image", max_bytes=10_000)
    assert got.data == BODY and got.url == f"{origin.base}/img"
    err = await refused(safe.fetch(f"{origin.base}/chain/2", param="image", max_bytes=10_000), "url_fetch_failed")
    assert "more than 2 redirects" in err.message


async def test_trusted_hosts_for_one_call(origin: Origin, clients: list[SafeClient]) -> None:
    dns = MapResolver({"upstream.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    safe = client(clients, resolver=dns)
    url = f"http://upstream.test:{origin.port}/img"
    got = await safe.fetch(url, param="image", max_bytes=10_000, trusted_hosts=["upstream.test"])
    assert got.data == BODY
    # The trust lasted for that call only, including its kept-alive connection.
    await refused(safe.fetch(url, param="image", max_bytes=10_000))
    # ... and a redirect away from the trusted host is vetted afresh.
    hop = f"http://upstream.test:{origin.port}/to?url=http://other.test:{origin.port}/img"
    await refused(safe.fetch(hop, param="image", max_bytes=10_000, trusted_hosts=["upstream.test"]))


@pytest.mark.parametrize("path", ["/img", "/streamed"])
async def test_size_cap(origin: Origin, clients: list[SafeClient], path: str) -> None:
    safe = client(clients, ["127.0.0.1"])
    err = await refused(safe.fetch(f"{origin.base}{path}", param="image", max_bytes=1000), "image_too_large")
    assert "1000 bytes" in err.message
    got = await safe.fetch(f"{origin.base}{path}", param="image", max_bytes=64 * len(BODY))
    assert got.data.startswith(BODY)


async def test_timeout(origin: Origin, clients: list[SafeClient]) -> None:
    safe = client(clients, ["127.0.0.1"])
    err = await refused(safe.fetch(f"{origin.base}/slow", param="image", max_bytes=10, timeout=0.2), "url_fetch_failed")
    assert "0.2 s" in err.message


async def test_non_2xx(origin: Origin, clients: list[SafeClient]) -> None:
    safe = client(clients, ["127.0.0.1"])
    err = await refused(safe.fetch(f"{origin.base}/missing", param="image", max_bytes=10_000), "url_fetch_failed")
    assert "HTTP 404" in err.message and "127.0.0.1" in err.message


async def test_connection_refused(clients: list[SafeClient]) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    safe = client(clients, ["127.0.0.1"])
    await refused(safe.fetch(f"http://127.0.0.1:{port}/", param="image", max_bytes=10), "url_fetch_failed")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/a.png"])
async def test_fetch_refuses_other_schemes(clients: list[SafeClient], url: str) -> None:
    await refused(client(clients, ["127.0.0.1"]).fetch(url, param="image", max_bytes=10))


async def test_post_returns_status(origin: Origin, clients: list[SafeClient]) -> None:
    safe = client(clients, ["127.0.0.1"])
    answer = await safe.post(f"{origin.base}/hook", b'{"ok":true}', {"Content-Type": "application/json"})
    assert answer == PostAnswer(204, None)
    assert origin.hooks == [b'{"ok":true}']


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


async def test_post_does_not_follow_redirects(origin: Origin, clients: list[SafeClient]) -> None:
    safe = client(clients, ["127.0.0.1"])
    assert (await safe.post(f"{origin.base}/hook-moved", b"{}", {})).status == 307
    assert origin.hooks == []


async def test_post_refuses_loopback(origin: Origin, clients: list[SafeClient]) -> None:
    with pytest.raises(InvalidRequest) as info:
        await client(clients).post(f"{origin.base}/hook", b"{}", {})
    assert info.value.code == "url_not_allowed" and info.value.param == "webhook"
    assert origin.hooks == []


async def test_make_session_has_no_pool_caps() -> None:
    session = make_session()
    try:
        connector = session.connector
        assert isinstance(connector, aiohttp.TCPConnector)
        assert connector.limit == 0 and connector.limit_per_host == 0
        assert session.timeout.total is None
    finally:
        await session.close()

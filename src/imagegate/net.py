"""Outbound HTTP: the pooled upstream session and the SSRF-safe client.

There are two connection pools on purpose:

* ``make_session()`` is the one pooled ``aiohttp.ClientSession`` per process for the upstreams
  the operator configured. Those hosts are trusted, may live on a private network, and carry
  nearly all of the traffic, so the pool is tuned for throughput and applies no address filter.
* ``SafeClient`` is for URLs that someone else chose: reference images and webhook targets
  supplied by callers, and result URLs returned by upstreams. It owns a separate
  ``TCPConnector`` whose resolver drops every address that is not public internet (unless
  allow-listed). Because the connector connects to exactly the addresses the resolver returned,
  the address that was checked is the address connected to, so DNS rebinding cannot slip a
  private address in between check and connect. IP literals never reach a resolver, so
  ``check_url`` vets them before every request and every redirect hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import re
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from imagegate import __version__
from imagegate.core.errors import InvalidRequest

USER_AGENT = f"imagegate/{__version__}"

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
# Hosts a WHATWG URL parser would read as IPv4 ("2130706433", "0x7f000001", "0177.1"): the last
# label is a number. Those are decoded the way the C library decodes them, then vetted.
_NUMERIC_HOST = re.compile(r"(?:[0-9a-fx]*\.)*(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
_CGNAT = IPv4Network("100.64.0.0/10")
_NAT64_WELL_KNOWN = IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")  # RFC 8215: local-use translation, embedding varies


def make_session(*, limit: int = 0) -> aiohttp.ClientSession:
    """The process-wide pool for the configured upstreams. Create it once, in the app lifespan.

    ``limit=0`` means no cap on open connections (and there is never a per-host cap): a few
    thousand generations in flight against one upstream must not queue behind a pool limit.
    There is no default total timeout; every call passes its own ``aiohttp.ClientTimeout``,
    because a 2 s model listing and a 5 min image generation share this pool.
    """
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=0,
        use_dns_cache=True,
        ttl_dns_cache=60,
        keepalive_timeout=30,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        # Upstream JSON may come gzip-encoded; the bytes are bounded by the callers' own reads.
        auto_decompress=True,
        headers={"User-Agent": USER_AGENT},
        # No ``trust_env``: with it aiohttp reads ~/.netrc and the proxy variables in a thread
        # on every request. The proxy is resolved once per channel instead (``env_proxy``).
        trust_env=False,
    )


def env_proxy(url: str, env: Mapping[str, str]) -> str | None:
    """The proxy the usual variables (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``, any case)
    choose for ``url`` — decided once at start-up for each channel."""
    lowered = {k.lower(): v for k, v in env.items() if v}
    host = URL(url).host or ""
    for pattern in (p.strip().lower() for p in lowered.get("no_proxy", "").split(",")):
        if pattern == "*" or (pattern and (host == pattern.lstrip(".") or host.endswith("." + pattern.lstrip(".")))):
            return None
    return lowered.get(f"{URL(url).scheme}_proxy") or lowered.get("all_proxy")


def is_public_address(addr: IPAddress) -> bool:
    """True when ``addr`` is ordinary internet unicast: not loopback, private, link-local,
    unique-local, site-local, multicast, unspecified, reserved or CGNAT, including when an IPv4
    address is embedded in IPv6 (IPv4-mapped, IPv4-compatible, 6to4, NAT64)."""
    if isinstance(addr, IPv6Address):
        embedded = _embedded_ipv4(addr)
        if embedded is not None:
            return is_public_address(embedded)
        if addr in _NAT64_LOCAL or addr.is_site_local:
            return False
    elif addr in _CGNAT:
        return False
    # ``is_global`` alone is not enough on Python 3.11: it calls multicast and some reserved
    # ranges global, so those are refused explicitly.
    return addr.is_global and not (
        addr.is_multicast
        or addr.is_reserved
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_private
        or addr.is_unspecified
    )


def _embedded_ipv4(addr: IPv6Address) -> IPv4Address | None:
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in _NAT64_WELL_KNOWN or int(addr) >> 32 == 0:  # NAT64, or IPv4-compatible ::a.b.c.d
        return IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def _normalize_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


class AddressRefused(OSError):
    """Raised by the filtering resolver: every address ``host`` resolved to is non-public.

    An ``OSError`` so that aiohttp wraps it like any resolution failure; ``SafeClient`` finds it
    in the exception chain to tell "refused" from "does not resolve"."""

    def __init__(self, host: str, addresses: Sequence[str]) -> None:
        super().__init__(f"{host} resolves only to non-public addresses: {', '.join(addresses)}")
        self.host = host
        self.addresses = tuple(addresses)


@dataclass(frozen=True)
class AddressPolicy:
    """What may be reached besides the public internet: host names, and addresses/networks."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_allowlist(cls, allowlist: Sequence[str]) -> AddressPolicy:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in allowlist:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                hosts.add(_normalize_host(entry))
        return cls(frozenset(hosts), tuple(networks))

    def allows_address(self, addr: IPAddress) -> bool:
        if is_public_address(addr):
            return True
        candidates: list[IPAddress] = [addr]
        if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
            candidates.append(addr.ipv4_mapped)
        return any(a in net for a in candidates for net in self.networks)


class FilteringResolver(AbstractResolver):
    """Resolves with ``inner`` and returns only the addresses the policy allows, so the connector
    can connect to nothing else. Raises ``AddressRefused`` when nothing is left."""

    def __init__(self, inner: AbstractResolver, policy: AddressPolicy) -> None:
        self._inner = inner
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if _normalize_host(host) in self._policy.hosts:
            return results
        allowed = [r for r in results if self._allows(r["host"])]
        if not allowed:
            raise AddressRefused(host, [r["host"] for r in results])
        return allowed

    def _allows(self, address: str) -> bool:
        try:
            return self._policy.allows_address(ipaddress.ip_address(address))
        except ValueError:
            return False

    async def close(self) -> None:
        """The inner resolver belongs to the ``SafeClient``, which closes it."""


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str | None
    url: str
    """The final URL, after redirects."""


@dataclass(frozen=True)
class _Hop:
    url: URL
    host: str
    trusted: bool  # allowed only because the call named the host in ``trusted_hosts``


@dataclass(frozen=True)
class PostAnswer:
    status: int
    retry_after: float | None = None


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class SafeClient:
    """HTTP for URLs nobody on the operator's side chose. See the module docstring.

    ``allowlist`` names hosts (``"internal.example"``, ``"127.0.0.1"``) or networks
    (``"10.0.0.0/8"``) that may be reached although they are not public. ``resolver`` replaces
    the system resolver (tests use it to point names at loopback); the client does not close it.
    """

    def __init__(
        self,
        allowlist: Sequence[str] = (),
        *,
        max_redirects: int = 5,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._policy = AddressPolicy.from_allowlist(allowlist)
        self._max_redirects = max_redirects
        self._injected_resolver = resolver
        self._resolver: AbstractResolver | None = resolver
        # Two sessions, created on first use (aiohttp wants a running loop): ``strict`` filters
        # every resolved address; ``trusting`` serves only hosts a call named in
        # ``trusted_hosts``. Keeping them apart means a kept-alive connection to a trusted
        # private host can never be reused by a call that did not trust that host.
        self._sessions: dict[bool, aiohttp.ClientSession] = {}

    def check_url(self, url: str, *, param: str) -> None:
        """Refuse, without any network access, a URL that can never be fetched: a scheme other
        than http/https, no host, credentials in the authority, or an IP literal (in any of its
        dotted, decimal, hex, octal or IPv4-in-IPv6 spellings) that is not public or
        allow-listed. Names are vetted later, when they resolve."""
        self._hop(url, param, frozenset())

    async def fetch(
        self,
        url: str,
        *,
        param: str,
        max_bytes: int,
        timeout: float = 20.0,
        trusted_hosts: Sequence[str] = (),
    ) -> Fetched:
        """GET ``url``, following at most ``max_redirects`` redirects (each one re-vetted), and
        return at most ``max_bytes`` of body. ``timeout`` covers the whole exchange.
        ``trusted_hosts`` are reachable for this call even when they are not public."""
        trusted = frozenset(_normalize_host(h) for h in trusted_hosts)
        hop = self._hop(url, param, trusted)
        try:
            async with asyncio.timeout(timeout):
                for _ in range(self._max_redirects + 1):
                    session = self._session(trusted=hop.trusted)
                    with _translate_errors(param, hop.host):
                        async with session.get(hop.url, allow_redirects=False) as resp:
                            location = resp.headers.get("Location")
                            if resp.status not in _REDIRECT_STATUSES or not location:
                                _require_success(resp.status, param, hop.host)
                                data = await _read_capped(resp, max_bytes, param, hop.host)
                                return Fetched(data, _mime(resp.headers.get("Content-Type")), str(resp.url))
                            next_url = _join(resp.url, location, param, hop.host)
                    hop = self._hop(next_url, param, trusted)
        except TimeoutError as exc:
            raise _timed_out(param, hop.host, timeout) from exc
        raise InvalidRequest(
            f"Could not fetch {param} from {hop.host}: more than {self._max_redirects} redirects.",
            param=param,
            code="url_fetch_failed",
        )

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout: float = 15.0,
        param: str = "webhook",
    ) -> PostAnswer:
        """POST ``body`` and return the answer's status (and ``Retry-After``, in seconds, when it
        gives one). A 3xx is returned, not followed: Standard Webhooks tells senders not to
        follow redirects."""
        hop = self._hop(url, param, frozenset())
        session = self._session(trusted=False)
        try:
            async with asyncio.timeout(timeout):
                with _translate_errors(param, hop.host):
                    async with session.post(hop.url, data=body, headers=dict(headers), allow_redirects=False) as resp:
                        return PostAnswer(resp.status, retry_after_seconds(resp.headers.get("Retry-After")))
        except TimeoutError as exc:
            raise _timed_out(param, hop.host, timeout) from exc

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
        if self._resolver is not None and self._resolver is not self._injected_resolver:
            await self._resolver.close()
        self._resolver = self._injected_resolver

    def _session(self, *, trusted: bool) -> aiohttp.ClientSession:
        session = self._sessions.get(trusted)
        if session is None:
            if self._resolver is None:
                self._resolver = DefaultResolver()
            resolver = self._resolver if trusted else FilteringResolver(self._resolver, self._policy)
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=resolver, limit=0, limit_per_host=0),
                headers={"User-Agent": USER_AGENT},
                # Never through an environment proxy: the proxy would resolve names itself,
                # past the filtering resolver.
                trust_env=False,
            )
            self._sessions[trusted] = session
        return session

    def _hop(self, url: str | URL, param: str, trusted: frozenset[str]) -> _Hop:
        try:
            parsed = url if isinstance(url, URL) else URL(url)
        except (ValueError, TypeError) as exc:
            raise _not_allowed(param, f"{param} is not a valid URL.") from exc
        if parsed.scheme not in ("http", "https"):
            shown = parsed.scheme or "no scheme"
            raise _not_allowed(param, f"{param} must be an http or https URL (got {shown}).")
        if not parsed.raw_host:
            raise _not_allowed(param, f"{param} must be an absolute URL with a host.")
        if parsed.raw_user is not None or parsed.raw_password is not None:
            raise _not_allowed(param, f"{param} must not carry credentials (user@host) in the URL.")
        # ``raw_host`` is the IDNA (punycode) form that DNS sees; IPv6 literals keep their zone.
        host = _normalize_host((parsed.host or "") if ":" in parsed.raw_host else parsed.raw_host)
        if host in trusted:
            return _Hop(parsed, host, trusted=True)
        if host in self._policy.hosts:
            return _Hop(parsed, host, trusted=False)
        addr, canonical = _literal_address(host)
        if addr is not None:
            if not self._policy.allows_address(addr):
                raise _not_allowed(param, f"{param} points to {addr}, which is not a public internet address.")
            if not canonical:
                raise _not_allowed(param, f"{param} writes the address {addr} in a non-standard form.")
        elif not _HOST_NAME.fullmatch(host):
            raise _not_allowed(param, f"{param} has an invalid host name.")
        elif host == "localhost" or host.endswith(".localhost"):
            raise _not_allowed(param, f"{param} points to {host}, which is not a public internet host.")
        return _Hop(parsed, host, trusted=False)


def _literal_address(host: str) -> tuple[IPAddress | None, bool]:
    """The address an IP-literal host denotes and whether it is written canonically."""
    if ":" in host:
        try:
            addr6 = IPv6Address(host)
        except ValueError:
            return None, False
        return addr6, True
    if not _NUMERIC_HOST.fullmatch(host):
        return None, False
    try:
        addr4 = IPv4Address(socket.inet_aton(host))
    except OSError:
        return None, False
    return addr4, str(addr4) == host


def _not_allowed(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="url_not_allowed")


def _timed_out(param: str, host: str, timeout: float) -> InvalidRequest:
    return InvalidRequest(
        f"Could not fetch {param} from {host}: no complete answer within {timeout:g} s.",
        param=param,
        code="url_fetch_failed",
    )


@contextlib.contextmanager
def _translate_errors(param: str, host: str) -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientError as exc:
        refused = _find_refusal(exc)
        if refused is not None:
            raise InvalidRequest(
                f"{param} points to {host}, which resolves only to non-public addresses "
                f"({', '.join(refused.addresses) or 'none'}).",
                param=param,
                code="url_not_allowed",
            ) from exc
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            reason = "the host name does not resolve"
        elif isinstance(exc, aiohttp.ClientConnectorError):
            reason = "the connection was refused or failed"
        elif isinstance(exc, TimeoutError):
            reason = "the server did not answer in time"
        else:
            reason = f"the exchange failed ({type(exc).__name__})"
        raise InvalidRequest(
            f"Could not fetch {param} from {host}: {reason}.", param=param, code="url_fetch_failed"
        ) from exc


def _find_refusal(exc: BaseException) -> AddressRefused | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, AddressRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _require_success(status: int, param: str, host: str) -> None:
    if not 200 <= status < 300:
        raise InvalidRequest(
            f"Could not fetch {param} from {host}: the server answered HTTP {status}.",
            param=param,
            code="url_fetch_failed",
        )


def _join(base: URL, location: str, param: str, host: str) -> URL:
    try:
        return base.join(URL(location))
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(
            f"Could not fetch {param} from {host}: the redirect target is not a valid URL.",
            param=param,
            code="url_fetch_failed",
        ) from exc


async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int, param: str, host: str) -> bytes:
    too_large = InvalidRequest(
        f"The file at {host} given as {param} is larger than {max_bytes} bytes.",
        param=param,
        code="image_too_large",
    )
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)


def _mime(content_type: str | None) -> str | None:
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None

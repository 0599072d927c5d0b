"""The adapter interface every upstream protocol implements, and the helpers they share.

An adapter is one small class per wire protocol: it declares what each upstream model accepts
(``ModelSpec``), checks model-specific rules without I/O (``check``), and translates a ``Call``
into the native request and the native answer back (``submit``, and ``poll`` for queue-style
upstreams). Upstream failures are translated into the error tree at this boundary; nothing
outside ``providers/`` ever reads an upstream body.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imagegate import logs
from imagegate.config import ChannelConfig, ConfigError
from imagegate.core import errors
from imagegate.core.job import Call, ImageJob, Pending, ProviderResult
from imagegate.core.spec import ModelSpec

log = logging.getLogger("imagegate.providers")
M = TypeVar("M", bound=BaseModel)


class NoOptions(BaseModel):
    """A provider without channel options: any ``options:`` key is a configuration error."""

    model_config = ConfigDict(extra="forbid")


class Dims(BaseModel):
    """``wire.dims`` of a free-size FLUX entry (BFL ``width``/``height``, fal ``image_size``):
    a request is kept in shape and scaled into these limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    multiple: int = Field(default=32, ge=1)
    min_side: int = Field(default=256, ge=1)
    max_side: int | None = Field(default=1440, ge=1)
    max_pixels: int | None = Field(default=None, ge=1)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str
    retry_after: str | None = None
    """The upstream's ``Retry-After`` header, if any."""

    def json(self) -> Any:
        return orjson.loads(self.body)


class Adapter(ABC):
    """One upstream wire protocol. Subclasses are registered by one line in ``registry.py``."""

    provider: ClassVar[str]
    """The id used as ``provider:`` in channel configuration."""
    key_env: ClassVar[str | None] = None
    """Environment variable whose presence enables a default channel when no config file exists."""
    default_base_url: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    """The model of a channel's ``options:``, validated at start-up (a typo is a config error)."""
    options: BaseModel
    Wire: ClassVar[type[BaseModel]] = NoOptions
    """The model of a catalog entry's ``wire:`` facts for this protocol, validated at start-up."""

    def __init__(self, channel: ChannelConfig, http: aiohttp.ClientSession) -> None:
        self.channel = channel
        self.http = http
        self.base_url = (channel.base_url or self.default_base_url).rstrip("/")
        self._wires: dict[int, tuple[ModelSpec, BaseModel]] = {}
        try:
            self.options = self.Options.model_validate(channel.options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"channel {channel.name!r} options.{where}: {first['msg']}") from exc

    def wire(self, spec: ModelSpec) -> Any:
        """``spec.wire`` as this adapter's ``Wire`` model (validated once per spec: specs live as
        long as the process). Raises ``ValidationError`` for a bad entry (start-up checks it)."""
        found = self._wires.get(id(spec))
        if found is None or found[0] is not spec:
            found = self._wires[id(spec)] = (spec, self.Wire.model_validate(spec.wire))
        return found[1]

    def check(self, job: ImageJob, spec: ModelSpec) -> None:  # noqa: B027 - optional hook
        """Model-specific validation the catalog's generic rules do not cover; raise
        ``InvalidRequest``. No I/O."""

    @abstractmethod
    async def submit(self, call: Call) -> ProviderResult | Pending:
        """Send one call upstream. Queue-style upstreams return ``Pending``."""

    async def poll(self, handle: dict[str, Any]) -> ProviderResult | Pending:
        """Ask a queue-style upstream about a call ``submit`` left pending."""
        raise NotImplementedError(f"{self.provider} does not poll")

    def error_message(self, reply: Reply) -> str:
        """The human sentence inside an upstream error body (override per protocol)."""
        try:
            body = reply.json()
        except orjson.JSONDecodeError:
            return reply.body[:300].decode("utf-8", "replace")
        if isinstance(body, dict):
            err = body.get("error", body)
            if isinstance(err, dict):
                for key in ("message", "detail", "msg"):
                    if isinstance(err.get(key), str):
                        return str(err[key])
            if isinstance(err, str):
                return err
        return reply.body[:300].decode("utf-8", "replace")

    def error_for(self, reply: Reply) -> errors.UpstreamError:
        """Map a non-2xx answer into the error tree. Auth failures are the operator's problem:
        logged with the upstream's words, answered without them."""
        message = self.error_message(reply)
        where = f"{self.provider} channel {self.channel.name!r}"
        if reply.status in (401, 403):
            log.error("%s rejected our credentials (%s): %s", where, reply.status, message)
            return errors.UpstreamAuthFailed(f"The upstream for this model is misconfigured ({where}).")
        if reply.status == 429:
            return errors.UpstreamRateLimited(f"The upstream is rate limiting ({where}): {message}",
                                              retry_after=retry_after_seconds(reply.retry_after))
        if reply.status >= 500:
            return errors.UpstreamUnavailable(f"The upstream failed with {reply.status} ({where}): {message}")
        return errors.UpstreamRejected(f"The upstream refused the request: {message}")

    async def send(self, method: str, url: str, *, json: Any = None, data: Any = None,
                   headers: Mapping[str, str] | None = None, timeout: float | None = None) -> Reply:
        """One HTTP exchange with the upstream; non-2xx answers become ``UpstreamError``s."""
        body = orjson.dumps(json) if json is not None else data
        hdrs = dict(headers or {})
        if json is not None:
            hdrs.setdefault("Content-Type", "application/json")
        async with upstream_errors(self.provider), self.http.request(
            method, url, data=body, headers=hdrs, proxy=self.channel.proxy,
            timeout=aiohttp.ClientTimeout(total=timeout or self.channel.timeout),
        ) as resp:
            reply = Reply(resp.status, await resp.read(), resp.headers.get("Content-Type", ""),
                          resp.headers.get("Retry-After") if resp.status == 429 else None)
            logs.upstream_id(resp.headers.get("x-request-id") or resp.headers.get("request-id"))
        if reply.status >= 400:
            raise self.error_for(reply)
        return reply

    def parse(self, model: type[M], reply: Reply) -> M:
        """Validate an upstream answer; an unreadable one is ``UpstreamBadResponse``."""
        try:
            return model.model_validate_json(reply.body)
        except ValueError as exc:
            raise errors.UpstreamBadResponse(
                f"The upstream ({self.provider}) answered with a body imagegate cannot read."
            ) from exc

    def pending(self, handle: dict[str, Any], progress: int = 20) -> Pending:
        logs.annotate(upstream_id=handle.get("id"))  # the request's log line names the upstream's job
        return Pending(handle=handle, poll_after=self.channel.poll_interval, progress=progress)


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header (seconds, or an HTTP date) as seconds from now, capped at an hour."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), 3600.0) if seconds == seconds else None


@asynccontextmanager
async def upstream_errors(provider: str) -> AsyncIterator[None]:
    """Translate transport failures into the error tree (``raise ... from exc``)."""
    try:
        yield
    except TimeoutError as exc:
        raise errors.UpstreamTimeout(f"The upstream ({provider}) did not answer in time.") from exc
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        raise errors.UpstreamUnavailable(f"Could not reach the upstream ({provider}): {exc}") from exc
    except asyncio.CancelledError:
        raise

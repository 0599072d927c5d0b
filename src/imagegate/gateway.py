"""The job pipeline every surface shares: resolve inputs, hold money, call the upstream with
failover, store the images, settle, log.

A job advances in *steps* (``Gateway.step``) over a JSON-serialisable ``JobState``: the first
step picks a channel and submits (fanning ``n`` out when the model makes fewer images per call);
later steps poll queue-style upstreams. A sync request awaits the steps in a loop; an async task
runs one step per claim and persists the state in between, so a restarted gateway resumes
polling the recorded upstream ids instead of submitting again. Same function, different awaiter.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from imagegate import imaging, logs, metrics
from imagegate.accounts import Principal
from imagegate.billing import Billing
from imagegate.billing.usage import UsageLog
from imagegate.breaker import ChannelHealth, Refusal, Ticket
from imagegate.core import errors
from imagegate.core.errors import ImagegateError, InvalidRequest
from imagegate.core.job import Call, ImageJob, ImageSource, InputImage, PartialSink, Pending, ProviderResult, Usage
from imagegate.net import SafeClient
from imagegate.routing import Route, Router, adjusted_params, dropped_params, with_defaults
from imagegate.storage.base import BlobStore, owner_of
from imagegate.storage.urls import FileUrls

log = logging.getLogger("imagegate.gateway")

Inputs = tuple[tuple[InputImage, ...], InputImage | None]


class Delivered(BaseModel):
    """One image handed to the caller: a stored blob, or (sync ``b64_json`` only) the base64
    string as the upstream sent it — never decoded and re-encoded."""

    blob: str | None = None
    b64: str | None = Field(default=None, exclude=True)
    mime: str = "image/png"
    width: int | None = None
    height: int | None = None
    revised_prompt: str | None = None


class CallState(BaseModel):
    n: int
    handle: dict[str, Any] | None = None
    done: bool = False
    error: dict[str, str] | None = None


class JobState(BaseModel):
    """Where a job is. Persisted as-is by async tasks."""

    owner: str | None = None
    """The account the job runs for: its images' keys carry its mark (``UrlSigner.owner_tag``)."""
    channel: str | None = None
    upstream_model: str | None = None
    """The catalog name of the model the channel serves the job with."""
    calls: list[CallState] = Field(default_factory=list)
    tried: list[str] = Field(default_factory=list)
    delivered: list[Delivered] = Field(default_factory=list)
    usage: Usage | None = None
    text: str | None = None
    failures: list[str] = Field(default_factory=list)
    progress: int = 0
    partial: str | None = None
    """The blob of the latest partial image (an async task whose caller asked for ``partial_images``)."""


@dataclass
class Outcome:
    """A finished job as the surfaces render it."""

    delivered: list[Delivered]
    usage: Usage | None
    text: str | None
    channel: str
    provider: str
    cost: int = 0
    dropped: list[str] = field(default_factory=list)
    adjusted: list[str] = field(default_factory=list)
    """Parameters honoured approximately, ``name=asked->drawn`` (``routing.adjusted_params``)."""
    failures: list[str] = field(default_factory=list)


def _error_to_dict(exc: ImagegateError) -> dict[str, str]:
    out = {"type": type(exc).__name__, "message": exc.message, "code": exc.code}
    if exc.param:
        out["param"] = exc.param
    if isinstance(exc, errors.ContentRefused | errors.NoImageReturned):
        out["reason"] = exc.reason
    if isinstance(exc, errors.ContentRefused) and exc.prompt_blocked:
        out["prompt_blocked"] = "true"  # the Gemini surface renders it as promptFeedback
    return out


def error_from_dict(d: dict[str, str]) -> ImagegateError:
    cls = getattr(errors, d.get("type", ""), errors.UpstreamError)
    if not (isinstance(cls, type) and issubclass(cls, ImagegateError)):
        cls = errors.UpstreamError
    kw: dict[str, Any] = {"param": d.get("param"), "code": d.get("code")}
    if issubclass(cls, errors.ContentRefused | errors.NoImageReturned):
        kw["reason"] = d.get("reason", "OTHER")
    if issubclass(cls, errors.ContentRefused):
        kw["prompt_blocked"] = d.get("prompt_blocked") == "true"
    return cls(d["message"], **kw)


def _split(n: int, per_call: int) -> list[int]:
    return [min(per_call, n - i) for i in range(0, n, per_call)]


class Gateway:
    def __init__(self, *, router: Router, store: BlobStore, urls: FileUrls, safe: SafeClient,
                 billing: Billing, usage_log: UsageLog, max_file_bytes: int,
                 max_image_pixels: int = imaging.MAX_PIXELS, health: ChannelHealth | None = None) -> None:
        self.router = router
        """Swapped whole when channels change at runtime; a job keeps the routes it was planned with."""
        self.health = health or ChannelHealth(on_change=metrics.channel_state)
        self.store = store
        self.urls = urls
        self.signer = urls.signer
        self.safe = safe
        self.billing = billing
        self.usage_log = usage_log
        self.max_file_bytes = max_file_bytes
        self.max_image_pixels = max_image_pixels  # callers' images and masks (``limits``)

    # ---- the sync awaiter -------------------------------------------------------------------

    async def execute(self, job: ImageJob, principal: Principal, *, request_id: str,
                      on_partial: PartialSink | None = None) -> Outcome:
        """Run ``job`` to the end for a caller who waits (``on_partial``: a streaming caller's
        sink for intermediate images). Money moves only on success."""
        started = time.monotonic()
        job, routes = self.router.plan(job)
        inputs = await self.resolve_inputs(job, account=principal.account_id)
        deadline = time.time() + max(r.channel.deadline for r in routes)
        # The longest this request can live: polls until the deadline, plus a submit per channel
        # tried and one more exchange (a last poll, a download), each bounded by the channel
        # timeout; ``Billing`` adds its margin. Only then may the reaper release the hold.
        longest = deadline - time.time() + sum(r.channel.timeout for r in routes) + 2 * max(
            r.channel.timeout for r in routes)
        try:
            hold = await self.billing.hold(principal, job, request_id, ttl=longest)
        except errors.InsufficientQuota as exc:
            self.usage_log.record(request_id, principal, job, channel="", status=exc.code, images=0, cost=0,
                                  started=started)
            raise
        state = JobState(owner=principal.account_id)
        try:
            while (wait := await self.step(job, state, routes, lambda: _ready(inputs), persist=False,
                                           deadline_at=deadline, on_partial=on_partial)) is not None:
                await asyncio.sleep(wait)
            outcome = self.outcome(job, state, routes)
        except BaseException as exc:
            # Cancellation included: a failed or abandoned request costs nothing.
            await asyncio.shield(self.billing.settle(hold, job, 0, None))
            code = exc.code if isinstance(exc, ImagegateError) else "cancelled"
            self.usage_log.record(request_id, principal, job, channel=state.channel or "",
                                  status=code, images=0, cost=0, started=started)
            raise
        # Shielded: a caller who hangs up now still gets (and pays for) the images delivered.
        outcome.cost = await asyncio.shield(
            self.billing.settle(hold, job, len(outcome.delivered), outcome.usage))
        self.usage_log.record(request_id, principal, job, channel=outcome.channel, status="success",
                              images=len(outcome.delivered), cost=outcome.cost, started=started,
                              blobs=[d.blob for d in outcome.delivered if d.blob is not None])
        return outcome

    # ---- one step of a job (shared by sync and async) ---------------------------------------

    async def step(self, job: ImageJob, state: JobState, routes: list[Route],
                   inputs: Callable[[], Awaitable[Inputs]], *, persist: bool,
                   deadline_at: float, on_partial: PartialSink | None = None) -> float | None:
        """Advance ``state``; return seconds until the next step, or None when the job is done
        (then ``outcome`` reads the result). Raises the job's error when it failed."""
        if not state.calls:
            await self._submit(job, state, routes, await inputs(), persist, on_partial)
        else:
            if time.time() > deadline_at:
                raise errors.UpstreamTimeout("The upstream did not finish the job before its deadline.")
            await self._poll(job, state, self._route(state, routes), persist)
        waits = [c.handle.get("_poll_after", 1.0) for c in state.calls if not c.done and c.handle]
        if waits:
            return float(min(waits))
        state.progress = 100
        return None

    def outcome(self, job: ImageJob, state: JobState, routes: list[Route]) -> Outcome:
        route = self._route(state, routes)
        if not state.delivered:
            first = next((c.error for c in state.calls if c.error), None)
            if first is not None:
                raise error_from_dict(first)
            raise errors.NoImageReturned("The upstream answered without an image.")
        return Outcome(state.delivered, state.usage, state.text, route.channel.name,
                       route.channel.provider, dropped=dropped_params(job, route), failures=state.failures,
                       adjusted=adjusted_params(job, route))

    async def try_route(self, route: Route, job: ImageJob) -> Outcome:
        """``job`` on ``route`` alone, past the channel's health gate (``channels test``): nothing
        stored (ask ``b64_json``), nothing billed, no failover. Raises the channel's error."""
        state = JobState()
        deadline = time.time() + route.channel.deadline
        await self._submit(job, state, [route], ((), None), False, gated=False)
        while waits := [c.handle.get("_poll_after", 1.0) for c in state.calls if not c.done and c.handle]:
            if time.time() > deadline:
                raise errors.UpstreamTimeout("The upstream did not finish the job before its deadline.")
            await asyncio.sleep(float(min(waits)))
            await self._poll(job, state, route, False)
        return self.outcome(job, state, [route])

    @staticmethod
    def _route(state: JobState, routes: list[Route]) -> Route:
        for r in routes:
            if r.channel.name == state.channel and r.model == state.upstream_model:
                return r
        raise errors.UpstreamUnavailable(f"The channel {state.channel!r} is no longer configured.")

    async def _submit(self, job: ImageJob, state: JobState, routes: list[Route], inputs: Inputs,
                      persist: bool, on_partial: PartialSink | None = None, *, gated: bool = True) -> None:
        last: ImagegateError | None = None
        refused: list[Refusal] = []
        for route in routes:
            if route.channel.name in state.tried:
                continue
            ticket = await self.health.admit(route.channel) if gated else None
            if isinstance(ticket, Refusal):  # open breaker, over its cap or rate, backing off: skip it
                refused.append(ticket)
                continue
            shares = _split(job.n, route.spec.max_n)
            images, mask = inputs
            routed = with_defaults(job, route.spec)
            began = time.perf_counter()
            try:
                results = await asyncio.gather(
                    *(route.adapter.submit(Call(routed, route.spec, route.upstream_model, n, images, mask, on_partial))
                      for n in shares),
                    return_exceptions=True,
                )
            finally:
                if ticket is not None:
                    self.health.release(ticket)  # in flight no more; the verdict follows
                _upstream_time(route.channel.name, "submit", time.perf_counter() - began)
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, ImagegateError):
                    raise r
            failed = [r for r in results if isinstance(r, ImagegateError)]
            for e in failed:
                metrics.upstream_error(route.channel.name, e.code)
            all_retryable = len(failed) == len(results) and all(e.retryable for e in failed)
            if ticket is not None:
                self._judge(ticket, route, failed if all_retryable else [])
            if all_retryable:
                log.warning("channel %s failed (%s); trying the next one", route.channel.name, failed[0])
                state.tried.append(route.channel.name)
                metrics.failover(route.channel.name)
                last = failed[0]
                continue
            state.channel, state.upstream_model = route.channel.name, route.model
            state.calls = [CallState(n=n) for n in shares]
            await asyncio.gather(*(self._record(job, state, call, r, route, persist)
                                   for call, r in zip(state.calls, results, strict=True)))
            return
        if last is not None:
            raise last
        raise _refusal_error(refused)

    def _judge(self, ticket: Ticket, route: Route, failed: list[ImagegateError]) -> None:
        """Tell the channel's health how the submission went (``failed``: every call's retryable error)."""
        if not failed:
            self.health.judge(ticket, route.channel, "success")
        elif all(isinstance(e, errors.UpstreamRateLimited) for e in failed):
            waits = [e.retry_after for e in failed if isinstance(e, errors.UpstreamRateLimited) and e.retry_after]
            self.health.judge(ticket, route.channel, "rate_limited", retry_after=max(waits, default=None),
                              error=failed[0].code)
        else:
            self.health.judge(ticket, route.channel, "failure", error=failed[0].code)

    async def _poll(self, job: ImageJob, state: JobState, route: Route, persist: bool) -> None:
        pending = [c for c in state.calls if not c.done and c.handle is not None]

        async def one(call: CallState) -> None:
            assert call.handle is not None
            handle = {k: v for k, v in call.handle.items() if not k.startswith("_")}
            began = time.perf_counter()
            try:
                answer: ProviderResult | Pending | ImagegateError = await route.adapter.poll(handle)
            except ImagegateError as exc:
                metrics.upstream_error(route.channel.name, exc.code)
                if exc.retryable:  # a flaky poll is not a failed job: ask again next step
                    log.info("poll of %s failed transiently: %s", route.channel.name, exc)
                    return
                answer = exc
            finally:
                _upstream_time(route.channel.name, "poll", time.perf_counter() - began)
            await self._record(job, state, call, answer, route, persist)

        await asyncio.gather(*(one(c) for c in pending))

    async def _record(self, job: ImageJob, state: JobState, call: CallState,
                      answer: ProviderResult | Pending | BaseException, route: Route, persist: bool) -> None:
        if isinstance(answer, Pending):
            call.handle = {**answer.handle, "_poll_after": answer.poll_after}
            state.progress = max(state.progress, answer.progress)
            return
        call.done, call.handle = True, None
        if isinstance(answer, ImagegateError):
            call.error = _error_to_dict(answer)
            return
        assert isinstance(answer, ProviderResult)
        delivered = await self._deliver(job, answer, route, persist, state.owner)
        state.delivered.extend(delivered)
        state.failures.extend(answer.failures)
        if answer.usage is not None:
            state.usage = answer.usage if state.usage is None else state.usage + answer.usage
        if answer.text:
            state.text = f"{state.text}\n{answer.text}" if state.text else answer.text
        if not delivered:
            call.error = _error_to_dict(errors.NoImageReturned(
                "; ".join(answer.failures) or "The upstream answered without an image."))

    # ---- images in ---------------------------------------------------------------------------

    async def resolve_inputs(self, job: ImageJob, *, account: str | None = None) -> Inputs:
        """Fetch, sniff and check every reference image and the mask for the caller's
        ``account``. Caller faults are 400s."""
        images = await asyncio.gather(*(self._load(src, f"image[{i}]", account) for i, src in enumerate(job.images)))
        mask = None
        if job.mask is not None:
            raw = await self._load(job.mask, "mask", account)
            if not images:
                raise InvalidRequest("A mask needs an image to apply to.", param="mask")
            info = imaging.check_mask(raw.data, _info(images[0]), param="mask", max_pixels=self.max_image_pixels)
            mask = InputImage(raw.data, info.mime, info.width, info.height, info.has_alpha)
        return tuple(images), mask

    async def _load(self, src: ImageSource, param: str, account: str | None) -> InputImage:
        if src.data is not None:
            data = src.data
        elif src.blob is not None:
            data = await self.store.get(src.blob)
        elif src.url is not None:
            data = await self._fetch_reference(src.url, param, account)
        else:
            raise InvalidRequest("Empty image reference.", param=param)
        if len(data) > self.max_file_bytes:
            raise InvalidRequest(f"{param} is larger than {self.max_file_bytes // 2**20} MB.",
                                 param=param, code="image_too_large")
        info = imaging.probe(data, param=param, max_pixels=self.max_image_pixels)
        return InputImage(data, info.mime, info.width, info.height, info.has_alpha)

    async def _fetch_reference(self, url: str, param: str, account: str | None) -> bytes:
        # An image this gateway served (the generate-then-edit loop) is read from the store
        # directly: its host is usually not public, and the signature proves we made it. A valid
        # URL is a capability, whoever sends it; once expired, only the account the image was
        # made for may still use it (a conversation outlives ``url_ttl``). A bad signature never.
        ref = self.urls.parse(url)
        if ref is not None:
            if not ref.genuine(self.signer):
                raise InvalidRequest("That image URL of this gateway is invalid (its signature does not match).",
                                     param=param)
            key, owner = ref.key, owner_of(ref.key)
            mine = account is not None and owner is not None and owner == self.signer.owner_tag(account)
            if not mine and ref.expired():
                raise InvalidRequest("That image URL of this gateway has expired; only the account it was made "
                                     "for may still send it back. Download the image and send its bytes instead.",
                                     param=param)
            try:
                return await self.store.get(key)
            except KeyError:
                raise InvalidRequest("That image of this gateway no longer exists.", param=param) from None
        fetched = await self.safe.fetch(url, param=param, max_bytes=self.max_file_bytes)
        return fetched.data

    # ---- images out --------------------------------------------------------------------------

    async def _deliver(self, job: ImageJob, result: ProviderResult, route: Route,
                       persist: bool, owner: str | None) -> list[Delivered]:
        keep_b64 = not persist and job.response_format == "b64_json"
        mark = self.signer.owner_tag(owner) if owner is not None else None

        async def one(img: Any) -> Delivered:
            if img.b64 is not None and keep_b64:
                info = imaging.probe_base64(img.b64)
                if info is None:
                    raise errors.UpstreamBadResponse("The upstream returned an unreadable image.")
                return Delivered(b64=img.b64, mime=info.mime, width=info.width, height=info.height,
                                 revised_prompt=img.revised_prompt)
            if img.data is not None:
                data = img.data
            elif img.b64 is not None:
                # Strip a data-URI prefix only when there is one: splitting copies megabytes.
                b64 = img.b64.split(",", 1)[1] if img.b64.startswith("data:") else img.b64
                try:
                    data = base64.b64decode(b64, validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise errors.UpstreamBadResponse("The upstream returned invalid base64.") from exc
            else:
                data = await self._download(img.url, route)
            try:
                info = imaging.probe(data, param="upstream")
            except InvalidRequest as exc:
                raise errors.UpstreamBadResponse("The upstream returned an unreadable image.") from exc
            if keep_b64:
                return Delivered(b64=base64.b64encode(data).decode(), mime=info.mime, width=info.width,
                                 height=info.height, revised_prompt=img.revised_prompt)
            key = await self.store.put(data, content_type=info.mime, owner=mark)
            metrics.stored(len(data))
            return Delivered(blob=key, mime=info.mime, width=info.width, height=info.height,
                             revised_prompt=img.revised_prompt)

        return list(await asyncio.gather(*(one(i) for i in result.images)))

    async def _download(self, url: str, route: Route) -> bytes:
        """Upstream result URLs expire within minutes: fetch them now. The channel's own host is
        trusted; any other address must pass the same rules as caller URLs."""
        host = urlsplit(route.adapter.base_url).hostname or ""
        try:
            fetched = await self.safe.fetch(url, param="upstream", max_bytes=4 * self.max_file_bytes,
                                            timeout=route.channel.timeout, trusted_hosts=(host,))
        except InvalidRequest as exc:
            raise errors.UpstreamBadResponse(f"Could not download the upstream's image: {exc.message}") from exc
        return fetched.data


def _refusal_error(refused: list[Refusal]) -> errors.UpstreamUnavailable:
    """Every channel of the model was skipped: 503 ``channel_busy`` when one is only busy, rate
    limited or backing off (a retry soon may pass), else ``channel_unavailable`` (every breaker
    open: no request goes to a channel that keeps failing until its cool-down ends)."""
    if not refused:
        return errors.UpstreamUnavailable("No channel could serve this request.")
    wait = max(1, round(min(r.retry_after for r in refused)))
    names = ", ".join(sorted({r.name for r in refused}))
    if any(r.reason != "open" for r in refused):
        return errors.UpstreamUnavailable(
            f"Every channel of this model is at its capacity ({names}); retry in about {wait} s.", code="channel_busy")
    return errors.UpstreamUnavailable(
        f"Every channel of this model is failing and paused by its circuit breaker ({names}); retry in about "
        f"{wait} s.", code="channel_unavailable")


def _upstream_time(channel: str, op: str, seconds: float) -> None:
    metrics.upstream(channel, op, seconds)
    logs.upstream_time(seconds)  # the request's log line and its gateway-added latency


async def _ready(inputs: Inputs) -> Inputs:
    return inputs


def _info(img: InputImage) -> imaging.ImageInfo:
    return imaging.ImageInfo(img.mime, img.width, img.height, img.has_alpha)

"""Public model → the channels that serve it, in the order to try them.

Channels come from the configuration, or — with none configured — one per provider whose usual
key variable is set. Order: lower ``priority`` first; among equal priorities a weighted random
order, so traffic spreads by ``weight`` and failover still reaches every channel.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from pydantic import ValidationError

from imagegate.catalog import Catalog
from imagegate.config import ChannelConfig, ConfigError, LimitsConfig, Settings
from imagegate.core.errors import InvalidRequest, ModelNotFound
from imagegate.core.geometry import (
    MAX_SIDE,
    MIN_SIDE,
    PUBLIC_RATIOS,
    format_size,
    known_ratio,
    nearest_ratio,
    nearest_size,
    parse_ratio,
    parse_size,
    same_shape,
)
from imagegate.core.job import ImageJob, ImageSource
from imagegate.core.spec import ModelSpec
from imagegate.net import env_proxy
from imagegate.providers.base import Adapter
from imagegate.providers.registry import ADAPTERS

PUBLIC_MAX_N = 10
SEED_MIN, SEED_MAX = -(2**31), 2**31 - 1
"""Seeds are 32-bit signed integers on every surface (Gemini's own type); adapters map them onto
what their upstream takes (``docs/models.md``)."""
_INT64 = 2**63
DEFAULT_MAX_PROMPT = LimitsConfig().max_prompt_chars
# Parameters every model takes in some form: never reported as dropped.
_CORE_PARAMS = frozenset({"model", "prompt", "n", "response_format", "images", "mask", "native", "extra",
                          "surface", "action"})


@dataclass(frozen=True)
class Route:
    """One channel serving a public model: the catalog model it maps to, and its spec."""

    channel: ChannelConfig
    adapter: Adapter
    model: str
    """The catalog name (``gemini-3-pro-image-preview@4K``)."""
    spec: ModelSpec

    @property
    def upstream_model(self) -> str:
        """The name sent upstream (``gemini-3-pro-image-preview``)."""
        return self.spec.upstream_name(self.model)


def router_for(settings: Settings, http: aiohttp.ClientSession, env: Mapping[str, str]) -> Router:
    """The router ``serve`` runs with: the channels in force over the catalog (shipped entries plus
    the operator's ``catalog:``). ``ConfigError`` names the first bad key."""
    return Router.build(default_channels(settings, env), http, Catalog.load(settings.catalog),
                        max_prompt_chars=settings.limits.max_prompt_chars)


def default_channels(settings: Settings, env: Mapping[str, str]) -> list[ChannelConfig]:
    """The channels in force: configured ones, else one per provider with its key variable set;
    plus the embedded model unless turned off."""
    if settings.channels is not None:
        channels = list(settings.channels)
    else:
        channels = [
            ChannelConfig(name=pid, provider=pid, api_key=env[cls.key_env])
            for pid, cls in ADAPTERS.items() if cls.key_env and env.get(cls.key_env)
        ]
    if settings.local_model and "local" in ADAPTERS and not any(c.provider == "local" for c in channels):
        channels.append(ChannelConfig(name="local", provider="local"))
    return [with_proxy(c, env) for c in channels]


def with_proxy(channel: ChannelConfig, env: Mapping[str, str]) -> ChannelConfig:
    """``channel`` with the proxy the environment gives its host, unless it names one."""
    adapter = ADAPTERS.get(channel.provider)
    base = channel.base_url or (adapter.default_base_url if adapter else "")
    if channel.proxy is not None or not base:
        return channel
    return channel.model_copy(update={"proxy": env_proxy(base, env)})


class Router:
    def __init__(self, routes: dict[str, list[Route]], *, max_prompt_chars: int = DEFAULT_MAX_PROMPT) -> None:
        self._routes = routes
        self.max_prompt_chars = max_prompt_chars

    @classmethod
    def build(cls, channels: list[ChannelConfig], http: aiohttp.ClientSession, catalog: Catalog, *,
              max_prompt_chars: int = DEFAULT_MAX_PROMPT) -> Router:
        """Every channel's adapter and routes; a model the catalog does not know, or a catalog
        entry whose ``wire:`` the adapter refuses, is a ``ConfigError`` naming the key."""
        routes: dict[str, list[Route]] = {}
        for i, ch in enumerate(channels):
            adapter_cls = ADAPTERS.get(ch.provider)
            if adapter_cls is None:
                raise ConfigError(
                    f"channels.{i}.provider: unknown provider {ch.provider!r}; known: {sorted(ADAPTERS)}"
                )
            adapter = adapter_cls(ch, http)
            models = catalog.protocol(ch.provider)
            for public, name in (ch.models or models.served_as).items():
                where = f"channels.{i}.models.{public}" if ch.models else f"catalog.yaml {ch.provider}.served_as"
                try:
                    spec = models.spec(name)
                except LookupError:
                    raise ConfigError(
                        f"{where}: the catalog has no {ch.provider} model {name!r}; add it under catalog: "
                        f"(e.g. {{{name}: {{protocol: {ch.provider}, like: <a known model>}}}}); known: "
                        f"{', '.join(models.names())}") from None
                try:
                    adapter.wire(spec)
                except ValidationError as exc:
                    first = exc.errors()[0]
                    key = ".".join(str(p) for p in first["loc"])
                    raise ConfigError(f"catalog.{name}.wire.{key}: {first['msg']}") from exc
                routes.setdefault(public, []).append(Route(ch, adapter, name, spec))
        return cls(routes, max_prompt_chars=max_prompt_chars)

    def channels(self) -> list[ChannelConfig]:
        """Every channel with at least one route, in configuration order."""
        seen: dict[str, ChannelConfig] = {}
        for routes in self._routes.values():
            for r in routes:
                seen.setdefault(r.channel.name, r.channel)
        return list(seen.values())

    def routes_of(self, channel: str) -> dict[str, Route]:
        """Public model name → the route ``channel`` serves it with."""
        return {m: r for m, rs in sorted(self._routes.items()) for r in rs if r.channel.name == channel}

    def models(self) -> dict[str, str]:
        """Public model name → provider of its first channel."""
        return {m: rs[0].channel.provider for m, rs in sorted(self._routes.items())}

    def routes(self, model: str) -> list[Route]:
        """Every channel configured for ``model`` (readiness: is one of them usable?)."""
        return list(self._routes.get(model, ()))

    def first_route(self, model: str) -> Route | None:
        """The channel tried first for ``model`` (lowest priority), whose spec describes it."""
        routes = self._routes.get(model)
        return min(routes, key=lambda r: r.channel.priority) if routes else None

    def plan(self, job: ImageJob) -> tuple[ImageJob, list[Route]]:
        """The job as the model takes it, and the channels that can serve it in the order to try
        them. Raises ``ModelNotFound``, or the first channel's ``InvalidRequest`` when no channel
        accepts the request."""
        routes = self._routes.get(job.model)
        if not routes:
            raise ModelNotFound(f"The model {job.model!r} does not exist or is not served here.",
                                param="model")
        if routes[0].spec.prompt_urls:
            job = prompt_urls_as_images(job)
        valid: list[Route] = []
        first_error: InvalidRequest | None = None
        for route in routes:
            try:
                validate(job, route, max_prompt_chars=self.max_prompt_chars)
            except InvalidRequest as exc:
                first_error = first_error or exc
                continue
            valid.append(route)
        if not valid:
            assert first_error is not None
            raise first_error
        return job, _ordered(valid)


def prompt_urls_as_images(job: ImageJob) -> ImageJob:
    words = job.prompt.split(" ")
    urls = [w for w in words if w.startswith(("http://", "https://"))]
    if not urls:
        return job
    prompt = " ".join(w for w in words if w not in urls).strip()
    return job.model_copy(update={"prompt": prompt or job.prompt,
                                  "images": [*job.images, *(ImageSource(url=u) for u in urls)]})


def _ordered(routes: list[Route]) -> list[Route]:
    if len(routes) == 1:  # the common case: no draw to make
        return routes
    out: list[Route] = []
    for priority in sorted({r.channel.priority for r in routes}):
        group = [r for r in routes if r.channel.priority == priority]
        while group:
            pick = random.choices(group, weights=[r.channel.weight for r in group])[0]
            group.remove(pick)
            out.append(pick)
    return out


def validate(job: ImageJob, route: Route, *, max_prompt_chars: int = DEFAULT_MAX_PROMPT) -> None:
    """What every model's ``ModelSpec`` says, then the adapter's own rules."""
    spec = route.spec
    limit = min(max_prompt_chars, spec.max_prompt or max_prompt_chars)
    if len(job.prompt) > limit:
        raise InvalidRequest(f"prompt is {len(job.prompt)} characters; {job.model} takes at most {limit}.",
                             param="prompt")
    _check_size(job, spec)
    if job.aspect_ratio:
        _check_ratio(job.aspect_ratio, job.model, spec)
    if not 1 <= job.n <= PUBLIC_MAX_N:
        raise InvalidRequest(f"n must be between 1 and {PUBLIC_MAX_N}.", param="n")
    if job.seed is not None and not SEED_MIN <= job.seed <= SEED_MAX:
        raise InvalidRequest(f"seed must be an integer from {SEED_MIN} to {SEED_MAX} (32-bit signed).",
                             param="seed")
    for name, value in job.extra.items():
        if _huge_int(value):
            raise InvalidRequest(f"{name} holds an integer beyond 64 bits: no model takes one.", param=name)
    if job.action not in spec.actions:
        raise InvalidRequest(f"The model {job.model!r} cannot edit images; use /v1/images/generations.",
                             param="model")
    if len(job.images) > spec.max_images:
        if spec.max_images == 0:
            raise InvalidRequest(f"The model {job.model!r} does not take reference images.", param="image")
        raise InvalidRequest(f"The model {job.model!r} takes at most {spec.max_images} reference images.",
                             param="image")
    if spec.requires_image and not job.images:
        raise InvalidRequest(f"The model {job.model!r} requires a reference image.", param="image")
    if job.action == "edit" and not job.images and not spec.edit_without_image:
        raise InvalidRequest(f"An edit needs the image to change: the model {job.model!r} does not edit "
                             "without one.", param="image")
    if job.action == "generate" and job.images and not spec.images_on_generate:
        raise InvalidRequest(f"The model {job.model!r} takes reference images only on /v1/images/edits.",
                             param="image")
    if job.mask is not None:
        if not spec.mask:
            raise InvalidRequest(f"The model {job.model!r} cannot apply a mask.", param="mask")
        if not job.images:
            raise InvalidRequest("A mask needs an image to apply to.", param="mask")
    for param, value, taken in (("image_size", job.image_size, spec.image_sizes),
                                ("quality", job.quality, spec.qualities)):
        # A model that takes none ignores the parameter (reported as dropped); one that lists
        # values refuses any other rather than draw something the caller did not ask for.
        if value is not None and taken is not None and value not in taken:
            raise InvalidRequest(f"{param} {value!r} is not one {job.model} takes: {', '.join(taken)}.",
                                 param=param)
    route.adapter.check(job, spec)


def with_defaults(job: ImageJob, spec: ModelSpec) -> ImageJob:
    """``job`` with the model's catalog ``defaults`` for what the caller left unset."""
    unset = {k: v for k, v in spec.defaults.items() if getattr(job, k, None) is None}
    return job.model_copy(update=unset) if unset else job


def _check_size(job: ImageJob, spec: ModelSpec) -> None:
    try:
        wh = parse_size(job.size)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{exc.message} {_sizes_taken(job.model, spec)}", param="size") from exc
    if wh is not None and spec.max_side is not None and max(wh) > spec.max_side:
        raise InvalidRequest(f"size {job.size!r} is too large. {_sizes_taken(job.model, spec)}", param="size")
    bounds = spec.size_bounds
    if wh is not None and bounds is not None and "size" in spec.params and not job.aspect_ratio \
            and not bounds.shape_ok(*wh):
        raise InvalidRequest(f"size {job.size!r} is a shape {job.model} does not draw. "
                             f"{_sizes_taken(job.model, spec)}", param="size")


def _sizes_taken(model: str, spec: ModelSpec) -> str:
    if "size" not in spec.params:
        return f"({model} takes no size: it would be ignored.)"
    if spec.sizes:
        return (f"{model} makes {', '.join(format_size(s) for s in spec.sizes)}; another size within "
                f"{MIN_SIDE}..{MAX_SIDE} px a side is snapped to the nearest of these.")
    if spec.size_bounds is not None:
        return (f"{model} draws any size with {spec.size_bounds.describe()} (another size is scaled into "
                "these, its shape kept).")
    if spec.max_side is not None:
        return f"{model} draws any size from {MIN_SIDE} to {spec.max_side} px a side."
    return f"{model} takes sizes from {MIN_SIDE} to {MAX_SIDE} px a side (scaled into its own limits)."


def _check_ratio(ratio: str, model: str, spec: ModelSpec) -> str:
    """The ratio of the public set (or of the model's own) that ``ratio`` names; anything else is a
    400 that lists what the model takes."""
    taken = (*PUBLIC_RATIOS, *(r for r in spec.aspect_ratios or () if r not in PUBLIC_RATIOS))
    try:
        known = known_ratio(ratio, taken)
    except InvalidRequest:
        known = None
    if known is None:
        raise InvalidRequest(f"aspect_ratio {ratio!r} is not one {model} takes: {_ratios_taken(spec)}",
                             param="aspect_ratio")
    return known


def _ratios_taken(spec: ModelSpec) -> str:
    if spec.aspect_ratios:
        others = [r for r in PUBLIC_RATIOS if r not in spec.aspect_ratios]
        tail = f"; {', '.join(others)} are drawn at the nearest of these." if others else "."
        return f"it draws {', '.join(spec.aspect_ratios)}{tail}"
    if spec.sizes:
        return (f"{', '.join(PUBLIC_RATIOS)}, each drawn at the nearest of its sizes "
                f"({', '.join(format_size(s) for s in spec.sizes)}).")
    return f"{', '.join(PUBLIC_RATIOS)}."


def _huge_int(value: object) -> bool:
    """An integer no upstream's JSON can carry, anywhere in an extra parameter's value."""
    if isinstance(value, int) and not isinstance(value, bool):
        return not -_INT64 <= value < 2 * _INT64
    if isinstance(value, dict):
        return any(_huge_int(v) for v in value.values())
    if isinstance(value, list):
        return any(_huge_int(v) for v in value)
    return False


def adjusted_params(job: ImageJob, route: Route) -> list[str]:
    """Parameters this model honours only approximately, as ``name=asked->drawn``: an aspect ratio
    of the public set it does not draw, snapped to its nearest (``x-imagegate-adjusted-params``)."""
    spec = route.spec
    if not job.aspect_ratio or "aspect_ratio" not in spec.params or not (spec.aspect_ratios or spec.sizes
                                                                          or spec.size_bounds):
        return []
    asked = _check_ratio(job.aspect_ratio, job.model, spec)
    want = parse_ratio(asked)
    if spec.size_bounds is not None and not spec.aspect_ratios and not spec.sizes:
        # Free sizes draw every shape within ``max_ratio``; one beyond it is drawn at the limit.
        drawn_ratio = spec.size_bounds.clamp_ratio(want)
        limit = f"{drawn_ratio:g}:1" if drawn_ratio >= 1 else f"1:{1 / drawn_ratio:g}"
        return [] if same_shape(drawn_ratio, want) else [f"aspect_ratio={asked}->{limit}"]
    if spec.aspect_ratios:
        drawn = nearest_ratio(want, spec.aspect_ratios)
        return [] if same_shape(parse_ratio(drawn), want) else [f"aspect_ratio={asked}->{drawn}"]
    assert spec.sizes
    wh = nearest_size(int(1024 * want), 1024, spec.sizes)  # as the adapters with fixed sizes pick
    return [] if same_shape(wh[0] / wh[1], want) else [f"aspect_ratio={asked}->{format_size(wh)}"]


def dropped_params(job: ImageJob, route: Route) -> list[str]:
    """Parameters the caller set that this model ignores (harmless ones; see ``docs/models.md``),
    and the surface's own settings when the model does not receive that surface's body."""
    dropped = job.given() - _CORE_PARAMS - route.spec.params
    if job.native is not None and job.native.protocol != route.spec.native_protocol:
        dropped |= set(job.native.settings)
    return sorted(dropped)

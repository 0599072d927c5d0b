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

from imagegate.config import ChannelConfig, ConfigError, Settings
from imagegate.core.errors import InvalidRequest, ModelNotFound
from imagegate.core.geometry import parse_ratio, parse_size
from imagegate.core.job import ImageJob, ImageSource
from imagegate.net import env_proxy
from imagegate.providers.base import Adapter, ModelSpec
from imagegate.providers.registry import ADAPTERS

PUBLIC_MAX_N = 10
# Parameters every model takes in some form: never reported as dropped.
_CORE_PARAMS = frozenset({"model", "prompt", "n", "response_format", "images", "mask", "native", "extra",
                          "surface", "action"})


@dataclass(frozen=True)
class Route:
    channel: ChannelConfig
    adapter: Adapter
    upstream_model: str

    @property
    def spec(self) -> ModelSpec:
        return self.adapter.spec(self.upstream_model)


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
    return [_with_proxy(c, env) for c in channels]


def _with_proxy(channel: ChannelConfig, env: Mapping[str, str]) -> ChannelConfig:
    adapter = ADAPTERS.get(channel.provider)
    base = channel.base_url or (adapter.default_base_url if adapter else "")
    if channel.proxy is not None or not base:
        return channel
    return channel.model_copy(update={"proxy": env_proxy(base, env)})


class Router:
    def __init__(self, routes: dict[str, list[Route]]) -> None:
        self._routes = routes

    @classmethod
    def build(cls, channels: list[ChannelConfig], http: aiohttp.ClientSession) -> Router:
        routes: dict[str, list[Route]] = {}
        for i, ch in enumerate(channels):
            adapter_cls = ADAPTERS.get(ch.provider)
            if adapter_cls is None:
                raise ConfigError(
                    f"channels.{i}.provider: unknown provider {ch.provider!r}; known: {sorted(ADAPTERS)}"
                )
            adapter = adapter_cls(ch, http)
            for public, upstream in (ch.models or adapter_cls.default_models).items():
                routes.setdefault(public, []).append(Route(ch, adapter, upstream))
        return cls(routes)

    def models(self) -> dict[str, str]:
        """Public model name → provider of its first channel."""
        return {m: rs[0].channel.provider for m, rs in sorted(self._routes.items())}

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
                validate(job, route)
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


def validate(job: ImageJob, route: Route) -> None:
    """What every model's ``ModelSpec`` says, then the adapter's own rules."""
    spec = route.spec
    parse_size(job.size)
    if job.aspect_ratio:
        parse_ratio(job.aspect_ratio)
    if not 1 <= job.n <= PUBLIC_MAX_N:
        raise InvalidRequest(f"n must be between 1 and {PUBLIC_MAX_N}.", param="n")
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
    if job.mask is not None:
        if not spec.mask:
            raise InvalidRequest(f"The model {job.model!r} cannot apply a mask.", param="mask")
        if not job.images:
            raise InvalidRequest("A mask needs an image to apply to.", param="mask")
    route.adapter.check(job, route.upstream_model)


def dropped_params(job: ImageJob, route: Route) -> list[str]:
    """Parameters the caller set that this model ignores (harmless ones; see ``docs/models.md``)."""
    return sorted(job.given() - _CORE_PARAMS - route.spec.params)

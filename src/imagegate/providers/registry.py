"""Every adapter, registered by one line. Adding an upstream: one file in ``providers/`` and
one line here — nothing else in imagegate names a provider."""

from __future__ import annotations

from imagegate.providers.ark import ArkAdapter
from imagegate.providers.base import Adapter
from imagegate.providers.bfl import BflAdapter
from imagegate.providers.chat_image import ChatImageAdapter
from imagegate.providers.dashscope import DashScopeAdapter
from imagegate.providers.fal import FalAdapter
from imagegate.providers.gemini import GeminiAdapter
from imagegate.providers.local import LocalAdapter
from imagegate.providers.openai import OpenAIAdapter
from imagegate.providers.recraft import RecraftAdapter
from imagegate.providers.replicate import ReplicateAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    a.provider: a
    for a in (
        OpenAIAdapter,
        RecraftAdapter,
        DashScopeAdapter,
        ArkAdapter,
        ChatImageAdapter,
        FalAdapter,
        ReplicateAdapter,
        GeminiAdapter,
        BflAdapter,
        LocalAdapter,
    )
}

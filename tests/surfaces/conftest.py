"""One gateway for the surface tests, in front of the OpenAI, Gemini and chat-image emulators.

Module-scoped (starting a gateway process costs a second); emulators are reset before each test.
``nano-banana`` and ``gpt-image-1`` are priced, so billing can be checked on a funded account.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx2 as httpx
import pytest

from tests.conftest import StartGateway
from tests.emulators.chat_image import ChatImageEmulator
from tests.emulators.gemini import GeminiEmulator
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel

PRICE = "0.04"
PRICE_MICROS = 40_000


@dataclass
class Surfaces:
    gw: GatewayProcess
    openai: OpenAIEmulator
    gemini: GeminiEmulator
    chat: ChatImageEmulator
    key: str
    """An unlimited key."""

    def reset(self) -> None:
        for emu in (self.openai, self.gemini, self.chat):
            emu.reset()

    def funded_key(self, balance: int = 1_000_000) -> str:
        return self.gw.key(account=self.gw.account(balance=balance))

    def balance(self, key: str) -> tuple[int, int]:
        """(balance, held) in micro-units of the key's account."""
        body = httpx.get(f"{self.gw.url}/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()
        return body["balance_micros"], body["held_micros"]


@pytest.fixture(scope="module")
def surfaces(module_gateway_factory: StartGateway) -> Iterator[Surfaces]:
    with OpenAIEmulator() as openai, GeminiEmulator() as gemini, ChatImageEmulator() as chat:
        gw = module_gateway_factory({
            "channels": [
                channel("oa", "openai", openai.url + "/v1",
                        {"gpt-image-1": "gpt-image-1", "dall-e-3": "dall-e-3"}),
                channel("gem", "gemini", gemini.url,
                        {"nano-banana": "gemini-2.5-flash-image", "nano-banana-2": "gemini-3-pro-image-preview"}),
                channel("chat", "openai-chat", chat.url + "/v1", {"gpt-4o-image": "gpt-4o-image"}),
            ],
            "prices": {"nano-banana": {"per_image": PRICE}, "gpt-image-1": {"per_image": PRICE}},
            "local_model": False,
            "outbound_allowlist": ["127.0.0.1"],
        }, name="surfaces")
        yield Surfaces(gw, openai, gemini, chat, gw.key())


@pytest.fixture
def env(surfaces: Surfaces) -> Iterator[Surfaces]:
    surfaces.reset()
    yield surfaces
    surfaces.reset()

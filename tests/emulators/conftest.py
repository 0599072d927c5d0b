from collections.abc import Iterator

import pytest
from openai import OpenAI

from tests.emulators.openai import OpenAIEmulator


@pytest.fixture(scope="session")
def openai_emulator_server() -> Iterator[OpenAIEmulator]:
    """One OpenAI emulator for the whole session; use `openai_emulator`, which resets it."""
    with OpenAIEmulator() as emulator:
        yield emulator


@pytest.fixture
def openai_emulator(openai_emulator_server: OpenAIEmulator) -> Iterator[OpenAIEmulator]:
    """The session's OpenAI emulator, with no calls, failures or latency left from earlier tests."""
    openai_emulator_server.reset()
    yield openai_emulator_server
    openai_emulator_server.reset()


@pytest.fixture
def openai_client(openai_emulator: OpenAIEmulator) -> Iterator[OpenAI]:
    """The official SDK pointed at the emulator, without retries."""
    with OpenAI(base_url=f"{openai_emulator.url}/v1", api_key=openai_emulator.api_key, max_retries=0) as client:
        yield client

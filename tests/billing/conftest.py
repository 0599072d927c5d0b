"""Shared pieces of the billing tests: the OpenAI emulator upstream, priced test models, and a
read-only look into a gateway's ledger (straight from its SQLite file, as an auditor would)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import pytest

from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel

# Public names, each priced differently, all served by the emulator.
MODELS = {"img-flat": "dall-e-2", "img-size": "dall-e-2", "img-quality": "gpt-image-1",
          "gpt-image-1": "gpt-image-1", "img-free": "dall-e-2"}
PRICES: dict[str, Any] = {
    "img-flat": "1.00",
    "img-size": {"by_size": {"256x256": "0.25", "512x512": "0.50", "1024x1024": "1.00"}},
    "img-quality": {"per_image": "1.00", "by_quality": {"low": "0.50", "high": "2.00"}},
    # gpt-image-1 list prices per 1M tokens (text/image input $5, image output $40).
    "gpt-image-1": {"input_per_million": "5", "output_per_million": "40",
                    "max_input_tokens": 2000, "max_output_tokens_per_image": 6240},
}
MICRO = 1_000_000


def priced_config(emu: OpenAIEmulator, **extra: Any) -> dict[str, Any]:
    return {"channels": [channel("c1", "openai", emu.url + "/v1", MODELS)], "local_model": False,
            "prices": PRICES, **extra}


@pytest.fixture(autouse=True)
def _reset(emu: OpenAIEmulator) -> None:
    emu.reset()


@dataclass
class Books:
    """An account's money as the database has it."""

    balance: int
    ledger: list[tuple[str, str, int]]  # (ref, kind, amount) in insertion order
    holds: list[tuple[str, int, bool, float]]  # (ref, amount, settled, expires_at)

    @property
    def ledger_sum(self) -> int:
        return sum(amount for _, _, amount in self.ledger)

    def kinds(self, ref: str | None = None) -> list[str]:
        return [k for r, k, _ in self.ledger if ref is None or r == ref]


def books(gw: GatewayProcess, account: str) -> Books:
    with sqlite3.connect(gw.root / "imagegate.db", timeout=30) as db:
        balance = db.execute("SELECT balance FROM accounts WHERE id = ?", (account,)).fetchone()[0]
        ledger = db.execute("SELECT ref, kind, amount FROM ledger WHERE account_id = ? ORDER BY id",
                            (account,)).fetchall()
        holds = db.execute("SELECT ref, amount, settled, expires_at FROM holds WHERE account_id = ? "
                           "ORDER BY created_at", (account,)).fetchall()
    return Books(balance, [tuple(r) for r in ledger], [(r, a, bool(s), e) for r, a, s, e in holds])


def generate(gw: GatewayProcess, key: str, **body: Any) -> httpx.Response:
    body.setdefault("prompt", "a red fox in the snow")
    return httpx.post(gw.url + "/v1/images/generations", json=body,
                      headers={"Authorization": f"Bearer {key}"}, timeout=30)


def assert_free(gw: GatewayProcess, account: str, before: int) -> Books:
    """The failed request left the balance as it was; its ledger shows a hold and its release."""
    b = books(gw, account)
    assert b.balance == before
    assert b.ledger_sum == b.balance
    assert b.kinds()[-2:] == ["hold", "release"]
    assert "charge" not in b.kinds(b.ledger[-1][0])
    assert all(settled for _, _, settled, _ in b.holds)
    return b

"""The ``imagegate`` command as an operator runs it: a real subprocess against a temporary
database, configured by a file given with ``--config`` before or after the subcommand."""

from __future__ import annotations

import asyncio
import importlib.metadata
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from imagegate.billing.ledger import Ledger
from imagegate.db.session import make_engine, make_sessionmaker


@dataclass
class Cli:
    root: Path
    config: Path
    db_url: str

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "imagegate", *args], cwd=cwd or self.root,
                              capture_output=True, text=True, timeout=60)

    def ok(self, *args: str) -> str:
        """``imagegate ARGS --config FILE`` (the option after the subcommand), its stdout."""
        out = self.run(*args, "--config", str(self.config))
        assert out.returncode == 0, out.stderr
        assert "\x1b[" not in out.stdout, "output to a pipe must be plain text"
        return out.stdout


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "database_url": db_url,
        "storage_url": f"file://{tmp_path / 'images'}",
        "channels": [{"name": "oa", "provider": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x",
                      "models": {"gpt-image-1": "gpt-image-1", "house-style": "dall-e-3"}}],
    }))
    (tmp_path / "elsewhere").mkdir()
    return Cli(tmp_path, config, db_url)


def columns(table: str) -> list[dict[str, str]]:
    """Rows of a listing as {header: cell}, checking that every cell starts where its header does."""
    header, *lines = table.rstrip("\n").splitlines()
    names = header.split()
    starts = [header.index(f" {n} ") + 1 if i else 0 for i, n in enumerate(names[:-1])]
    starts.append(header.rindex(" " + names[-1]) + 1)
    rows = []
    for line in lines:
        row = {}
        for i, name in enumerate(names):
            end = starts[i + 1] if i + 1 < len(names) else None
            cell = line[starts[i]:end]
            assert i == 0 or line[starts[i] - 1] == " ", f"column {name!r} is not aligned in {line!r}"
            assert not cell.startswith(" "), f"column {name!r} is not aligned in {line!r}"
            row[name] = cell.strip()
        rows.append(row)
    return rows


def hold(db_url: str, account: str, amount: int) -> None:
    async def run() -> None:
        engine = make_engine(db_url)
        try:
            await Ledger(make_sessionmaker(engine)).hold(account, amount, "cli-test", ttl=600)
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_version(cli: Cli) -> None:
    out = cli.run("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"imagegate {importlib.metadata.version('imagegate')}"


def test_config_is_accepted_before_or_after_the_subcommand(cli: Cli) -> None:
    elsewhere = cli.root / "elsewhere"
    before = cli.run("--config", str(cli.config), "keys", "create", "--name", "first", cwd=elsewhere)
    after = cli.run("keys", "create", "--name", "second", "--config", str(cli.config), cwd=elsewhere)
    assert before.returncode == 0 and after.returncode == 0, before.stderr + after.stderr
    for args in (["--config", str(cli.config), "keys", "list"], ["keys", "list", "--config", str(cli.config)]):
        listing = cli.run(*args, cwd=elsewhere)
        assert listing.returncode == 0, listing.stderr
        assert [r["name"] for r in columns(listing.stdout)] == ["first", "second"]
    for sub in (["accounts", "list"], ["tasks", "list"], ["migrate"]):
        assert cli.run(*sub, "--config", str(cli.config), cwd=elsewhere).returncode == 0
    assert not (elsewhere / "data").exists(), "no command may fall back to ./data when given --config"


def test_accounts_list(cli: Cli) -> None:
    paying = cli.ok("accounts", "create", "--name", "acme", "--balance", "12.50").splitlines()[-1]
    house = cli.ok("accounts", "create", "--name", "house", "--unlimited").splitlines()[-1]
    hold(cli.db_url, paying, 2_250_000)
    rows = columns(cli.ok("accounts", "list"))
    assert rows == [
        {"id": paying, "name": "acme", "balance": "10.250000", "held": "2.250000", "unlimited": "no"},
        {"id": house, "name": "house", "balance": "0.000000", "held": "0.000000", "unlimited": "yes"},
    ]


def test_keys_list_shows_expiry_in_aligned_columns(cli: Cli) -> None:
    cli.ok("keys", "create", "--name", "forever")
    lasting = cli.ok("keys", "create", "--name", "yearly", "--expires", "2030-01-31", "--models", "gpt-image-1")
    cli.ok("keys", "create", "--name", "old", "--expires", "2020-01-01", "--rpm", "60")
    rows = columns(cli.ok("keys", "list"))
    assert [(r["name"], r["status"], r["expires"]) for r in rows] == [
        ("forever", "active", "never"),
        ("yearly", "active", "2030-01-31 00:00:00Z"),
        ("old", "expired", "2020-01-01 00:00:00Z"),
    ]
    assert rows[1]["id"] == lasting.splitlines()[0].removeprefix("key id: ")
    assert rows[1]["models"] == "gpt-image-1" and rows[0]["models"] == "*"
    assert rows[2]["rpm"] == "60" and rows[0]["rpm"] == "-"
    assert lasting.splitlines()[-1][:10] + "…" == rows[1]["prefix"]


def test_keys_create_refuses_models_that_are_not_served(cli: Cli) -> None:
    out = cli.run("keys", "create", "--name", "typo", "--models", "gpt-image-1,gpt-imag-2", "--config",
                  str(cli.config))
    assert out.returncode != 0
    assert "gpt-imag-2" in out.stderr and "Traceback" not in out.stderr
    assert "gpt-image-1, house-style, imagegate-shapes" in out.stderr  # what this gateway serves
    assert columns(cli.ok("keys", "list")) == [], "no key may be created on a refusal"
    made = cli.ok("keys", "create", "--name", "ok", "--models", "house-style,imagegate-shapes")
    assert made.splitlines()[-1].startswith("ig-")

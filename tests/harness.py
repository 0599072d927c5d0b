"""Start a real gateway process for end-to-end tests, exactly as an operator would.

``start_gateway(tmp_path, config)`` writes ``config`` as ``imagegate.yaml``, runs
``python -m imagegate --config ... serve`` on a free port, waits for ``/healthz``, and returns a
handle that can create keys (through the real CLI or straight into the same database), restart
the process, or kill it with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imagegate.accounts import create_account, create_key
from imagegate.db.session import make_engine, make_sessionmaker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class GatewayProcess:
    root: Path
    config: dict[str, Any]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.root / "imagegate.yaml"

    @property
    def log_path(self) -> Path:
        return self.root / "gateway.log"

    def start(self, *, workers: int = 1) -> GatewayProcess:
        cfg = {"public_url": self.url,
               "database_url": f"sqlite+aiosqlite:///{self.root / 'imagegate.db'}",
               "storage_url": f"file://{self.root / 'images'}", **self.config}
        self.config_path.write_text(yaml.safe_dump(cfg))
        env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN", "FAL_KEY"))}
        env.update(self.env)
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "imagegate", "--config", str(self.config_path), "serve",
                 "--port", str(self.port), "--workers", str(workers), "--log-level", "warning"],
                cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"gateway did not become ready:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown code runs."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def restart(self) -> GatewayProcess:
        self.stop()
        return self.start()

    def cli(self, *args: str) -> str:
        """Run ``imagegate --config <this gateway's config> ARGS`` and return its stdout."""
        out = subprocess.run([sys.executable, "-m", "imagegate", "--config", str(self.config_path), *args],
                             cwd=self.root, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"imagegate {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    def db_url(self) -> str:
        return str(self.config.get("database_url") or f"sqlite+aiosqlite:///{self.root / 'imagegate.db'}")

    def key(self, *, models: list[str] | None = None, account: str | None = None, rpm: int | None = None,
            name: str = "test") -> str:
        """A new API key, written straight into the gateway's database (fast; the CLI path has
        its own tests)."""
        async def make() -> str:
            engine = make_engine(self.db_url())
            try:
                async with make_sessionmaker(engine).begin() as s:
                    new = await create_key(s, name=name, models=models, account_id=account, rpm=rpm)
                return new.key
            finally:
                await engine.dispose()

        return asyncio.run(make())

    def account(self, *, balance: int = 0, unlimited: bool = False, name: str = "acct") -> str:
        """A new account with ``balance`` micro-units."""
        async def make() -> str:
            engine = make_engine(self.db_url())
            try:
                async with make_sessionmaker(engine).begin() as s:
                    acct = await create_account(s, name, balance=balance, unlimited=unlimited)
                    if balance:
                        from imagegate.db.models import LedgerEntry

                        s.add(LedgerEntry(account_id=acct.id, ref="topup", kind="topup", amount=balance,
                                          created_at=time.time()))
                return acct.id
            finally:
                await engine.dispose()

        return asyncio.run(make())


def start_gateway(root: Path, config: dict[str, Any], *, env: dict[str, str] | None = None,
                  workers: int = 1) -> GatewayProcess:
    root.mkdir(parents=True, exist_ok=True)
    return GatewayProcess(root=root, config=config, env=env or {}).start(workers=workers)


def channel(name: str, provider: str, base_url: str, models: dict[str, str], **extra: Any) -> dict[str, Any]:
    """A channel entry for a test config (fast polling so tests never wait for real)."""
    return {"name": name, "provider": provider, "base_url": base_url, "api_key": "test-upstream-key",
            "models": models, "poll_interval": 0.05, "timeout": 5, **extra}


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL, dropped afterwards; the test is skipped when
    no server answers (a user's fresh machine has none; CI's has one)."""
    import asyncpg
    import pytest

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN, timeout=2)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    name = f"imagegate_e2e_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(admin(f"CREATE DATABASE {name}"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 ({exc})")
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(admin(f"DROP DATABASE {name} WITH (FORCE)"))

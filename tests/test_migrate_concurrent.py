"""Replicas that start at the same time all migrate the same fresh PostgreSQL database: the
Alembic upgrade runs under an advisory lock, so the second, third and fourth wait and then find
the schema current (without it, 3 of 4 fail with ``duplicate key … alembic_version``).
Skipped where no PostgreSQL answers on 127.0.0.1:5432."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.harness import postgres_database

REPLICAS = 4


def test_four_migrations_started_at_once_all_succeed(tmp_path: Path) -> None:
    with postgres_database() as url:
        config = tmp_path / "imagegate.yaml"
        config.write_text(yaml.safe_dump({"database_url": url, "local_model": False}))
        procs = [subprocess.Popen([sys.executable, "-m", "imagegate", "--config", str(config), "migrate"],
                                  cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for _ in range(REPLICAS)]
        outputs = [p.communicate(timeout=120)[0].decode(errors="replace") for p in procs]
        failed = [out for p, out in zip(procs, outputs, strict=True) if p.returncode != 0]
        assert not failed, "\n---\n".join(failed)
        # And the schema is whole: a second run is a no-op that succeeds too.
        again = subprocess.run([sys.executable, "-m", "imagegate", "--config", str(config), "migrate"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr

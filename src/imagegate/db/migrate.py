"""Run Alembic migrations programmatically (``imagegate serve`` and ``imagegate migrate``).

Replicas that start at the same time all run the upgrade. On PostgreSQL the migration
transaction first takes a transaction-level advisory lock (``MIGRATION_LOCK``): the first
process migrates, the others wait on the lock and then find the schema current (without it,
concurrent upgrades of a fresh database fail with ``duplicate key … alembic_version``). The lock
is released by the commit or rollback of the migration, so a process killed mid-upgrade never
leaves it behind. SQLite needs none: its writers are serialised by the file lock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x1D6A7E_0001
"""The advisory lock key of ``imagegate`` migrations (any fixed 64-bit number)."""


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


async def lock_for_migration(conn: AsyncConnection) -> None:
    """Wait for the migration lock in ``conn``'s transaction (PostgreSQL; a no-op elsewhere)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})


def upgrade(database_url: str) -> None:
    """Create or migrate the database to the newest schema. Safe to run on every start, and from
    any number of processes at once."""
    from imagegate.db.session import is_sqlite, make_engine

    if is_sqlite(database_url):
        # make_engine creates the parent directory of the SQLite file.
        asyncio.run(make_engine(database_url).dispose())
    command.upgrade(alembic_config(database_url), "head")

"""Run Alembic migrations programmatically (``imagegate serve`` and ``imagegate migrate``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str) -> None:
    """Create or migrate the database to the newest schema. Safe to run on every start."""
    from imagegate.db.session import is_sqlite, make_engine

    if is_sqlite(database_url):
        # make_engine creates the parent directory of the SQLite file.
        asyncio.run(make_engine(database_url).dispose())
    command.upgrade(alembic_config(database_url), "head")

"""Alembic environment: async engines (aiosqlite, asyncpg) driven from a sync entry point."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from imagegate.db.migrate import lock_for_migration
from imagegate.db.models import Base
from imagegate.db.session import make_engine

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    async with engine.connect() as conn:
        await lock_for_migration(conn)  # replicas starting at once migrate one after the other
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_online())

"""owner keys: an API key that manages its own account's keys

Revision ID: 0004
Revises: 0003

Existing keys become owners only where they made their account: a key created without an account
(``keys create`` with no ``--account``; the quick start's first key) got an account of its own
named after it — the one key of an account with its name is that key. Every other key stays a
plain key; an operator makes more owners with ``keys create --owner``.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute(
        "UPDATE api_keys SET owner = TRUE WHERE "
        "(SELECT COUNT(*) FROM api_keys k2 WHERE k2.account_id = api_keys.account_id) = 1 "
        "AND name = (SELECT a.name FROM accounts a WHERE a.id = api_keys.account_id)")


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('owner')

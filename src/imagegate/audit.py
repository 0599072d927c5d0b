"""The audit log of operator actions: who (an admin token's fingerprint, or ``cli:user@host``),
what, on which object, when, and the change — never a secret.

Every admin API mutation and every CLI operator command calls ``record`` in the transaction of
its change, so an action and its audit row are written together or not at all.
"""

from __future__ import annotations

import getpass
import hashlib
import socket
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from imagegate.db.models import AuditEntry

SECRETS = frozenset({"api_key", "key", "webhook_secret", "secret", "token", "password"})


def admin_actor(token: str) -> str:
    """The admin API's caller: ``admin:`` and 12 hex of the SHA-256 of the token it sent (a
    rotated token shows as a new actor; the token itself is never kept)."""
    return "admin:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def cli_actor() -> str:
    """The operator at a terminal: ``cli:user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def scrub(detail: Any) -> Any:
    """``detail`` with every secret-named field replaced by ``"***"`` (nested too)."""
    if isinstance(detail, dict):
        return {k: ("***" if k in SECRETS and v is not None else scrub(v)) for k, v in detail.items()}
    if isinstance(detail, list):
        return [scrub(v) for v in detail]
    return detail


async def record(session: AsyncSession, actor: str, action: str, obj: str,
                 detail: dict[str, Any] | None = None) -> None:
    """Write one audit row in ``session``'s transaction."""
    session.add(AuditEntry(at=time.time(), actor=actor[:200], action=action, object=obj[:300],
                           detail=scrub(detail or {})))


async def page(session: AsyncSession, *, limit: int, before: int | None = None,
               action: str | None = None) -> list[dict[str, Any]]:
    """Audit rows newest first; ``before``: only rows with a smaller id (the next page)."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    return [{"id": e.id, "object": "audit_entry", "at": e.at, "actor": e.actor, "action": e.action,
             "target": e.object, "detail": e.detail} for e in (await session.execute(query)).scalars()]

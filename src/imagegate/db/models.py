"""Tables. Money is integer micro-units; times are Unix seconds (float); ids are text.

Every query is written for both SQLite and PostgreSQL: no engine-specific SQL outside
``db/session.py`` and the task claim in ``tasks/queue.py``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from imagegate.db.status import PENDING, QUEUED


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class Meta(Base):
    """Process-independent facts (the URL-signing secret), shared by every replica."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Instance(Base):
    """A running gateway process (every worker of every replica), kept alive by a heartbeat."""

    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float, index=True)


class Epoch(Base):
    """A change counter (``keys``, …): bumped in the transaction of a change, watched by every
    process so its caches forget what changed without a database read per request."""

    __tablename__ = "epochs"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class IdempotentRequest(Base):
    """The first answer to a request sent with an ``Idempotency-Key``, replayed to its repeats."""

    __tablename__ = "idempotent_requests"
    account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the method, path, query and body: the same key with another body is a 409."""
    instance_id: Mapped[str] = mapped_column(String(40))
    """The process running the first request; if it dies, a repeat takes the request over."""
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    headers: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    """Micro-units available (holds already taken out). Never negative."""
    unlimited: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(20))
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """Allowed public model names; None: all."""
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    webhook_secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    owner: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """An owner key manages its account's keys (``/v1/keys``): creates keys that may do no more
    than itself, lists and revokes them."""


class Task(Base):
    """An async job; the table is the queue (status, run_after, lease)."""

    __tablename__ = "tasks"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(40), index=True)
    key_id: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(100))
    platform: Mapped[str] = mapped_column(String(40), default="")
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    """QUEUED | IN_PROGRESS | SUCCESS | FAILURE."""
    progress: Mapped[int] = mapped_column(Integer, default=0)
    fail_reason: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Where the job is: chosen channel and each upstream call's handle (survives restarts)."""
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    submit_time: Mapped[float] = mapped_column(Float)
    start_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    finish_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    deadline_at: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[float] = mapped_column(Float)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    hold_id: Mapped[str | None] = mapped_column(String(40), nullable=True)

    __table_args__ = (Index("ix_tasks_due", "status", "run_after"),)


class Hold(Base):
    """Money set aside for one request until it settles."""

    __tablename__ = "holds"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(40), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    ref: Mapped[str] = mapped_column(String(64))
    """The request id (sync) or task id (async)."""
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    """For sync requests: after this the reaper releases it (the request cannot still be running)."""
    settled: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    instance_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    """The gateway process that placed it: when that process's heartbeat goes stale, the reaper
    may release the hold of a sync request without waiting for ``expires_at``."""


class LedgerEntry(Base):
    __tablename__ = "ledger"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(40), index=True)
    ref: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    """topup | hold | release | charge."""
    amount: Mapped[int] = mapped_column(BigInteger)
    """Signed change of the balance; the balance is the sum of its ledger."""
    created_at: Mapped[float] = mapped_column(Float)


class UsageRecord(Base):
    __tablename__ = "usage_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(40))
    account_id: Mapped[str] = mapped_column(String(40), index=True)
    key_id: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(100), default="")
    surface: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(40))
    """``success`` or the error code."""
    images: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    blobs: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """The stored images' keys (thumbnails in the history); None when none was stored (``b64_json``)."""


class WebhookDelivery(Base):
    """The outbox: one row per finished task with a webhook."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(32), index=True)
    key_id: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    """pending | delivered | failed."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_webhooks_due", "status", "next_attempt_at"),)


class WebhookEndpoint(Base):
    """A webhook URL's health: after ``tasks.webhook_pause_after`` failed attempts in a row its
    deliveries pause (kept, not sent) until an operator resumes it."""

    __tablename__ = "webhook_endpoints"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 of the URL (URLs can be longer than an index allows)."""
    url: Mapped[str] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    paused_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")


class ChannelRow(Base):
    """A channel made at runtime (admin API, ``imagegate channels add``): the fields of a YAML
    channel, its API key encrypted with the secret key (``channelstore.Sealer``)."""

    __tablename__ = "channels"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The channel's fields but ``name`` and ``api_key``."""
    api_key_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class PriceRow(Base):
    """A model's price set at runtime; it overrides the ``prices:`` of the configuration."""

    __tablename__ = "prices"
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    price: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[float] = mapped_column(Float)


class AuditEntry(Base):
    """One operator action: who (an admin token's fingerprint, or ``cli:user@host``), what, on
    which object, when, and the change (secrets left out)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    object: Mapped[str] = mapped_column(String(300))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)

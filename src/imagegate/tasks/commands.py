"""``imagegate tasks list [--status S]`` and ``imagegate tasks show ID``: what operators see."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from imagegate.config import Settings
from imagegate.db.models import Task
from imagegate.db.status import FAILURE, IN_PROGRESS, QUEUED, SUCCESS
from imagegate.tables import print_table, when
from imagegate.tasks.queue import TaskQueue
from imagegate.tasks.webhooks import deliveries_of


async def _queue(settings: Settings) -> tuple[TaskQueue, Any]:
    from imagegate.db.migrate import upgrade
    from imagegate.db.session import make_engine, make_sessionmaker

    await asyncio.to_thread(upgrade, settings.database_url)
    engine = make_engine(settings.database_url)
    return TaskQueue(make_sessionmaker(engine)), engine


async def tasks_list(settings: Settings, args: argparse.Namespace) -> None:
    queue, engine = await _queue(settings)
    try:
        rows = await queue.recent(status=args.status, limit=args.limit)
    finally:
        await engine.dispose()

    print_table(["id", "status", "progress", "submitted", "model", "platform", "account", "reason"],
                [[t.id, t.status, f"{t.progress}%", when(t.submit_time), t.model, t.platform or "-", t.account_id,
                  t.fail_reason[:80]] for t in rows])


async def tasks_show(settings: Settings, args: argparse.Namespace) -> None:
    queue, engine = await _queue(settings)
    try:
        task = await queue.get(args.id.lower())
        if task is None:
            raise SystemExit(f"no task {args.id!r}")
        deliveries = await deliveries_of(queue.sessions, task.id)
    finally:
        await engine.dispose()
    out: dict[str, Any] = {c.name: getattr(task, c.name) for c in Task.__table__.columns}
    for name in ("submit_time", "start_time", "finish_time", "deadline_at", "run_after", "lease_until"):
        out[name] = when(out[name]) if out[name] else None
    out["webhook_deliveries"] = [
        {"id": d.id, "url": d.url, "status": d.status, "attempts": d.attempts, "last_status": d.last_status,
         "last_error": d.last_error, "next_attempt_at": when(d.next_attempt_at),
         "endpoint_paused": paused} for d, paused in deliveries]
    print(json.dumps(out, indent=2, default=str))


def add_commands(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``tasks list`` and ``tasks show`` on the ``imagegate`` sub-parsers (``parents``:
    the options every subcommand takes)."""
    tasks = sub.add_parser("tasks", help="async tasks").add_subparsers(dest="tasks_command", required=True)
    tl = tasks.add_parser("list", parents=parents, help="recent tasks, newest first")
    tl.add_argument("--status", type=str.upper, choices=[QUEUED, IN_PROGRESS, SUCCESS, FAILURE],
                    help="only tasks in this state (IN_PROGRESS includes QUEUED)")
    tl.add_argument("--limit", type=int, default=50)
    tl.set_defaults(handler=tasks_list)
    ts = tasks.add_parser("show", parents=parents, help="everything about one task: request, state, result, webhooks")
    ts.add_argument("id")
    ts.set_defaults(handler=tasks_show)

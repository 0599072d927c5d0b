"""The ``imagegate`` command: serve, migrate, and operator commands over the same database."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate import __version__, audit
from imagegate.accounts import create_account, create_key, find_key, list_accounts, list_keys, parse_expiry, revoke_key
from imagegate.channels_cli import add_commands as add_channel_commands
from imagegate.channels_cli import stored_models
from imagegate.client_cli import add_commands as add_client_commands
from imagegate.config import ConfigError, Settings, load_settings
from imagegate.tables import print_table, when

if TYPE_CHECKING:
    from imagegate.routing import Router

Handler = Callable[[Settings, argparse.Namespace], Awaitable[None]]


@contextlib.asynccontextmanager
async def _sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the configured database, migrated first."""
    from imagegate.db.migrate import upgrade
    from imagegate.db.session import make_engine, make_sessionmaker

    await asyncio.to_thread(upgrade, settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def _transaction(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A session in one transaction on the configured database, migrated first."""
    async with _sessions(settings) as sessions, sessions.begin() as session:
        yield session


def _with_db(fn: Callable[[AsyncSession, argparse.Namespace], Awaitable[None]]) -> Handler:
    async def run(settings: Settings, args: argparse.Namespace) -> None:
        async with _transaction(settings) as session:
            await fn(session, args)

    return run


def _amount(text: str) -> int:
    """argparse type: an amount in currency units (``12.50``) → micro-units."""
    from imagegate.billing.prices import parse_amount

    try:
        return parse_amount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _expiry(text: str) -> float:
    try:
        return parse_expiry(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def version() -> str:
    try:
        return importlib.metadata.version("imagegate")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return __version__


@_with_db
async def accounts_create(session: AsyncSession, args: argparse.Namespace) -> None:
    from imagegate.billing.ledger import credit
    from imagegate.billing.prices import from_micro

    account = await create_account(session, args.name, unlimited=args.unlimited)
    await session.flush()
    if args.balance:
        await credit(session, account.id, args.balance)
    await audit.record(session, audit.cli_actor(), "account.create", f"account:{account.id}",
                       {"name": args.name, "balance": from_micro(args.balance), "unlimited": args.unlimited})
    print(f"name: {account.name}")
    print(f"balance: {'unlimited' if args.unlimited else from_micro(args.balance)}")
    print(account.id)


@_with_db
async def accounts_topup(session: AsyncSession, args: argparse.Namespace) -> None:
    from imagegate.billing.ledger import credit
    from imagegate.billing.prices import from_micro
    from imagegate.db.models import Account

    if args.amount <= 0:
        raise SystemExit("a top-up must be positive")
    try:
        await credit(session, args.id, args.amount)
    except LookupError:
        raise SystemExit(f"no account {args.id!r}") from None
    await audit.record(session, audit.cli_actor(), "account.topup", f"account:{args.id}",
                       {"amount": from_micro(args.amount)})
    balance = await session.scalar(select(Account.balance).where(Account.id == args.id))
    print(f"added {from_micro(args.amount)}; balance: {from_micro(balance or 0)}")


async def accounts_show(settings: Settings, args: argparse.Namespace) -> None:
    from imagegate.billing.ledger import Ledger
    from imagegate.billing.prices import from_micro

    async with _sessions(settings) as sessions:
        st = await Ledger(sessions).statement(args.id)
    if st is None:
        raise SystemExit(f"no account {args.id!r}")
    print(f"account: {st.account_id}")
    print(f"name: {st.name}")
    print(f"unlimited: {'yes' if st.unlimited else 'no'}")
    print(f"balance: {from_micro(st.balance)}")
    print(f"held: {from_micro(st.held)} in {st.open_holds} open hold(s)")
    print(f"ledger sum: {from_micro(st.ledger_sum)} ({'matches the balance' if st.consistent else 'MISMATCH'})")
    if not st.consistent:
        raise SystemExit(1)


@_with_db
async def accounts_list(session: AsyncSession, args: argparse.Namespace) -> None:
    from imagegate.billing.prices import from_micro

    print_table(["id", "name", "balance", "held", "unlimited"],
                [[a.id, a.name, from_micro(a.balance), from_micro(a.held), "yes" if a.unlimited else "no"]
                 for a in await list_accounts(session)])


async def served_models(settings: Settings) -> list[str]:
    """The public model names ``serve`` would answer for: the configuration's channels and the
    database's."""
    return sorted(set((await build_router(settings)).models()) | await stored_models(settings))


async def keys_create(settings: Settings, args: argparse.Namespace) -> None:
    """Refuses an allow-list naming a model this gateway does not serve (a typo would make a key
    that can never use it), then creates the key."""
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models is not None else None
    if models is not None:
        served = await served_models(settings)
        unknown = sorted({m for m in models if m not in served})
        if unknown:
            raise SystemExit(f"imagegate: --models: not served here: {', '.join(unknown)}; "
                             f"this gateway serves: {', '.join(served)}")
    async with _transaction(settings) as session:
        try:
            new = await create_key(session, name=args.name, models=models, account_id=args.account, rpm=args.rpm,
                                   expires_at=args.expires, owner=args.owner)
        except (LookupError, ValueError) as exc:
            raise SystemExit(str(exc).strip("'\"")) from None
        await audit.record(session, audit.cli_actor(), "key.create", f"key:{new.id}",
                           {"name": args.name, "account_id": new.account_id, "models": models, "rpm": args.rpm,
                            "owner": new.owner})
    print(f"key id: {new.id}")
    print(f"account: {new.account_id}")
    print(f"expires: {when(args.expires) if args.expires else 'never'}")
    print(f"owner: {'yes (manages the account keys)' if new.owner else 'no'}")
    print(f"webhook secret: {new.webhook_secret}")
    print(new.key)


@_with_db
async def keys_list(session: AsyncSession, args: argparse.Namespace) -> None:
    now = time.time()
    rows = []
    for k in await list_keys(session):
        status = "revoked" if k.revoked_at else "expired" if k.expires_at and k.expires_at <= now else "active"
        rows.append([k.id, k.prefix + "…", k.account_id, status, "yes" if k.owner else "no", k.rpm or "-",
                     when(k.expires_at) if k.expires_at else "never", k.name,
                     ",".join(k.models) if k.models is not None else "*"])
    print_table(["id", "prefix", "account", "status", "owner", "rpm", "expires", "name", "models"], rows)


@_with_db
async def keys_revoke(session: AsyncSession, args: argparse.Namespace) -> None:
    key = await find_key(session, args.key)
    if key is None:
        raise SystemExit(f"no key matches {args.key!r}")
    await revoke_key(session, key)
    await audit.record(session, audit.cli_actor(), "key.revoke", f"key:{key.id}", {"prefix": key.prefix})
    print(f"revoked {key.id} ({key.prefix}…)")


@_with_db
async def webhooks_list(session: AsyncSession, args: argparse.Namespace) -> None:
    from imagegate.db.models import WebhookEndpoint

    rows = (await session.execute(select(WebhookEndpoint).where(WebhookEndpoint.consecutive_failures > 0)
                                  .order_by(WebhookEndpoint.url))).scalars()
    print_table(["url", "failures in a row", "paused since", "last error"],
                [[e.url, e.consecutive_failures, when(e.paused_at), e.last_error[:80]] for e in rows])


async def webhooks_resume(settings: Settings, args: argparse.Namespace) -> None:
    from imagegate.tasks.webhooks import resume_endpoint

    async with _sessions(settings) as sessions:
        try:
            due = await resume_endpoint(sessions, args.url)
        except LookupError as exc:
            raise SystemExit(f"imagegate: {exc}") from None
        async with sessions.begin() as session:
            await audit.record(session, audit.cli_actor(), "webhook.resume", f"webhook:{args.url}",
                               {"pending_deliveries": due})
    print(f"resumed {args.url}: {due} pending deliveries are sent now")


async def webhooks_retry(settings: Settings, args: argparse.Namespace) -> None:
    from imagegate.tasks.webhooks import retry_delivery

    async with _sessions(settings) as sessions:
        try:
            d = await retry_delivery(sessions, args.id)
        except (LookupError, ValueError) as exc:
            raise SystemExit(f"imagegate: {exc}") from None
        async with sessions.begin() as session:
            await audit.record(session, audit.cli_actor(), "webhook.retry", f"webhook_delivery:{d.id}",
                               {"task_id": d.task_id, "url": d.url})
    print(f"delivery {d.id} of task {d.task_id} is sent again now (attempt {d.attempts + 1})")


async def migrate(settings: Settings, args: argparse.Namespace) -> None:
    from imagegate.db.migrate import upgrade

    await asyncio.to_thread(upgrade, settings.database_url)
    print("database is up to date")


async def build_router(settings: Settings) -> Router:
    """Every channel's adapter built once, as the server will (its HTTP session already closed:
    for checks and model names only)."""
    from imagegate.net import make_session
    from imagegate.routing import router_for

    http = make_session()
    try:
        return router_for(settings, http, os.environ)
    finally:
        await http.close()


def check_channels(settings: Settings) -> None:
    """An unknown provider or a bad channel option stops ``serve`` here with a message naming the
    key, before any worker starts."""
    asyncio.run(build_router(settings))


def serve(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from imagegate.db.migrate import upgrade
    from imagegate.storage import open_store

    check_channels(settings)
    upgrade(settings.database_url)
    try:  # creates the directory; checks an s3:// URL
        open_store(settings.storage_url, public_url=settings.public_url, secret=b"-", storage=settings.storage)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.config:  # worker processes load the same file
        os.environ["IMAGEGATE_CONFIG"] = os.path.abspath(args.config)
    if "public_url" not in settings.model_fields_set:
        # Image URLs must point where this server listens; behind a proxy, set public_url.
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
        settings.public_url = f"http://{host}:{args.port}"
        os.environ["IMAGEGATE_PUBLIC_URL"] = settings.public_url
    print(f"imagegate listening on http://{args.host}:{args.port} (public URL {settings.public_url})",
          flush=True)
    from imagegate.metrics import prepare_multiprocess_dir

    metrics_dir = prepare_multiprocess_dir(args.workers)  # --workers N: the workers' metric files, fresh
    uvicorn.run("imagegate.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level, access_log=args.access_log,
                loop="auto", http="auto", timeout_graceful_shutdown=10)
    if metrics_dir is not None:
        shutil.rmtree(metrics_dir, ignore_errors=True)


CONFIG_HELP = "YAML config file (else $IMAGEGATE_CONFIG, else ./imagegate.yaml)"


def parser() -> argparse.ArgumentParser:
    """``--config`` is accepted before the subcommand and after it, by every subcommand (the one
    after it wins); all of them read the same file ``serve`` reads."""
    p = argparse.ArgumentParser(prog="imagegate", description="Image-generation API gateway.")
    p.add_argument("--version", action="version", version=f"imagegate {version()}")
    p.add_argument("--config", help=CONFIG_HELP)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", parents=[common], help="migrate the database, then serve HTTP")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--log-level", default="info")
    s.add_argument("--access-log", action="store_true", help="log every request (costs throughput)")
    s.set_defaults(sync_handler=serve)

    sub.add_parser("migrate", parents=[common], help="create or migrate the database").set_defaults(handler=migrate)

    accounts = sub.add_parser("accounts", help="accounts and balances").add_subparsers(
        dest="accounts_command", required=True)
    ac = accounts.add_parser("create", parents=[common], help="create an account; prints its id as the last line")
    ac.add_argument("--name", required=True)
    ac.add_argument("--balance", type=_amount, default=0, help="opening balance in currency units, e.g. 12.50")
    ac.add_argument("--unlimited", action="store_true", help="never billed (no holds, no ledger)")
    ac.set_defaults(handler=accounts_create)
    accounts.add_parser("list", parents=[common], help="accounts with their balance and open holds").set_defaults(
        handler=accounts_list)
    at = accounts.add_parser("topup", parents=[common], help="add money to an account")
    at.add_argument("id")
    at.add_argument("amount", type=_amount, help="in currency units, e.g. 12.50")
    at.set_defaults(handler=accounts_topup)
    ash = accounts.add_parser("show", parents=[common], help="balance, open holds and the ledger check of an account")
    ash.add_argument("id")
    ash.set_defaults(handler=accounts_show)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    kc = keys.add_parser("create", parents=[common], help="create a key; prints it as the last line")
    kc.add_argument("--name", required=True)
    kc.add_argument("--models", help="comma-separated public model names this key may use (served ones only)")
    kc.add_argument("--account", help="account id (default: a new unlimited account)")
    kc.add_argument("--rpm", type=int, help="requests per minute limit")
    kc.add_argument("--expires", type=_expiry, help="expiry: a duration from now (30d, 12h) or an ISO date")
    kc.add_argument("--owner", action=argparse.BooleanOptionalAction, default=None,
                    help="the key manages its account's keys (/v1/keys, the console); "
                         "default: only a key given a new account")
    kc.set_defaults(handler=keys_create)
    keys.add_parser("list", parents=[common], help="list keys").set_defaults(handler=keys_list)
    kr = keys.add_parser("revoke", parents=[common], help="revoke a key by its value or id")
    kr.add_argument("key")
    kr.set_defaults(handler=keys_revoke)

    webhooks = sub.add_parser("webhooks", help="webhook URLs that fail").add_subparsers(
        dest="webhooks_command", required=True)
    webhooks.add_parser("list", parents=[common], help="URLs with failed attempts in a row, paused or not"
                        ).set_defaults(handler=webhooks_list)
    wr = webhooks.add_parser("resume", parents=[common], help="resume a paused URL: its pending deliveries go now")
    wr.add_argument("url")
    wr.set_defaults(handler=webhooks_resume)
    wt = webhooks.add_parser("retry", parents=[common], help="send one delivery (id: msg_…) again now")
    wt.add_argument("id")
    wt.set_defaults(handler=webhooks_retry)

    from imagegate.tasks.commands import add_commands as add_task_commands

    add_task_commands(sub, parents=[common])
    add_client_commands(sub, parents=[common])
    add_channel_commands(sub, parents=[common])
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        settings = load_settings(getattr(args, "config", None))
        sync_handler: Any = getattr(args, "sync_handler", None)
        if sync_handler is not None:
            sync_handler(settings, args)
        else:
            asyncio.run(args.handler(settings, args))
    except ConfigError as exc:
        print(f"imagegate: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

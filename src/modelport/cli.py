"""The `modelport` command line: `serve`, `users create | show | list | topup | disable | enable |
password`,
`keys create | list | revoke`, `codes create | list`, and `usage`.

Builds the settings once (a bad setting exits 2 with the reason), migrates the database
before any store use, and prints secrets only where a human asked for one: the first-start
admin key, `keys create`, whose secret is alone on the last line of stdout for scripts, and
`codes create`, whose codes are the last lines, one a line.
A bad value is one error line and a non-zero exit, never a traceback: numeric options are
checked against what they may hold (a port, a rate, a key id) as they are parsed (exit 2,
argparse's usage line first), amounts and times by the services (exit 1).

`serve` does its database work (migration, first admin key) in a child process: this process
becomes granian's supervisor and stays for the server's lifetime, so it must not keep
SQLAlchemy and Alembic (25 MB) that only that work needs. Hence the imports of the store below
are made where they are used.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from modelport.core.catalog import ConfigError
from modelport.core.errors import InvalidRequest, ModelportError, clip
from modelport.services import accounts, codes
from modelport.services.catalog import load_catalog
from modelport.services.console import ConsoleAccounts
from modelport.services.keys import ensure_admin_key, revoke_key
from modelport.settings import Settings, load_settings
from modelport.store import migrate
from modelport.store.base import ApiKeyRecord, StoreError

if TYPE_CHECKING:
    from modelport.store.sql import SqlStore

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _whole(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high`, refused with one clear line
    (the digits are counted before converting: int() of 5,000 digits raises)."""

    def whole(text: str) -> int:
        digits = text.removeprefix("-")
        if digits.isascii() and digits.isdigit() and len(digits) <= len(str(high)):
            value = int(text)
            if low <= value <= high:
                return value
        raise argparse.ArgumentTypeError(
            f"must be a whole number from {low} to {high}, not {clip(text)!r}"
        )

    return whole


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelport",
        description="A self-hosted LLM API platform (OpenAI- and Anthropic-compatible).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the API server")
    serve.add_argument("--host", help="address to listen on (MODELPORT_HOST)")
    serve.add_argument("--port", type=_whole(1, 65535), help="port to listen on (MODELPORT_PORT)")

    keys = commands.add_parser("keys", help="issue, list and revoke API keys")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="issue a key; its secret is printed once")
    create.add_argument("--name", required=True, help="a label for the key, e.g. who uses it")
    create.add_argument(
        "--user", help='the user (account) it spends from; default "default" or "admin"'
    )
    create.add_argument(
        "--admin", action="store_true", help='a key of the "admin" account (when no --user)'
    )
    create.add_argument("--rpm", type=_whole(1, accounts.MAX_RATE), help="requests per minute")
    create.add_argument(
        "--tpm", type=_whole(1, accounts.MAX_RATE), help="tokens (prompt + completion) per minute"
    )
    create.add_argument("--limit", metavar="CNY", help="the key's lifetime spending limit")
    create.add_argument("--models", help="comma-separated model ids the key may use")
    create.add_argument("--expires", metavar="ISO_TIME", help="when the key stops working")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    revoke = actions.add_parser("revoke", help="revoke one key")
    revoke.add_argument("key", metavar="ID_OR_NAME_OR_PREFIX", help="which key to revoke")

    users = commands.add_parser("users", help="accounts and their prepaid CNY balances")
    user_actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    new_user = user_actions.add_parser("create", help="create a user (an account)")
    new_user.add_argument("name")
    new_user.add_argument("--balance", default="0", metavar="CNY", help="opening balance")
    new_user.add_argument("--admin", action="store_true", help="an admin account")
    show = user_actions.add_parser("show", help="one user, with the balance, as JSON")
    show.add_argument("name")
    user_actions.add_parser("list", help="every user, as JSON")
    topup = user_actions.add_parser("topup", help="add to (or, negative, adjust) a balance")
    topup.add_argument("name")
    topup.add_argument("amount", metavar="AMOUNT", help="CNY, e.g. 50 or 12.5 (or -3)")
    topup.add_argument("--reason", required=True, help="recorded in the ledger")
    for verb, text in (
        ("disable", "disable a user: their keys stop working, their console sessions end"),
        ("enable", "enable a disabled user again"),
    ):
        user_actions.add_parser(verb, help=text).add_argument("name")
    password = user_actions.add_parser(
        "password", help="set a user's console password (read from standard input)"
    )
    password.add_argument("name")

    code_parser = commands.add_parser("codes", help="top-up codes: make a batch, list them")
    code_actions = code_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    new_codes = code_actions.add_parser(
        "create", help="a batch of codes worth an amount each; they are printed once"
    )
    new_codes.add_argument(
        "--count", type=_whole(1, codes.MAX_COUNT), required=True, help="how many codes"
    )
    new_codes.add_argument("--amount", metavar="CNY", required=True, help="what each is worth")
    new_codes.add_argument("--expires", metavar="ISO_TIME", help="when the codes stop working")
    new_codes.add_argument("--batch", metavar="NAME", help="a label (default: the time)")
    new_codes.add_argument("--json", action="store_true", help="print one JSON object")
    list_codes = code_actions.add_parser(
        "list", help="codes and their state, as JSON (never the codes themselves)"
    )
    list_codes.add_argument("--batch", metavar="NAME", help="one batch only")

    usage = commands.add_parser("usage", help="usage totals by day, model or key, as JSON")
    usage.add_argument("--by", choices=("day", "model", "key"), default="day")
    usage.add_argument("--user", help="one user only")
    usage.add_argument(
        "--key", type=_whole(0, accounts.KEY_ID_MAX), metavar="ID", help="one key only"
    )
    usage.add_argument("--since", metavar="ISO_TIME")
    usage.add_argument("--until", metavar="ISO_TIME")
    return parser


def _timestamp(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%SZ")


def _key_json(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "prefix": record.prefix,
        "role": record.role,
        "created_at": record.created_at.isoformat(),
        "revoked_at": None if record.revoked_at is None else record.revoked_at.isoformat(),
        "last_used_at": None if record.last_used_at is None else record.last_used_at.isoformat(),
    }


def _print_table(records: list[ApiKeyRecord]) -> None:
    header = ("id", "name", "prefix", "role", "created", "revoked")
    rows = [header] + [
        (
            str(record.id),
            record.name,
            record.prefix + "...",
            record.role,
            _timestamp(record.created_at),
            _timestamp(record.revoked_at),
        )
        for record in records
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _time(value: str | None, option: str) -> datetime | None:
    """An ISO time option, refused when it is not a time the store can hold as UTC
    (9999-12-31T23:59-14:00 is past the last one)."""
    if value is None:
        return None
    parsed = accounts.parse_time(value, option)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(f"{option} is out of range: {clip(value)!r}") from None


def _print_json(value: Any) -> None:
    print(msgspec.json.format(msgspec.json.encode(value)).decode())


def _users(args: argparse.Namespace, store: SqlStore) -> int:
    if args.action == "create":
        account = accounts.create_user(store, args.name, balance=args.balance, admin=args.admin)
        _print_json(accounts.account_json(account))
    elif args.action == "show":
        account = accounts.get_user(store, args.name)
        keys = [accounts.grant_json(g) for g in store.list_grants(account_id=account.id)]
        _print_json({**accounts.account_json(account), "keys": keys})
    elif args.action == "list":
        _print_json([accounts.account_json(account) for account in store.list_accounts()])
    elif args.action in ("disable", "enable"):
        account = accounts.set_disabled(store, args.name, args.action == "disable")
        if account.disabled_at is not None:
            store.revoke_sessions(account.id, account.disabled_at)
        _print_json(accounts.account_json(account))
    elif args.action == "password":
        account = accounts.get_user(store, args.name)
        secret = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass()
        asyncio.run(ConsoleAccounts(store).set_password(account, secret))
        print(f"the console password of {account.name!r} is set; its sessions ended")
    else:
        account = accounts.top_up(store, args.name, args.amount, reason=args.reason)
        _print_json(accounts.account_json(account))
    return EXIT_OK


def _codes(args: argparse.Namespace, store: SqlStore) -> int:
    if args.action == "list":
        now = datetime.now(UTC)
        _print_json([codes.code_json(record, now) for record in store.list_codes(batch=args.batch)])
        return EXIT_OK
    created = codes.create_codes(
        store,
        args.count,
        args.amount,
        expires_at=_time(args.expires, "--expires"),
        batch=args.batch,
        created_by="cli",
    )
    if args.json:
        print(msgspec.json.encode(codes.created_json(created)).decode())
        return EXIT_OK
    first = created[0][0]
    expiry = "" if first.expires_at is None else f", until {first.expires_at.isoformat()}"
    print(
        f"Created {len(created)} code(s) of {accounts.cny(first.amount_nano)} CNY in batch "
        f"{first.batch!r}{expiry}. They are shown once, store them now:"
    )
    for _record, code in created:
        print(code)
    return EXIT_OK


def _usage(args: argparse.Namespace, store: SqlStore) -> int:
    account_id = None if args.user is None else accounts.get_user(store, args.user).id
    totals = store.usage_totals(
        by=args.by,
        account_id=account_id,
        key_id=args.key,
        since=_time(args.since, "--since"),
        until=_time(args.until, "--until"),
    )
    _print_json({"by": args.by, "data": [accounts.total_json(total) for total in totals]})
    return EXIT_OK


def _keys(args: argparse.Namespace, store: SqlStore, settings: Settings) -> int:
    if args.action == "create":
        models = None if args.models is None else tuple(args.models.split(","))
        record, secret = accounts.create_account_key(
            store,
            args.name,
            user=args.user,
            admin=args.admin,
            rpm=args.rpm,
            tpm=args.tpm,
            limit=args.limit,
            models=models,
            expires_at=_time(args.expires, "--expires"),
            known_models=frozenset(card.id for card in load_catalog(settings).models),
        )
        if args.json:
            print(msgspec.json.encode({**_key_json(record), "secret": secret}).decode())
        else:
            print(
                f"Created {record.role} key {record.id} {record.name!r} "
                f"({record.prefix}...). Its secret is shown once, store it now:"
            )
            print(secret)
        return EXIT_OK
    if args.action == "list":
        records = store.list_keys(include_revoked=args.all)
        if args.json:
            print(msgspec.json.encode([_key_json(record) for record in records]).decode())
        elif records:
            _print_table(records)
        else:
            print("No keys." if args.all else "No active keys (--all shows revoked ones).")
        return EXIT_OK
    revoked = revoke_key(store, args.key)
    print(f"Revoked key {revoked.id} {revoked.name!r} ({revoked.prefix}...).")
    if settings.redis_url:
        _announce_revocation(settings, revoked.secret_hash)
    return EXIT_OK


def _announce_revocation(settings: Settings, secret_hash: str) -> None:
    """Tell running replicas at once (they otherwise trust their key cache for its TTL)."""
    import asyncio

    from modelport.store.redis import RedisKeyEvents

    assert settings.redis_url is not None

    async def publish() -> None:
        events = RedisKeyEvents(settings.redis_url or "", channel=f"{settings.redis_prefix}:keys")
        try:
            await events.publish(secret_hash)
        finally:
            await events.aclose()

    asyncio.run(publish())


# (the admin key's secret or None, an error message or None)
Prepared = tuple[str | None, str | None]
_PREPARE = "from modelport.cli import prepare_database_child; prepare_database_child()"


def prepare_database_child() -> None:
    """The child process of `serve`: the settings as JSON on stdin, `Prepared` as JSON on
    stdout. Anything else the work prints goes to stderr."""
    settings = msgspec.json.decode(sys.stdin.buffer.read(), type=Settings)
    out, sys.stdout = sys.stdout, sys.stderr
    try:
        prepared = _prepare_database(settings)
    finally:
        sys.stdout = out
    sys.stdout.buffer.write(msgspec.json.encode(prepared))


def _prepare_database(settings: Settings) -> Prepared:
    """Migrate the database and make the first admin key."""
    from modelport.store.sql import SqlStore

    try:
        url = settings.resolved_database_url
        migrate(url)
        with SqlStore(url) as store:
            return ensure_admin_key(store), None
    except (StoreError, ModelportError) as error:
        return None, str(error)


def _serve(settings: Settings) -> int:
    # A new interpreter, not a fork: nothing it imports comes back, and no multiprocessing
    # helper process (spawn's resource tracker) stays behind for the server's lifetime.
    child = subprocess.run(
        [sys.executable, "-c", _PREPARE],
        input=msgspec.json.encode(settings),
        stdout=subprocess.PIPE,
        check=False,
    )
    if child.returncode != 0:  # its traceback went to stderr
        print("modelport: error: preparing the database failed", file=sys.stderr)
        return EXIT_FAILED
    secret, error = msgspec.json.decode(child.stdout, type=Prepared)
    if error is not None:
        print(f"modelport: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    if secret is not None:
        print("Admin API key (shown once, store it now):")
        print(secret)
        print()
        sys.stdout.flush()
    # llama.cpp's OpenMP threads otherwise spin on idle cores between requests.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from modelport.http.server import run_server

    run_server(settings)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        # The server's workers build their settings from the environment, so flags go there.
        if args.host is not None:
            os.environ["MODELPORT_HOST"] = args.host
        if args.port is not None:
            os.environ["MODELPORT_PORT"] = str(args.port)
    try:
        settings = load_settings()
        if args.command == "serve":
            # A broken catalog entry must stop `serve` here, with a clear message, not later
            # in a server worker's start-up.
            load_catalog(settings)
    except ConfigError as error:
        print(f"modelport: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "serve":
        return _serve(settings)
    from modelport.store.sql import SqlStore

    try:
        url = settings.resolved_database_url
        migrate(url)
        store = SqlStore(url)
        try:
            if args.command == "users":
                return _users(args, store)
            if args.command == "usage":
                return _usage(args, store)
            if args.command == "codes":
                return _codes(args, store)
            return _keys(args, store, settings)
        finally:
            store.close()
    except (StoreError, ModelportError) as error:
        print(f"modelport: error: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

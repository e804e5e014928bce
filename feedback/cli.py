"""`qtune feedback`: export the votes and ratings the web UI collected, and print the
leaderboard computed from them."""

from __future__ import annotations

import argparse
from pathlib import Path

from qtune.feedback.export import EXPORT_FILES


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_feedback(subparsers)
    _register_users(subparsers)


def _register_users(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "users", help="manage the web UI's accounts (each sees only their own History)",
        description=(
            "Accounts of the web UI, stored in the feedback database with scrypt-hashed "
            "passwords. While any account exists, `qtune ui` and `qtune up` ask for a login; "
            "each person sees only their own conversations, and admins also see the "
            "leaderboard (docs/security.md)."
        ),
    )
    commands = parser.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = commands.add_parser("add", help="create an account (asks for the password)")
    add.add_argument("name", help="the login name")
    add.add_argument("--admin", action="store_true", help="may see the leaderboard")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input "
                          "(scripts) instead of asking twice")
    remove = commands.add_parser("remove", help="delete an account (its conversations stay)")
    remove.add_argument("name", help="the account to delete")
    listing = commands.add_parser("list", help="print every account and its role")
    for command in (add, remove, listing):
        command.add_argument("--db", type=Path, default=None,
                             help="feedback database (default $QTUNE_DB or "
                                  "~/.cache/qtune/feedback.db)")
    add.set_defaults(func=_users_add)
    remove.set_defaults(func=_users_remove)
    listing.set_defaults(func=_users_list)


def _accounts(args: argparse.Namespace):
    from qtune.feedback.accounts import Accounts
    from qtune.feedback.store import FeedbackStore

    return Accounts(FeedbackStore(args.db))


def _read_new_password(from_stdin: bool) -> str:
    import getpass
    import sys

    from qtune.errors import QtuneError

    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise QtuneError("the two passwords differ; nothing was stored")
    return first


def _users_add(args: argparse.Namespace) -> int:
    from qtune.errors import QtuneError

    password = _read_new_password(args.password_stdin)
    try:
        account = _accounts(args).add(args.name, password, "admin" if args.admin else "user")
    except ValueError as error:
        raise QtuneError(str(error)) from error
    print(f"added {account.role} {account.name!r}")
    return 0


def _users_remove(args: argparse.Namespace) -> int:
    from qtune.errors import QtuneError

    try:
        _accounts(args).remove(args.name)
    except ValueError as error:
        raise QtuneError(str(error)) from error
    print(f"removed {args.name!r}")
    return 0


def _users_list(args: argparse.Namespace) -> int:
    accounts = _accounts(args).list()
    if not accounts:
        print("no accounts: the web UI runs without a login (single local user)")
    for account in accounts:
        print(f"{account.name}\t{account.role}\t{account.created_at}")
    return 0


def _register_feedback(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "feedback", help="export the votes and ratings collected by the web UI",
        description="Work with the feedback database written by the web UI.",
    )
    commands = parser.add_subparsers(dest="feedback_command", metavar="ACTION", required=True)
    export = commands.add_parser(
        "export", help="write votes, ratings, conversations and DPO preference pairs as JSONL",
        description="Write into DIR: " + "; ".join(
            f"{name}.jsonl, {what}" for name, what in EXPORT_FILES.items()) + ".",
    )
    export.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder to write the .jsonl files into (created if missing)")
    export.add_argument("--db", type=Path, default=None,
                        help="feedback database (default $QTUNE_DB or "
                             "~/.cache/qtune/feedback.db)")
    export.set_defaults(func=_export)

    summary = commands.add_parser("leaderboard",
                                  help="print the ratings per assistant computed from the votes")
    summary.add_argument("--db", type=Path, default=None, help="feedback database")
    summary.add_argument("--rounds", type=int, default=200, help="bootstrap resamples")
    summary.set_defaults(func=_print_leaderboard)


def _export(args: argparse.Namespace) -> int:
    from qtune.feedback.export import export
    from qtune.feedback.store import FeedbackStore

    store = FeedbackStore(args.db)
    counts = export(store, args.out)
    for name, count in counts.items():
        print(f"{args.out / (name + '.jsonl')}: {count} rows")
    return 0


def _print_leaderboard(args: argparse.Namespace) -> int:
    from qtune.feedback.leaderboard import blind_votes, leaderboard
    from qtune.feedback.store import FeedbackStore

    votes = blind_votes(FeedbackStore(args.db).votes())
    for assistant in sorted({v["assistant"] for v in votes}):
        print(f"{assistant}:")
        standings = leaderboard([v for v in votes if v["assistant"] == assistant], args.rounds)
        for s in standings:
            print(f"  {s.model:28s} {s.rating:7.1f}  [{s.ci_low:.0f}, {s.ci_high:.0f}]  "
                  f"win rate {100 * s.win_rate:5.1f}%  votes {s.votes}")
    if not votes:
        print("no votes yet")
    return 0

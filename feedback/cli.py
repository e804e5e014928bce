"""`qtune feedback`: export the votes and ratings the web UI collected, and print the
leaderboard computed from them."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_feedback(subparsers)


def _register_feedback(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "feedback", help="export the votes and ratings collected by the web UI",
        description="Work with the feedback database written by the web UI.",
    )
    commands = parser.add_subparsers(dest="feedback_command", metavar="ACTION", required=True)
    export = commands.add_parser(
        "export", help="write votes, ratings, conversations and DPO preference pairs as JSONL",
        description=(
            "Write votes.jsonl, ratings.jsonl, conversations.jsonl (with their messages) and "
            "preferences.jsonl (prompt, chosen, rejected from every decisive vote; ready for "
            "DPO training) into DIR."
        ),
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

"""`qtune ui`, `qtune up` and `qtune feedback`: the web UI, the whole stack, and its data."""

from __future__ import annotations

import argparse
import logging
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_ui(subparsers)
    _register_up(subparsers)
    _register_feedback(subparsers)


def _add_ui_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the web UI binds (default 127.0.0.1, this machine only; "
                             "use 0.0.0.0 to share it, together with --auth)")
    parser.add_argument("--port", type=int, default=None,
                        help="port of the web UI (default 7860 or $QTUNE_UI_PORT)")
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD",
                        help="require this login (strongly advised when --host is not "
                             "127.0.0.1; a warning is printed otherwise)")
    parser.add_argument("--db", type=Path, default=None,
                        help="feedback database (default $QTUNE_DB or "
                             "~/.cache/qtune/feedback.db)")


def _register_ui(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ui", help="web UI (chat, compare and vote, leaderboard) for a running endpoint",
        description=(
            "Start the Gradio web UI against any OpenAI-compatible endpoint (vLLM's by default). "
            "The models are read from the endpoint's /v1/models; votes and ratings go to the "
            "SQLite feedback database."
        ),
    )
    parser.add_argument("--api-base", default=None,
                        help="endpoint URL ending in /v1 (default $QTUNE_API_BASE or "
                             "http://127.0.0.1:8000/v1)")
    parser.add_argument("--api-key", default=None,
                        help="API key of the endpoint (default $QTUNE_API_KEY)")
    _add_ui_options(parser)
    parser.set_defaults(func=_ui)


def _register_up(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "up", help="start the vLLM server and the web UI together (Ctrl-C stops both)",
        description=(
            "Start vLLM with the base model and every adapter in the adapters folder, wait "
            "until it is healthy, then start the web UI against it. Ctrl-C or SIGTERM stops "
            "both; if either one dies, the other is stopped too."
        ),
    )
    _add_ui_options(parser)
    parser.add_argument("--model", default=None,
                        help="base model folder or Hugging Face id (default: the embedded "
                             "SmolLM2-135M-Instruct)")
    parser.add_argument("--api-host", default="127.0.0.1",
                        help="address the vLLM API binds (default 127.0.0.1, this machine "
                             "only; 0.0.0.0 opens it: set --api-key)")
    parser.add_argument("--api-port", type=int, default=None,
                        help="port of the vLLM API (default 8000 or $QTUNE_PORT)")
    parser.add_argument("--api-key", default=None,
                        help="protect the API with this key (default $QTUNE_API_KEY)")
    parser.add_argument("--adapters", type=Path, default=None, metavar="DIR",
                        help="serve every adapter folder in DIR (default: the shipped "
                             "adapters/ or $QTUNE_ADAPTERS_DIR)")
    parser.add_argument("--startup-timeout", type=float, default=600.0,
                        help="seconds to wait for vLLM to become healthy")
    parser.set_defaults(func=_up)


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


def _make_ui(args: argparse.Namespace, api_base: str | None, api_key: str | None):
    from qtune.data.feedback import FeedbackStore
    from qtune.ui.app import QtuneUI

    return QtuneUI(api_base=api_base, api_key=api_key, store=FeedbackStore(args.db))


def _ui(args: argparse.Namespace) -> int:
    from qtune.ui.app import launch, parse_auth

    auth = parse_auth(args.auth)
    ui = _make_ui(args, args.api_base, args.api_key)
    print(f"qtune ui: endpoint {ui.endpoint.api_base}, feedback {ui.store.path}")
    launch(ui, host=args.host, port=args.port, auth=auth, block=True)
    return 0


def _up(args: argparse.Namespace) -> int:
    from qtune.serve.server import ServeConfig, VLLMServer
    from qtune.ui.app import launch, parse_auth

    from qtune.config import settings

    auth = parse_auth(args.auth)
    config = ServeConfig(model=args.model, host=args.api_host,
                         port=args.api_port or settings().api_port,
                         startup_timeout=args.startup_timeout)
    if args.api_key:
        config.api_key = args.api_key
    if args.adapters is not None:
        config.adapters_dir = args.adapters
    server = VLLMServer(config)
    # SIGTERM (docker stop, systemd) takes the same path as Ctrl-C: stop both.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    demo = None
    try:
        print(f"qtune up: starting vLLM ({', '.join(server.served_models)}) …")
        server.start(wait=True)
        ui = _make_ui(args, server.api_base, config.api_key)
        demo = launch(ui, host=args.host, port=args.port, auth=auth, block=False)
        print(f"qtune up: UI at http://{args.host}:{args.port or settings().ui_port} "
              f"(API {server.api_base}); Ctrl-C stops both")
        while server.running and _ui_alive(demo):
            time.sleep(1.0)
        if not server.running:
            print(f"qtune up: vLLM exited; stopping the UI. Last lines of its log:\n"
                  f"{server.log_tail()}")
        else:
            print("qtune up: the UI stopped; stopping vLLM")
        return 1
    except KeyboardInterrupt:
        print("\nqtune up: stopping the UI and vLLM")
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if demo is not None:
            demo.close()
        server.stop()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _ui_alive(demo) -> bool:
    server = getattr(demo, "server", None)
    thread = getattr(server, "thread", None)
    return thread is None or thread.is_alive()


def _export(args: argparse.Namespace) -> int:
    from qtune.data.feedback import FeedbackStore

    store = FeedbackStore(args.db)
    counts = store.export(args.out)
    for name, count in counts.items():
        print(f"{args.out / (name + '.jsonl')}: {count} rows")
    return 0


def _print_leaderboard(args: argparse.Namespace) -> int:
    from qtune.data.feedback import FeedbackStore
    from qtune.ui.leaderboard import leaderboard

    votes = FeedbackStore(args.db).votes()
    for assistant in sorted({v["assistant"] for v in votes}):
        print(f"{assistant}:")
        standings = leaderboard([v for v in votes if v["assistant"] == assistant], args.rounds)
        for s in standings:
            print(f"  {s.model:28s} {s.rating:7.1f}  [{s.ci_low:.0f}, {s.ci_high:.0f}]  "
                  f"win rate {100 * s.win_rate:5.1f}%  votes {s.votes}")
    if not votes:
        print("no votes yet")
    return 0

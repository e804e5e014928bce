"""`qtune ui` and `qtune up`: the web UI, and the whole stack (vLLM + the UI) at once."""

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


def _add_ui_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the web UI binds (default 127.0.0.1, this machine only; "
                             "use 0.0.0.0 to share it, together with --auth)")
    parser.add_argument("--port", type=int, default=None,
                        help="port of the web UI (default 7860 or $QTUNE_UI_PORT)")
    parser.add_argument("--auth-file", type=Path, default=None, metavar="PATH",
                        help="read USER:PASSWORD from the first line of PATH (default: "
                             "$QTUNE_UI_AUTH or the file $QTUNE_UI_AUTH_FILE names)")
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD",
                        help="require this login (strongly advised when --host is not "
                             "127.0.0.1; a warning is printed otherwise). Visible in `ps`: "
                             "prefer --auth-file or $QTUNE_UI_AUTH")
    parser.add_argument("--db", type=Path, default=None,
                        help="feedback database (default $QTUNE_DB or "
                             "~/.cache/qtune/feedback.db); its accounts (`qtune users`) "
                             "log in to the UI")
    parser.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDRESS",
                        help="a reverse proxy whose X-Forwarded-For names the real client "
                             "(repeatable; default none: the header is ignored, so no client "
                             "can pose as another for the login and rate limits)")


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
    from qtune.serve.cli import add_server_options

    add_server_options(parser, address_flags=("--api-host", "--api-port", "--api-key"))
    parser.set_defaults(func=_up)




def _make_ui(args: argparse.Namespace, api_base: str | None, api_key: str | None):
    from qtune.feedback.store import FeedbackStore
    from qtune.ui.app import QtuneUI

    return QtuneUI(api_base=api_base, api_key=api_key, store=FeedbackStore(args.db))


def _auth_text(args: argparse.Namespace) -> str | None:
    """The login from --auth, --auth-file or the environment (settings().ui_auth)."""
    from qtune.config import read_secret_file, settings

    if args.auth:
        return args.auth
    if args.auth_file:
        return read_secret_file(args.auth_file, "--auth-file")
    return settings().ui_auth


def _ui(args: argparse.Namespace) -> int:
    from qtune.ui.app import launch, parse_auth

    auth = parse_auth(_auth_text(args))
    ui = _make_ui(args, args.api_base, args.api_key)
    print(f"qtune ui: endpoint {ui.endpoint.api_base}, feedback {ui.store.path}")
    launch(ui, host=args.host, port=args.port, auth=auth, block=True,
           trusted_proxies=args.trusted_proxy)
    return 0


def _up(args: argparse.Namespace) -> int:
    from qtune.serve.cli import config_from_args
    from qtune.serve.server import VLLMServer
    from qtune.ui.app import launch, parse_auth

    from qtune.config import settings

    auth = parse_auth(_auth_text(args))
    config = config_from_args(args)
    server = VLLMServer(config)
    # SIGTERM (docker stop, systemd) takes the same path as Ctrl-C: stop both.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    demo = None
    try:
        print(f"qtune up: starting vLLM ({', '.join(server.served_models)}) …")
        server.start(wait=True)
        ui = _make_ui(args, server.api_base, config.api_key)
        demo = launch(ui, host=args.host, port=args.port, auth=auth, block=False,
                      trusted_proxies=args.trusted_proxy)
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





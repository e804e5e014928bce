"""`qtune serve` (vLLM with the adapters) and `qtune adapters` (runtime loading)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from qtune.config import read_secret_file, settings


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_serve(subparsers)
    _register_adapters(subparsers)


def _adapter_pair(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def _register_serve(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="start vLLM's OpenAI-compatible server with the base model and the adapters",
        description=(
            "Check every adapter, start vLLM's OpenAI-compatible server with the base model "
            "and each adapter as its own model name, wait until it is healthy, print the "
            "endpoint and block until Ctrl-C. Extra vLLM arguments go after `--`, e.g. "
            "`qtune serve -- --max-num-seqs 64` (see docs/serving.md)."
        ),
    )
    add_server_options(parser, address_flags=("--host", "--port", "--api-key"))
    parser.set_defaults(func=_serve)


def add_server_options(parser: argparse.ArgumentParser,
                       address_flags: tuple[str, str, str]) -> None:
    """The options of the vLLM server, shared by `qtune serve` and `qtune up` (which names
    the address flags --api-host/--api-port so they do not clash with the UI's). Defaults
    are ServeConfig's."""
    from qtune.serve.server import CRISIS_SCREEN_CHOICES, ServeConfig

    defaults = ServeConfig(adapters_dir=None)
    host, port, key = address_flags
    add = parser.add_argument
    add("--model", help="base model folder or Hugging Face id (default: the embedded "
        "SmolLM2-135M-Instruct)")
    add(host, dest="api_host", default=None, help="address the API binds (default "
        "$QTUNE_HOST or 127.0.0.1, this machine only; 0.0.0.0 opens it: set an API key)")
    add(port, dest="api_port", type=int, default=None,
        help="port of the API (default $QTUNE_PORT or 8000)")
    add(key, dest="api_key", default=None, help="clients must send this key as a Bearer token "
        "(visible in `ps`: prefer $QTUNE_API_KEY, $QTUNE_API_KEY_FILE or --api-key-file; "
        "default: those, or $VLLM_API_KEY; none: open)")
    add(f"{key}-file", dest="api_key_file", type=Path, default=None, metavar="PATH",
        help="read the API key from the first line of PATH")
    add("--adapters", type=Path, default=None, metavar="DIR",
        help="serve every adapter folder inside DIR under its folder name (default: "
        "$QTUNE_ADAPTERS_DIR or the repository's adapters/, unless --adapter is given)")
    add("--adapter", type=_adapter_pair, action="append", default=[], metavar="NAME=PATH",
        help="serve the adapter in PATH as model NAME (repeatable)")
    add("--no-adapters", action="store_true", help="serve the base model only")
    add("--skip-broken-adapters", action="store_true",
        help="start without adapters that fail the checks (warns) instead of refusing to start")
    add("--ignore-base-name", action="store_true",
        help="serve adapters whose config names another base model (when the served base is "
        "a renamed copy of it; the shapes are still checked)")
    add("--max-model-len", type=int, default=defaults.max_model_len,
        help=f"longest prompt + completion in tokens (default {defaults.max_model_len})")
    add("--kv-cache-gib", type=int, default=defaults.kv_cache_gib,
        help=f"CPU only: GiB of RAM for the KV cache (default {defaults.kv_cache_gib})")
    add("--cpu-threads-bind", default=defaults.cpu_threads_bind,
        help="CPU only: VLLM_CPU_OMP_THREADS_BIND, e.g. '0-6' (default auto: every core on "
        "machines of up to 4 cores, else all cores but one)")
    add("--allow-runtime-lora", action="store_true",
        help="allow `qtune adapters load` and `unload` on this server (development)")
    add("--max-lora-rank", type=int, default=None,
        help="override the --max-lora-rank computed from the adapters")
    add("--crisis-screen", choices=CRISIS_SCREEN_CHOICES, default=defaults.crisis_screen,
        help="whose chats the endpoint screens for a crisis, as the web UI does (resources "
        "first, unsafe answers replaced; docs/security.md): 'assistants' = adapters whose "
        "assistant sets crisis_screen (counselling), 'all' = every model, 'off' (default "
        "%(default)s)")
    add("--no-adapter-prompts", dest="adapter_prompts", action="store_false",
        help="send chat requests as they come; by default a request to an adapter without a "
        "system message gets the system prompt the adapter was trained with")
    add("--log-file", type=Path, default=None,
        help="where vLLM's output goes (default $QTUNE_HOME/logs/vllm-PORT.log)")
    add("--startup-timeout", type=float, default=defaults.startup_timeout,
        help=f"seconds to wait for the server to become healthy (default "
        f"{defaults.startup_timeout:g})")
    add("vllm_args", nargs="*", metavar="-- VLLM_ARGS",
        help="arguments passed to vLLM unchanged, after `--`")


def config_from_args(args: argparse.Namespace):
    """The ServeConfig of `qtune serve` and `qtune up` arguments (see add_server_options)."""
    from qtune.serve.server import ServeConfig

    if args.no_adapters:
        adapters_dir = None
    elif args.adapters is not None:
        adapters_dir = args.adapters
    else:
        adapters_dir = None if args.adapter else settings().adapters_dir
    config = ServeConfig(
        model=args.model,
        adapters=[] if args.no_adapters else list(args.adapter),
        adapters_dir=adapters_dir,
        skip_broken_adapters=args.skip_broken_adapters,
        ignore_base_name=args.ignore_base_name,
        max_model_len=args.max_model_len,
        kv_cache_gib=args.kv_cache_gib,
        cpu_threads_bind=args.cpu_threads_bind,
        allow_runtime_lora=args.allow_runtime_lora,
        max_lora_rank=args.max_lora_rank,
        extra_args=list(args.vllm_args),
        log_path=args.log_file,
        startup_timeout=args.startup_timeout,
        crisis_screen=args.crisis_screen,
        adapter_prompts=args.adapter_prompts,
    )
    # Given flags win over ServeConfig's defaults (which read QTUNE_HOST/PORT/API_KEY).
    for flag, attribute in (("api_host", "host"), ("api_port", "port"), ("api_key", "api_key")):
        if getattr(args, flag):
            setattr(config, attribute, getattr(args, flag))
    if args.api_key_file:
        config.api_key = read_secret_file(args.api_key_file, "--api-key-file")
    return config


def _serve(args: argparse.Namespace) -> int:
    from qtune.serve.server import VLLMServer

    config = config_from_args(args)
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        print(f"warning: serving on {config.host} without an API key: anyone who can reach "
              "this machine can use the model. Set --api-key or QTUNE_API_KEY.", file=sys.stderr)
    server = VLLMServer(config)
    for problem in server.skipped:
        print(f"warning: skipped broken adapter: {problem}", file=sys.stderr)
    print(f"starting vLLM (log: {server.log_path}) ...", flush=True)
    stop = threading.Event()
    # SIGTERM (docker stop, systemd) ends the server like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        server.start()
        print(f"OpenAI-compatible endpoint: {server.api_base}")
        print(f"models: {', '.join(server.served_models)}")
        if config.api_key:
            print("API key required (Authorization: Bearer ...)")
        print("press Ctrl-C to stop", flush=True)
        while not stop.wait(1.0):
            if not server.running:
                print(f"vLLM exited unexpectedly. Last lines of {server.log_path}:\n"
                      f"{server.log_tail()}", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping vLLM ...", file=sys.stderr, flush=True)
        server.stop()
    return 0


def _register_adapters(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "adapters",
        help="list, load or unload adapters on a running server",
        description=(
            "Talk to a running `qtune serve`. Loading and unloading need a server started "
            "with --allow-runtime-lora."
        ),
    )
    parser.add_argument("--api-base", default=None, help="endpoint (default $QTUNE_API_BASE or "
                        "http://127.0.0.1:8000/v1)")
    parser.add_argument("--api-key", default=None, help="API key (default $QTUNE_API_KEY)")
    actions = parser.add_subparsers(dest="adapters_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="print the served base model and adapters")
    listing.add_argument("--json", action="store_true", help="print vLLM's model list as JSON")
    listing.set_defaults(func=_list)
    load = actions.add_parser("load", help="check an adapter folder and load it as model NAME")
    load.add_argument("name", help="model name clients will use")
    load.add_argument("path", type=Path, help="PEFT LoRA folder (adapter_config.json + "
                      "adapter_model.safetensors); must be readable by the server")
    load.add_argument("--ignore-base-name", action="store_true",
                      help="load it although its config names another base model")
    load.set_defaults(func=_load)
    unload = actions.add_parser("unload", help="remove adapter NAME from the server")
    unload.add_argument("name", help="served adapter name")
    unload.set_defaults(func=_unload)


def _client(args: argparse.Namespace):
    from qtune.serve.runtime import RuntimeAdapters

    from qtune.config import settings

    return RuntimeAdapters(args.api_base or settings().api_base,
                           args.api_key or settings().api_key)


def _list(args: argparse.Namespace) -> int:
    models = _client(args).models()
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    for card in models:
        kind = f"adapter of {card['parent']}" if card.get("parent") else "base model"
        print(f"{card['id']}\t{kind}\t{card.get('root', '')}")
    return 0


def _load(args: argparse.Namespace) -> int:
    _client(args).load(args.name, args.path, ignore_base_name=args.ignore_base_name)
    print(f"loaded {args.name}")
    return 0


def _unload(args: argparse.Namespace) -> int:
    _client(args).unload(args.name)
    print(f"unloaded {args.name}")
    return 0

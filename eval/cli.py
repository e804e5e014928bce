"""`qtune eval` (score served assistants) and `qtune report` (the whole comparison ->
docs/results.md; `qtune bench` is its old name, kept as an alias for one release)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qtune.vocab import ASSISTANTS

TASK_CHOICES = (*ASSISTANTS, "all")


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_eval(subparsers)
    _register_report(subparsers)


def _endpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-base",
        help="OpenAI-compatible endpoint to evaluate, e.g. http://127.0.0.1:8000/v1 "
        "(default: start a vLLM server here with the base model and the shipped adapters)",
    )
    parser.add_argument(
        "--api-key", help="key the endpoint expects (default: $QTUNE_API_KEY, if set)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=12,
        help="requests in flight at once (vLLM batches them; default 12)",
    )
    parser.add_argument(
        "--counsel-limit",
        type=int,
        help="score only the first N counselling test answers (default: all)",
    )
    parser.add_argument(
        "--all-answers",
        action="store_true",
        help="score every CounselChat test answer (117), not only the most upvoted one per "
        "question (39)",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="neither read nor write the per-item result cache under $QTUNE_HOME/eval",
    )
    parser.add_argument(
        "--adapters-dir",
        type=Path,
        help="folder of the adapters to serve and score (default: the shipped adapters/)",
    )


def _register_eval(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="score served models: GSM8K accuracy, counselling error rate, with 95%% CIs",
        description=(
            "Evaluate models through the OpenAI-compatible endpoint (GSM8K exact-match "
            "accuracy of the final number, greedy; counselling answer length, empty and "
            "refusal rates) and in process (teacher-forced loss and next-token error rate of "
            "the reference counselling answers, base model + PEFT adapter). Per-item results "
            "are cached under $QTUNE_HOME/eval, so an interrupted run resumes. With two or "
            "more models, each is compared with the baseline on the same items (McNemar for "
            "accuracy, paired bootstrap for rates)."
        ),
    )
    parser.add_argument(
        "--task", choices=TASK_CHOICES, default="all", help="what to evaluate (default: all)"
    )
    parser.add_argument(
        "--assistant",
        metavar="NAME|FILE",
        help="instead of --task: your own assistant (its .toml file): its served adapters and "
        "the base model on its held-out rows, by the evaluation kinds its file names "
        "(exact_match, final_number; held-out loss from each adapter's metrics)",
    )
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="served model to evaluate; repeat for several (default: every served model)",
    )
    parser.add_argument(
        "--baseline",
        help="model the others are compared with (default: the base model if evaluated, "
        "else the first --model)",
    )
    parser.add_argument(
        "--limit", type=int, help="evaluate only the first N GSM8K test problems (default: 1319) "
        "or held-out rows of --assistant (default: all)"
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=256,
        help="longest reply generated per request (default 256)",
    )
    parser.add_argument(
        "--dataset",
        choices=("counselchat", "cpsycound"),
        default="counselchat",
        help="counselling test set (default counselchat; cpsycound scores the last "
        "counsellor turn of each Chinese dialogue)",
    )
    parser.add_argument(
        "--no-teacher-forced",
        action="store_true",
        help="skip the in-process teacher-forced scoring of reference answers",
    )
    parser.add_argument(
        "--no-generate",
        action="store_true",
        help="skip generating counselling answers through the endpoint",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    _endpoint_options(parser)
    parser.set_defaults(func=_eval)


def _register_report(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        aliases=["bench"],
        help="compare base, LoRA and QWTH for both assistants and write docs/results.md",
        description=(
            "Run the whole comparison for the math and counselling assistants (base model, "
            "LoRA adapter, QWTH adapter): trainable parameters, adapter size on disk, "
            "training and held-out loss from the adapters' logs, GSM8K accuracy and "
            "counselling next-token error rate through `qtune eval`. Writes a Markdown "
            "report and a PNG of the loss curves. Resumes from cached per-item results."
        ),
    )
    parser.add_argument(
        "--limit",
        type=int,
        help="evaluate only the first N GSM8K test problems (default: all 1319)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="Markdown report to write (default: docs/results.md in the checkout)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        help="PNG of LoRA vs QWTH training loss (default: docs/loss_curves.png)",
    )
    parser.add_argument(
        "--no-eval",
        action="store_true",
        help="only the figures from the adapters' files (no server, no model)",
    )
    _endpoint_options(parser)
    parser.set_defaults(func=_report)


# --------------------------------------------------------------------------- eval


def _options(args: argparse.Namespace, tasks: tuple[str, ...]):  # -> EvalOptions
    from qtune.eval.evaluate import EvalOptions

    return EvalOptions(
        tasks=tasks,
        limit=getattr(args, "limit", None),
        counsel_limit=args.counsel_limit,
        concurrency=max(1, args.concurrency),
        math_max_tokens=getattr(args, "max_tokens", 256),
        counsel_max_tokens=getattr(args, "max_tokens", 256),
        counsel_dataset=getattr(args, "dataset", "counselchat"),
        best_only=not args.all_answers,
        teacher_forced=not getattr(args, "no_teacher_forced", False),
        generate=not getattr(args, "no_generate", False),
        use_cache=not args.no_cache,
        progress=True,
        adapters_dir=args.adapters_dir,
    )


def _eval_own(args: argparse.Namespace) -> int:
    """`qtune eval --assistant`: see qtune.eval.own."""
    from qtune.eval import evaluate, own

    from qtune.assistants import get_assistant
    from qtune.config import settings

    assistant = get_assistant(args.assistant)
    items = own.heldout_items(args.assistant, args.limit)
    api_key = args.api_key or settings().api_key
    with evaluate.served_endpoint(args.api_base, api_key, args.adapters_dir) as (api_base, key, _):
        client = evaluate.make_client(api_base, key)
        results = own.evaluate_own(client, assistant, items, args.max_tokens,
                                   max(1, args.concurrency), not args.no_cache)
    print(own.format_own(assistant, results, len(items)))
    if args.json:
        payload = [{"model": r.model, "heldout_loss": r.heldout_loss,
                    "scores": {k: vars(e) for k, e in r.scores.items()}} for r in results]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from qtune.eval import evaluate

    from qtune.config import DEFAULT_BASE_MODEL, settings
    from qtune.errors import QtuneError

    if args.assistant:
        return _eval_own(args)
    tasks = ASSISTANTS if args.task == "all" else (args.task,)
    options = _options(args, tasks)
    needs_endpoint = "math" in tasks or options.generate
    api_key = args.api_key or settings().api_key
    if not needs_endpoint:
        models = args.models or [DEFAULT_BASE_MODEL]
        results = evaluate.evaluate_models(None, models, options)
    else:
        with evaluate.served_endpoint(args.api_base, api_key, args.adapters_dir) as (
            api_base,
            key,
            served,
        ):
            models = args.models or served
            unknown = [m for m in models if m not in served]
            if unknown:
                raise QtuneError(
                    f"{', '.join(unknown)} not served by {api_base} (it serves {', '.join(served)})"
                )
            client = evaluate.make_client(api_base, key)
            results = evaluate.evaluate_models(client, models, options)
    baseline = args.baseline or (DEFAULT_BASE_MODEL if DEFAULT_BASE_MODEL in models else models[0])
    pairs = [(model, baseline) for model in models if model != baseline]
    found = evaluate.comparisons(results, pairs)
    print(evaluate.format_report(results, found))
    if args.json:
        payload = {
            "results": [result.to_json() for result in results.values()],
            "comparisons": [evaluate.comparison_json(c) for c in found],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


# --------------------------------------------------------------------------- report


def _report(args: argparse.Namespace) -> int:
    from qtune.eval.report.writer import run

    from qtune.config import settings

    options = _options(args, ASSISTANTS)
    return run(
        options,
        api_base=args.api_base,
        api_key=args.api_key or settings().api_key,
        output=args.output,
        plot=args.plot,
        evaluate_models=not args.no_eval,
        argv=sys.argv[1:],
    )

"""`qtune data ...`: look at the training and evaluation data."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from qtune.data.formats import FORMATS

from qtune.errors import QtuneError

_TASK_HELP = (
    "math = GSM8K word problems; counselling = CounselChat answers; "
    "cpsycound = CPsyCounD multi-turn dialogues (Chinese, local folder only)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="show examples and row counts of the datasets (GSM8K, CounselChat, CPsyCounD)",
        description=(
            "Inspect the datasets the assistants are trained and evaluated on. They are read "
            "from $QTUNE_DATA_DIR (or --data-dir) when set, else GSM8K and CounselChat are "
            "loaded from the Hugging Face Hub."
        ),
    )
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    show = commands.add_parser(
        "show",
        help="print examples of a task's split as the assistant is trained on them",
        description=(
            "Print the first N examples of a split as system/user/assistant messages. "
            "GSM8K's dev split is the last 200 rows of train (train leaves them out)."
        ),
    )
    show.add_argument("task", choices=("math", "counselling", "cpsycound"), help=_TASK_HELP)
    show.add_argument(
        "--split",
        default="train",
        help="train, test, and dev (math) or validation (counselling); default: train",
    )
    show.add_argument("-n", type=int, default=3, help="how many examples to print (default: 3)")
    show.add_argument(
        "--render",
        action="store_true",
        help="also print the text the model sees (chat template of the embedded model) "
        "with its prompt and answer token counts",
    )
    show.add_argument(
        "--all-answers",
        action="store_true",
        help="counselling: every therapist answer, not only the most upvoted per question",
    )
    show.add_argument("--data-dir", type=Path, help="dataset folder instead of $QTUNE_DATA_DIR")
    show.set_defaults(func=_show)

    lengths = commands.add_parser(
        "lengths",
        help="token lengths of a task's training rows as the trainer cuts them",
        description=(
            "Tokenise the first N rows of a split exactly as `qtune finetune` does (chat "
            "template of the embedded model, cut at --seq-len) and print their mean length, "
            "how many are cut, and the share of a right-padded row that is padding: what "
            "packing several examples into one sequence could save at most."
        ),
    )
    lengths.add_argument("task", choices=("math", "counselling", "cpsycound"), help=_TASK_HELP)
    lengths.add_argument("--split", default="train", help="split (default: train)")
    lengths.add_argument("-n", type=int, default=400, help="rows to measure (default: 400)")
    lengths.add_argument("--seq-len", type=int, default=256,
                         help="the trainer's seq_len (default: 256)")
    lengths.set_defaults(func=_lengths)

    check = commands.add_parser(
        "check",
        help="validate chat data (a file, a datasets folder, or an assistant's data) before "
             "training",
        description=(
            "Read every row of chat data and print each bad one with its file and line (or "
            "split and row) (bad JSON, no assistant turn, an unknown role, empty text, a "
            "mapped column that is missing), then the counts and token-length quantiles, "
            "rendered with the base model's chat template as `qtune finetune` renders them, "
            "and the rows longer than --seq-len. Exit status 1 when any row is bad. DATA is "
            "a JSONL, Parquet, CSV or Arrow file, a folder the datasets library loads, a Hub "
            "id, or an assistant (a shipped name or its .toml file: its train and validation "
            "data, with its format, columns and splits). Formats: openai ({\"messages\": "
            "[...]}), sharegpt ({\"conversations\": [{\"from\", \"value\"}]}), alpaca "
            "({\"instruction\", \"input\", \"output\"}); auto reads each row's own."
        ),
    )
    check.add_argument("data", help="the chat data, or an assistant's name or .toml file")
    check.add_argument("--format", default=None, choices=("auto", *FORMATS),
                       help="the rows' format (default: the assistant's, else auto, per row)")
    check.add_argument("--column", action="append", default=[], metavar="KEY=COLUMN",
                       help="read qtune's KEY (messages, conversations, system, instruction, "
                            "input, output) from the data's COLUMN; repeat for more")
    check.add_argument("--split", default=None,
                       help="the split of a datasets folder or Hub id (default: train)")
    check.add_argument("--seq-len", type=int, default=256,
                       help="the trainer's seq_len: longer rows are reported (default: 256)")
    check.add_argument("--model", help="whose tokenizer counts the tokens (default: the "
                       "embedded SmolLM2-135M-Instruct)")
    check.add_argument("--no-tokens", action="store_true",
                       help="check the rows only, without loading a tokenizer")
    check.set_defaults(func=_check)

    pairs = commands.add_parser(
        "pairs",
        help="build math preference pairs: the reference over the base model's wrong answer",
        description=(
            "Ask the base model (greedy, through vLLM: a server started here, or --api-base) "
            "the first problems of GSM8K's train and dev splits, and keep every wrong answer "
            "as a preference pair (the reference solution is preferred). Answers are cached "
            "per problem, so an interrupted run resumes; the pairs go to "
            "$QTUNE_HOME/preferences/math-{train,dev}.jsonl, which `qtune finetune "
            "--objective dpo --preferences math` reads."
        ),
    )
    pairs.add_argument("source", choices=("math",), help="which pairs to build")
    pairs.add_argument("--train-problems", type=int, default=400,
                       help="train problems asked (default: 400)")
    pairs.add_argument("--dev-problems", type=int, default=100,
                       help="dev problems asked, for the held-out pairs (default: 100)")
    pairs.add_argument("--api-base", help="an endpoint serving the base model (default: start "
                       "vLLM here)")
    pairs.add_argument("--api-key", help="its key (default: $QTUNE_API_KEY)")
    pairs.add_argument("--max-tokens", type=int, default=256,
                       help="longest answer (default: 256)")
    pairs.add_argument("--answers", type=Path, metavar="DIR",
                       help="a folder of the model's answers (math-<split>.t<max-tokens>.jsonl): "
                       "those it holds are reused, the missing ones asked and added, so "
                       "the same folder gives the same pairs on any machine (default: "
                       "the cache under $QTUNE_HOME)")
    pairs.set_defaults(func=_pairs)

    stats = commands.add_parser(
        "stats",
        help="count the rows of every task and split in the local dataset folder",
        description="Count examples per task and split in $QTUNE_DATA_DIR (or --data-dir).",
    )
    stats.add_argument("--data-dir", type=Path, help="dataset folder instead of $QTUNE_DATA_DIR")
    stats.set_defaults(func=_stats)


def _indent(text: str) -> str:
    return textwrap.indent(text.strip(), "    ")


def _show(args: argparse.Namespace) -> int:
    from qtune.data.datasets import load_task
    from qtune.data.prompts import example_messages, render_chat, tokenize_for_training

    examples = load_task(
        args.task,
        args.split,
        data_dir=args.data_dir,
        limit=max(args.n, 0),
        best_only=not args.all_answers,
    )
    tokenizer = None
    if args.render:
        from transformers import AutoTokenizer

        from qtune.model import resolve_model

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    for number, example in enumerate(examples, start=1):
        messages = example_messages(args.task, example)
        print(f"=== {args.task} {args.split} #{number} ===")
        if hasattr(example, "final_answer"):
            print(f"[final answer: {example.final_answer}]")
        if hasattr(example, "topic"):
            print(
                f"[topic: {example.topic}, upvotes: {example.upvotes}, rank: {example.answer_rank}]"
            )
        for message in messages[1:]:
            print(f"{message['role']}:")
            print(_indent(message["content"]))
        if tokenizer is not None:
            encoded = tokenize_for_training(tokenizer, messages, max_length=1 << 30)
            answer_tokens = sum(label != -100 for label in encoded["labels"])
            total = len(encoded["input_ids"])
            print(
                f"--- rendered ({total - answer_tokens} prompt + {answer_tokens} answer tokens) ---"
            )
            print(render_chat(tokenizer, messages, add_generation_prompt=False))
        print()
    if not examples:
        print(f"no examples in {args.task} {args.split}")
    return 0


def _lengths(args: argparse.Namespace) -> int:
    from qtune.data.datasets import load_task
    from qtune.data.prompts import example_messages, tokenize_for_training
    from transformers import AutoTokenizer

    from qtune.model import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    rows = load_task(args.task, args.split, limit=args.n)
    sizes = [len(tokenize_for_training(tokenizer, example_messages(args.task, row),
                                       args.seq_len)["input_ids"]) for row in rows]
    if not sizes:
        print(f"no rows in {args.task} {args.split}")
        return 0
    mean = sum(sizes) / len(sizes)
    cut = sum(size >= args.seq_len for size in sizes) / len(sizes)
    print(f"{args.task} {args.split}: {len(sizes)} rows, mean {mean:.1f} tokens, "
          f"{100 * cut:.1f}% cut at {args.seq_len}; a row padded to {args.seq_len} is "
          f"{100 * (1 - mean / args.seq_len):.1f}% padding on average")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from qtune.data.datasets import (
        data_file,
        load_counselchat,
        load_task,
        resolve_data_dir,
        split_names,
    )

    folder = resolve_data_dir(args.data_dir)
    if folder is None:
        raise QtuneError(
            "no local dataset folder: set QTUNE_DATA_DIR or pass --data-dir (stats counts files)"
        )
    print(f"datasets in {folder}")
    print(f"{'task':<12} {'split':<11} {'rows':>6}  notes")
    for task in ("math", "counselling", "cpsycound"):
        for split in split_names(task):
            path = data_file(task, split, folder)
            if not path.is_file():
                print(f"{task:<12} {split:<11} {'-':>6}  missing: {path}")
                continue
            rows = len(load_task(task, split, data_dir=folder))
            note = ""
            if task == "counselling":
                answers = len(load_counselchat(split, best_only=False, data_dir=folder))
                note = f"questions (best answer each); {answers} answers in all"
            elif (task, split) == ("math", "train"):
                note = "train.jsonl without the dev rows"
            elif (task, split) == ("math", "dev"):
                note = "the last rows of train.jsonl"
            elif task == "cpsycound":
                note = "dialogues"
            print(f"{task:<12} {split:<11} {rows:>6}  {note}")
    return 0


def _pairs(args: argparse.Namespace) -> int:
    from qtune.finetune.math_pairs import generate

    from qtune.config import settings

    for split, limit in (("train", args.train_problems), ("dev", args.dev_problems)):
        path, kept, asked = generate(split, limit, args.api_base,
                                     args.api_key or settings().api_key, args.max_tokens,
                                     answers=args.answers)
        print(f"math {split}: {kept} pairs from {asked} problems (the base model was wrong "
              f"on {kept}) -> {path}")
    return 0


def _check_sources(args: argparse.Namespace) -> list:
    """The sources `qtune data check` reads: an assistant's own data, or DATA itself."""
    from qtune.data.sources import DEFAULT_SPLIT, ChatSource, assistant_sources

    from qtune.assistants import get_assistant, shipped_assistants

    columns = {}
    for pair in args.column:
        key, _, column = pair.partition("=")
        if not key or not column:
            raise QtuneError(f"--column {pair!r}: write KEY=COLUMN, e.g. output=answer")
        columns[key] = column
    if args.data in shipped_assistants() or args.data.endswith(".toml"):
        assistant = get_assistant(args.data)
        if not assistant.own_data:
            raise QtuneError(f"assistant {assistant.name!r} trains on shipped data sets "
                             f"({', '.join(assistant.tasks)}): `qtune data show` reads them")
        sources = [s for s in assistant_sources(assistant) if s is not None]
        return [ChatSource(s.location, args.format or s.fmt, columns or s.columns,
                           args.split or s.split) for s in sources]
    return [ChatSource(args.data, args.format or "auto", columns, args.split or DEFAULT_SPLIT)]


def _check(args: argparse.Namespace) -> int:
    from qtune.data.check import check_source, report_text

    sources = _check_sources(args)
    for source in sources:
        source.check()
    tokenizer = None
    if not args.no_tokens:
        from transformers import AutoTokenizer

        from qtune.model import resolve_model

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    reports = [check_source(source, tokenizer, args.seq_len) for source in sources]
    print("\n\n".join(report_text(report, args.seq_len) for report in reports))
    return 0 if all(report.ok for report in reports) else 1

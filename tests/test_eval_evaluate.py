"""Evaluation: scoring on fixed inputs, teacher forcing against a manual computation,
resuming from cached per-item results, and one real `qtune eval` run against vLLM."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from qtune.eval import evaluate, items, runner, scoring
from qtune.eval.items import EvalItem
from qtune.eval.runner import ResultCache


def _item(index: int, question: str = "q", reference: str = "1") -> EvalItem:
    messages = ({"role": "user", "content": f"{question} {index}"},)
    return EvalItem(items.item_id(index, f"{question} {index}"), messages, question, reference)


def test_math_records_and_accuracy_on_fixed_outputs() -> None:
    outputs = [
        ("He pays 5 * 3 = 15.\n#### 15", "15", True),
        ("The answer is $1,250.00", "1250", True),
        ("So 7 apples remain.\n#### 8", "7", False),
        ("I am not sure.", "3", False),
    ]
    records = [
        scoring.math_record(_item(i, reference=gold), text)
        for i, (text, gold, _) in enumerate(outputs)
    ]
    assert [r["correct"] for r in records] == [expected for *_, expected in outputs]
    assert [r["predicted"] for r in records] == ["15", "1250", "8", None]
    summary = evaluate.summarize_math(records)
    assert summary["accuracy"].value == pytest.approx(0.5)
    assert summary["answered"].value == pytest.approx(0.75)
    assert summary["accuracy"].n == 4


def test_generation_records_flag_empty_answers_and_refusals() -> None:
    empty = scoring.generation_record(_item(0), "   ")
    refusal = scoring.generation_record(_item(1), "I'm sorry, but I can't help with that.")
    disclaimer = scoring.generation_record(
        _item(2), "I'm not a therapist, but it sounds like you are carrying a lot."
    )
    assert (empty["empty"], empty["refusal"], empty["words"]) == (True, False, 0)
    assert (refusal["empty"], refusal["refusal"]) == (False, True)
    assert (disclaimer["refusal"], disclaimer["words"]) == (False, 13)
    summary = evaluate.summarize_generation([empty, refusal, disclaimer])
    assert summary["empty_rate"].value == pytest.approx(1 / 3)
    assert summary["refusal_rate"].value == pytest.approx(1 / 3)


def test_teacher_forced_summary_weights_by_tokens() -> None:
    records = [
        {"id": "a", "tokens": 10, "nll_sum": 20.0, "errors": 5},
        {"id": "b", "tokens": 30, "nll_sum": 30.0, "errors": 3},
    ]
    summary = evaluate.summarize_teacher_forced(records)
    assert summary["error_rate"].value == pytest.approx(8 / 40)
    assert summary["loss"].value == pytest.approx(50 / 40)


def test_score_sequence_matches_a_manual_loop(tiny_llama) -> None:
    torch.manual_seed(1)
    ids = torch.randint(0, 128, (12,)).tolist()
    labels = [-100] * 5 + ids[5:]
    labels[8] = -100  # a hole in the labels is skipped too
    result = scoring.score_sequence(tiny_llama, ids, labels)

    with torch.no_grad():
        logits = tiny_llama(input_ids=torch.tensor([ids])).logits[0]
    nll, errors, count = 0.0, 0, 0
    for position in range(1, len(ids)):
        if labels[position] == -100:
            continue
        log_probs = torch.log_softmax(logits[position - 1].double(), dim=-1)
        nll -= float(log_probs[ids[position]])
        errors += int(int(logits[position - 1].argmax()) != ids[position])
        count += 1
    assert result.tokens == count == 6
    assert result.nll_sum == pytest.approx(nll, rel=1e-5)
    assert result.errors == errors
    assert result.error_rate == pytest.approx(errors / count)
    with pytest.raises(ValueError):
        scoring.score_sequence(tiny_llama, ids, [-100] * len(ids))


def test_teacher_forced_comparison_pairs_items_by_id() -> None:
    base = evaluate.ModelResult("base", "counselling")
    tuned = evaluate.ModelResult("tuned", "counselling")
    base.records["teacher_forced"] = [
        {"id": "x", "tokens": 10, "nll_sum": 30.0, "errors": 6},
        {"id": "y", "tokens": 10, "nll_sum": 30.0, "errors": 4},
    ]
    tuned.records["teacher_forced"] = [  # other order: pairing must go by id
        {"id": "y", "tokens": 10, "nll_sum": 20.0, "errors": 2},
        {"id": "x", "tokens": 10, "nll_sum": 20.0, "errors": 5},
    ]
    comparison = evaluate.compare_teacher_forced(tuned, base, "error_rate")
    assert comparison.difference.value == pytest.approx((7 - 10) / 20)


def test_math_comparison_uses_mcnemar_on_shared_items() -> None:
    a = evaluate.ModelResult("a", "math", records={"math": []})
    b = evaluate.ModelResult("b", "math", records={"math": []})
    for index, (right_a, right_b) in enumerate([(1, 0)] * 6 + [(0, 1)] + [(1, 1)] * 3):
        a.records["math"].append({"id": str(index), "correct": bool(right_a)})
        b.records["math"].append({"id": str(index), "correct": bool(right_b)})
    b.records["math"].append({"id": "only-b", "correct": True})
    comparison = evaluate.compare_math(a, b)
    assert (comparison.mcnemar.only_a, comparison.mcnemar.only_b) == (6, 1)
    assert comparison.p_value == pytest.approx(2 * 8 / 128)  # P(X<=1 | n=7) doubled
    assert comparison.difference.value == pytest.approx(0.5)


def test_interrupted_run_resumes_with_only_the_missing_items(tmp_path: Path) -> None:
    items = [_item(i) for i in range(6)]
    path = tmp_path / "cache.jsonl"
    # A previous run finished items 0, 2 and 3, and was killed while writing item 4.
    with path.open("w") as handle:
        for index in (0, 2, 3):
            handle.write(json.dumps({"id": items[index].id, "value": index * 10}) + "\n")
        handle.write('{"id": "' + items[4].id + '", "val')

    asked: list[str] = []
    lock = threading.Lock()

    def evaluate_one(item: EvalItem) -> dict:
        with lock:
            asked.append(item.id)
        return {"value": -1}

    records = runner.run_items(items, evaluate_one, ResultCache(path), concurrency=3)
    assert sorted(asked) == sorted(items[i].id for i in (1, 4, 5))
    assert [r["id"] for r in records] == [item.id for item in items]
    assert [r["value"] for r in records] == [0, -1, 20, 30, -1, -1]

    asked.clear()
    again = runner.run_items(items, evaluate_one, ResultCache(path), concurrency=3)
    assert asked == [] and again == records


def test_unknown_adapter_is_a_user_error(tmp_path: Path) -> None:
    from qtune.errors import QtuneError

    assert runner.adapter_dir_for("smollm2-135m-instruct", tmp_path) is None
    with pytest.raises(QtuneError, match="no adapter folder"):
        runner.adapter_dir_for("math-qwth", tmp_path)
    assert runner.model_fingerprint("elsewhere", tmp_path) == "ext"


@pytest.mark.slow
def test_qtune_eval_math_against_a_real_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_dir: Path, embedded_model: Path, capsys
) -> None:
    from qtune.cli import main

    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    # Reuse the prepared model rather than building it again in the temporary home.
    (home / "models" / embedded_model.name).symlink_to(embedded_model)
    monkeypatch.setenv("QTUNE_HOME", str(home))
    no_adapters = tmp_path / "adapters"
    no_adapters.mkdir()
    summary = tmp_path / "summary.json"
    argv = ["eval", "--task", "math", "--limit", "5", "--adapters-dir", str(no_adapters)]
    assert main([*argv, "--max-tokens", "96", "--json", str(summary)]) == 0

    printed = capsys.readouterr().out
    assert "accuracy" in printed and "smollm2-135m-instruct" in printed
    payload = json.loads(summary.read_text())
    (result,) = payload["results"]
    assert result["items"] == {"math": 5}
    accuracy = result["metrics"]["accuracy"]
    assert 0.0 <= accuracy["low"] <= accuracy["value"] <= accuracy["high"] <= 1.0
    (cache,) = (home / "eval").rglob("*.jsonl")
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(rows) == 5
    assert {"id", "question", "gold", "output", "predicted", "correct"} <= set(rows[0])
    assert all(row["output"] for row in rows)

"""Preference tuning: the DPO and KTO losses against their definitions, the data sources
and their errors, and short DPO/KTO runs on a tiny model (resume included)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from qtune.finetune.config import TrainConfig
from qtune.finetune.preference import completion_logps, dpo_losses, kto_losses
from qtune.finetune.preference_data import counselchat_pairs, preference_examples

from qtune.errors import QtuneError


def test_dpo_loss_of_a_policy_equal_to_its_reference_is_log_2():
    logps = torch.tensor([-3.0, -7.5])
    losses = dpo_losses(logps, logps - 1.0, logps, logps - 1.0, beta=0.1)
    assert losses.tolist() == pytest.approx([math.log(2)] * 2)


def test_a_dpo_step_makes_the_preferred_answer_likelier():
    """Two answers of one token each from a one-token vocabulary choice: logits z over
    {chosen, rejected}; at z = 0 the loss is log 2, its gradient pushes z_chosen up
    (d loss / d z_c = -beta/2 * (1 - p_c) < 0 by hand), and one step raises p(chosen)."""
    logits = torch.zeros(2, requires_grad=True)
    reference = torch.log_softmax(torch.zeros(2), -1)
    policy = torch.log_softmax(logits, -1)
    loss = dpo_losses(policy[0], policy[1], reference[0], reference[1], beta=1.0)
    assert float(loss) == pytest.approx(math.log(2))
    loss.backward()
    # dL/dz_c = -beta * sigma(-0) * (d(pi_c - pi_r)/dz_c) = -1 * 0.5 * 1 = -0.5
    assert logits.grad.tolist() == pytest.approx([-0.5, 0.5])
    with torch.no_grad():
        stepped = torch.softmax(logits - 0.1 * logits.grad, -1)
    assert float(stepped[0]) > 0.5


def test_kto_loss_follows_its_definition():
    policy, reference = torch.tensor([-2.0, -2.0]), torch.tensor([-3.0, -1.0])
    good = torch.tensor([True, False])
    losses = kto_losses(policy, reference, good, torch.tensor(0.5), beta=0.1)
    expected = [1 - 1 / (1 + math.exp(-0.1 * (1.0 - 0.5))),
                1 - 1 / (1 + math.exp(-0.1 * (0.5 - (-1.0))))]
    assert losses.tolist() == pytest.approx(expected)


def test_completion_logps_count_the_answer_tokens_only():
    from qtune.finetune.batches import Batch

    class Uniform(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": torch.zeros(*input_ids.shape, 4)})()

    ids = torch.tensor([[1, 2, 3, 0]])
    labels = torch.tensor([[-100, -100, 3, -100]])
    total, count = completion_logps(Uniform(), Batch(ids, torch.ones_like(ids), labels))
    assert count.tolist() == [1] and total.tolist() == pytest.approx([math.log(0.25)])


def test_counselchat_pairs_prefer_the_more_upvoted_answer(data_dir):
    from qtune.data.datasets import load_counselchat

    pairs = counselchat_pairs("validation", "Be kind.")
    assert pairs and all(p.origin["upvotes"][0] > p.origin["upvotes"][1] for p in pairs)
    answers = {a.answer_text: a for a in load_counselchat("validation", best_only=False)}
    first = pairs[0]
    assert answers[first.chosen].upvotes > answers[first.rejected].upvotes
    assert answers[first.chosen].question_id == answers[first.rejected].question_id
    assert first.prompt[0] == {"role": "system", "content": "Be kind."}


def _export(folder, votes=(), ratings=(), conversations=()):
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("preferences", votes), ("ratings", ratings),
                       ("conversations", conversations)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _vote(i, chosen_model="math-qwth", rejected_model="math-lora"):
    return {"prompt": f"What is {i} + {i}?", "chosen": str(2 * i), "rejected": str(2 * i + 1),
            "assistant": "math", "chosen_model": chosen_model, "rejected_model": rejected_model,
            "chosen_version": "aaa", "rejected_version": "bbb", "vote_id": i}


def test_an_export_gives_pairs_with_their_origin_and_skips_one_models_pairs(tmp_path):
    same = {**_vote(99, "math-lora", "math-lora"), "rejected_version": "aaa"}
    votes = [_vote(i) for i in range(12)] + [same]
    folder = _export(tmp_path / "fb", votes)
    config = TrainConfig(method="lora", objective="dpo", preferences=str(folder))
    train, held, name = preference_examples(config)
    assert len(train) + len(held) == 12 and len(held) == 1 and "carved" in name
    assert all(e.origin["chosen_version"] == "aaa" for e in train)
    assert train[0].prompt[0]["role"] == "system"  # the math assistant's prompt


@pytest.mark.parametrize("rows, problem", [
    ([], "too few"),
    (["not json"], "not valid JSON"),
    ([{"prompt": "q", "chosen": "", "rejected": "b"}], "'chosen' must be non-empty text"),
    ([{"prompt": 3, "chosen": "a", "rejected": "b"}], "'prompt' must be text"),
])
def test_bad_or_empty_preference_files_are_refused_before_anything_loads(tmp_path, rows,
                                                                         problem):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    with pytest.raises(QtuneError, match=problem):
        TrainConfig(method="lora", objective="dpo", preferences=str(path)).validate()


def test_preference_settings_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("QTUNE_HOME", str(tmp_path / "home"))  # no math pairs made here
    with pytest.raises(QtuneError, match="needs --preferences"):
        TrainConfig(method="lora", objective="dpo").validate()
    with pytest.raises(QtuneError, match="unknown objective 'ppo'"):
        TrainConfig(method="lora", objective="ppo").validate()
    with pytest.raises(QtuneError, match="no math pairs.*qtune data pairs math"):
        TrainConfig(method="lora", objective="dpo", preferences="math").validate()
    with pytest.raises(QtuneError, match="not a qtune run folder"):
        TrainConfig(method="lora", start_from=str(tmp_path)).validate()


def _pairs_file(path, count=24):
    rows = [{"prompt": f"Say a number above {i}.", "chosen": f"{i + 1}", "rejected": "no"}
            for i in range(count)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _tiny(tiny_model_dir, output, **settings):
    values = dict(task="math", method="lora", base_model=str(tiny_model_dir), steps=4,
                  batch_size=2, seq_len=48, warmup=1, lr=1e-2, eval_every=2, eval_batches=1,
                  save_every=1, max_train_examples=None, mixed_precision="no",
                  output=str(output))
    return TrainConfig.from_dict({**values, **settings}).validate()


@pytest.mark.parametrize("method", ["lora", "qwth"])
def test_a_dpo_run_from_an_adapter_trains_resumes_exactly_and_records_its_measures(
        method, tiny_model_dir, tmp_path, one_torch_thread):
    from qtune.finetune.train import train

    start = tmp_path / "start"
    started = train(_tiny(tiny_model_dir, start, method=method, steps=2))
    pairs = _pairs_file(tmp_path / "pairs.jsonl")
    settings = dict(method=method, objective="dpo", preferences=str(pairs),
                    start_from=str(start), beta=0.5)
    whole = train(_tiny(tiny_model_dir, tmp_path / "whole", **settings))
    assert whole["objective"] == "dpo" and whole["preference_pairs"] == 22
    assert whole["preference_loss_before"] == pytest.approx(math.log(2), abs=1e-5)
    assert whole["preference_loss"] < whole["preference_loss_before"]
    # it starts as the adapter it was given (the same held-out SFT loss), not afresh
    assert whole["initial_eval_loss"] == pytest.approx(started["final_eval_loss"], abs=1e-6)
    assert whole["final_eval_loss"] is not None  # the SFT held-out loss, beside it
    # every held-out pair's score, before (the reference) and after: they give the accuracies
    after, before = whole["preference_scores"], whole["preference_scores_before"]
    assert len(after) == len(before) == 2  # 24 pairs, a tenth carved off to score
    assert sum(s > 0 for s in after) / 2 == whole["preference_accuracy"]
    assert sum(s > 0 for s in before) / 2 == whole["preference_accuracy_before"]
    assert after != before

    class Kill(Exception):
        pass

    def kill(step, row, model):
        if step == 3:
            raise Kill

    broken = _tiny(tiny_model_dir, tmp_path / "broken", **settings)
    with pytest.raises(Kill):
        train(broken, on_step=kill)
    broken.resume = True
    again = train(broken)
    assert again["preference_loss"] == whole["preference_loss"]
    assert again["final_train_loss"] == whole["final_train_loss"]


def test_a_kto_run_on_ratings(tiny_model_dir, tmp_path, one_torch_thread):
    from qtune.finetune.train import train

    conversations, ratings = [], []
    for i in range(16):
        conversations.append({"id": f"c{i}", "messages": [
            {"id": 2 * i, "role": "user", "content": f"What is {i} + 1?", "model": None},
            {"id": 2 * i + 1, "role": "assistant", "content": str(i + 1 if i % 2 else i),
             "model": "math-lora", "adapter_version": "v1"}]})
        ratings.append({"id": i, "message_id": 2 * i + 1, "rating": 1 if i % 2 else -1})
    folder = _export(tmp_path / "fb", ratings=ratings, conversations=conversations)
    metrics = train(_tiny(tiny_model_dir, tmp_path / "kto", objective="kto",
                          preferences=str(folder)))
    assert metrics["objective"] == "kto" and metrics["preference_ratings"] == 15
    assert metrics["preference_accuracy_before"] == 0.0  # nothing has moved yet
    scores = metrics["preference_scores"]  # one rating of 16 carved off to score
    assert len(scores) == 1 and metrics["preference_scores_before"] == [0.0]  # unmoved yet
    assert (scores[0] > 0) == (metrics["preference_accuracy"] == 1.0)
    assert (tmp_path / "kto" / "adapter_model.safetensors").is_file()
    card = (tmp_path / "kto" / "README.md").read_text()
    assert "Preference tuning: KTO (beta 0.1) on 15 ratings" in card


def test_math_pairs_keep_the_model_s_wrong_answers_only(data_dir, tmp_path, monkeypatch):
    from qtune.eval.items import math_items
    from qtune.finetune.math_pairs import pairs_from_answers
    from qtune.finetune.preference_data import math_pairs_path

    items = math_items("dev", limit=3)
    answers = [{"output": f"Working.\n#### {items[0].reference}"},  # right: no pair
               {"output": "#### 123456789"}, {"output": ""}]  # wrong; empty: no pair
    pairs = pairs_from_answers(items, answers, "smollm2-135m-instruct")
    assert len(pairs) == 1 and pairs[0]["rejected"] == "#### 123456789"
    assert pairs[0]["chosen"].endswith(f"#### {items[1].reference}")
    monkeypatch.setenv("QTUNE_HOME", str(tmp_path))
    for split in ("train", "dev"):
        path = math_pairs_path(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(pairs[0]) + "\n")
    train, held, name = preference_examples(
        TrainConfig(method="lora", objective="dpo", preferences="math"))
    assert len(train) == len(held) == 1 and name == "math dev pairs"
    assert train[0].origin["rejected_model"] == "smollm2-135m-instruct"


def test_math_pairs_from_an_answers_folder_need_no_server(data_dir, tmp_path, monkeypatch):
    """`qtune data pairs math --answers DIR`: answers the folder holds are not asked again
    (here nothing is asked: no server starts), and the pairs follow from them alone."""
    from qtune.eval.items import math_items
    from qtune.finetune.math_pairs import answers_file

    from qtune.cli import main

    monkeypatch.setenv("QTUNE_HOME", str(tmp_path / "home"))
    folder = tmp_path / "answers"
    folder.mkdir()
    for split in ("train", "dev"):
        items = math_items(split, limit=3)
        rows = [{"id": items[0].id, "output": f"#### {items[0].reference}"},  # right
                {"id": items[1].id, "output": "#### -1"}, {"id": items[2].id, "output": "#### -2"}]
        answers_file(folder, split, 256).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["data", "pairs", "math", "--train-problems", "3", "--dev-problems", "3",
                 "--answers", str(folder)]) == 0
    for split in ("train", "dev"):
        made = (tmp_path / "home" / "preferences" / f"math-{split}.jsonl").read_text()
        assert [json.loads(line)["rejected"] for line in made.splitlines()] == ["#### -1", "#### -2"]

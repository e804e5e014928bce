"""The feedback loop end to end with the real model and real vLLM: votes stored through
the UI's store, `qtune feedback export`, a DPO run from the shipped LoRA adapter with
`qtune finetune --objective dpo --from`, and the new version served by `qtune serve`
beside the old one, answering through the openai client."""

from __future__ import annotations

import json
import shutil

import pytest
from qtune.feedback.store import FeedbackStore, Vote
from ui_fixtures import free_port

from qtune.cli import main
from qtune.config import settings

pytestmark = [pytest.mark.slow]


def _store_votes(store: FeedbackStore, count: int) -> None:
    """Votes as the Compare tab records them: a finished pair of answers, one winner."""
    for i in range(count):
        conversation = store.start_conversation("math", "compare")
        store.record_vote(Vote(
            conversation_id=conversation, assistant="math", model_a="math-qwth",
            model_b="math-lora", winner="model_a" if i % 2 else "model_b",
            prompt=f"Tom has {i + 2} apples and buys 3 more. How many apples does he have?",
            answer_a=f"Tom has {i + 2} + 3 = {i + 5} apples.\n#### {i + 5}",
            answer_b=f"He has {i + 2} apples.\n#### {i + 2}",
            model_a_version="q1", model_b_version="l1"))


def test_votes_become_a_dpo_version_that_is_served_beside_the_old_one(tmp_path, data_dir,
                                                                      embedded_model, capsys,
                                                                      monkeypatch):
    from openai import OpenAI
    from qtune.serve.server import ServeConfig, VLLMServer

    store = FeedbackStore(tmp_path / "feedback.db")
    _store_votes(store, 12)
    assert main(["feedback", "export", "--db", str(tmp_path / "feedback.db"),
                 "--out", str(tmp_path / "export")]) == 0
    pairs = [json.loads(line) for line in
             (tmp_path / "export" / "preferences.jsonl").read_text().splitlines()]
    assert len(pairs) == 12 and {p["chosen_version"] for p in pairs} == {"q1", "l1"}

    adapters = tmp_path / "adapters"
    shutil.copytree(settings().adapters_dir / "math-lora", adapters / "math-lora")
    assert main(["finetune", "--assistant", "math", "--method", "lora", "--objective", "dpo",
                 "--preferences", str(tmp_path / "export"), "--from", str(adapters / "math-lora"),
                 "--steps", "2", "--batch-size", "2", "--seq-len", "128", "--warmup", "1",
                 "--eval-every", "0", "--eval-batches", "1", "--save-every", "0",
                 "--mixed-precision", "no", "--output", str(adapters / "math-lora-dpo")]) == 0
    metrics = json.loads((adapters / "math-lora-dpo" / "metrics.json").read_text())
    assert metrics["objective"] == "dpo" and metrics["preference_pairs"] == 11
    assert metrics["start_from"] == str(adapters / "math-lora")

    server = VLLMServer(ServeConfig(port=free_port(), adapters_dir=adapters,
                                    log_path=tmp_path / "vllm.log"))
    with server:
        client = OpenAI(base_url=server.api_base, api_key="none")
        served = {m.id for m in client.models.list()}
        assert {"math-lora", "math-lora-dpo"} <= served
        question = [{"role": "user", "content": "What is 7 + 5?"}]
        for model in ("math-lora", "math-lora-dpo"):
            answer = client.chat.completions.create(model=model, messages=question,
                                                    max_tokens=24, temperature=0)
            assert answer.choices[0].message.content.strip()
        # math pairs from the same server's base model: its wrong answers, cached
        monkeypatch.setenv("QTUNE_HOME", str(tmp_path / "home"))
        assert main(["data", "pairs", "math", "--train-problems", "3", "--dev-problems", "2",
                     "--api-base", server.api_base, "--max-tokens", "48"]) == 0
    out = capsys.readouterr().out
    assert "math train:" in out and "from 3 problems" in out and "from 2 problems" in out
    made = tmp_path / "home" / "preferences" / "math-train.jsonl"
    for row in map(json.loads, made.read_text().splitlines()):
        assert row["rejected_model"] == "smollm2-135m-instruct" and "####" in row["chosen"]

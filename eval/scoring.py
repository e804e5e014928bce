"""Score one item: a reply through the endpoint (math answer, counselling answer shape)
or a reference answer teacher-forced in process (loss, next-token errors)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qtune.eval.items import EvalItem, Record

from qtune.vocab import IGNORE_INDEX

#: Longest prompt + reference answer scored teacher-forced (longer answers are cut).
DEFAULT_MAX_SEQ_TOKENS = 1024
REQUEST_TIMEOUT_S = 600.0

# Phrases that open or make up a refusal rather than an attempt to help. A disclaimer
# followed by advice ("I'm not a therapist, but ...") is not a refusal.
_REFUSAL_RE = re.compile(
    r"\b(?:i'?m sorry,? but i can(?:'|no)t|i can(?:'|no)t (?:help|assist|provide|answer|do that)"
    r"|i am unable to|i'?m unable to|i(?: a|')m not able to (?:help|assist|provide)"
    r"|as an ai(?: language model)?,? i (?:can(?:'|no)t|am not able))",
    re.IGNORECASE,
)


def make_client(api_base: str, api_key: str | None) -> Any:
    from openai import OpenAI

    # One INFO line per request would bury the progress bar.
    for name in ("httpx", "httpx2", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)

    return OpenAI(
        base_url=api_base, api_key=api_key or "EMPTY", timeout=REQUEST_TIMEOUT_S, max_retries=2
    )


def chat_reply(client: Any, model: str, item: EvalItem, max_tokens: int) -> tuple[str, int, str]:
    response = client.chat.completions.create(
        model=model,
        messages=list(item.messages),
        temperature=0.0,
        max_tokens=max_tokens,
    )
    choice = response.choices[0]
    tokens = response.usage.completion_tokens if response.usage else 0
    return choice.message.content or "", int(tokens), str(choice.finish_reason)


def math_record(item: EvalItem, output: str) -> Record:
    """Score one GSM8K reply: the extracted final number against the gold answer."""
    from qtune.data.answers import answers_match, extract_final_number

    predicted = extract_final_number(output)
    return {
        "question": item.question,
        "gold": item.reference,
        "output": output,
        "predicted": predicted,
        "correct": bool(answers_match(output, item.reference)),
    }


def math_caller(client: Any, model: str, max_tokens: int) -> Callable[[EvalItem], Record]:
    def evaluate_one(item: EvalItem) -> Record:
        output, tokens, finish = chat_reply(client, model, item, max_tokens)
        return {**math_record(item, output), "completion_tokens": tokens, "finish_reason": finish}

    return evaluate_one


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL_RE.search(text[:300]))


def generation_record(item: EvalItem, output: str) -> Record:
    """Describe one generated counselling answer (length, empty, refusal)."""
    stripped = output.strip()
    return {
        "question": item.question,
        "output": output,
        "words": len(stripped.split()),
        "empty": not stripped,
        "refusal": bool(stripped) and is_refusal(stripped),
    }


def generation_caller(client: Any, model: str, max_tokens: int) -> Callable[[EvalItem], Record]:
    def evaluate_one(item: EvalItem) -> Record:
        output, tokens, finish = chat_reply(client, model, item, max_tokens)
        return {
            **generation_record(item, output),
            "completion_tokens": tokens,
            "finish_reason": finish,
        }

    return evaluate_one


# --------------------------------------------------------------------------- teacher forcing


@dataclass(frozen=True)
class TokenStats:
    """Teacher-forced scores of one reference answer."""

    tokens: int
    nll_sum: float
    errors: int  # reference tokens that were not the model's top-1 prediction

    @property
    def loss(self) -> float:
        return self.nll_sum / self.tokens if self.tokens else float("nan")

    @property
    def error_rate(self) -> float:
        return self.errors / self.tokens if self.tokens else float("nan")


def score_sequence(model: Any, input_ids: Sequence[int], labels: Sequence[int]) -> TokenStats:
    """Loss and top-1 errors on the labelled tokens (``labels[t] != -100``), each
    predicted from all tokens before it.

    The logit at position ``t`` predicts token ``t + 1``, so the label at ``t`` is
    scored by the logits at ``t - 1``.
    """
    import torch

    if len(input_ids) != len(labels):
        raise ValueError(f"{len(input_ids)} input ids but {len(labels)} labels")
    ids = torch.tensor([list(input_ids)], dtype=torch.long)
    targets = torch.tensor(list(labels)[1:], dtype=torch.long)
    mask = targets != IGNORE_INDEX
    if not bool(mask.any()):
        raise ValueError("no labelled tokens to score")
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logits, targets = logits[mask], targets[mask]
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    errors = (logits.argmax(dim=-1) != targets).sum()
    return TokenStats(int(targets.numel()), float(nll), int(errors))


def encode_for_scoring(
    tokenizer: Any, item: EvalItem, max_tokens: int = DEFAULT_MAX_SEQ_TOKENS
) -> tuple[list[int], list[int]]:
    """Token ids and labels of the reference conversation, rendered exactly as for
    training (labels on the assistant replies and their end-of-turn token only)."""
    from qtune.data.prompts import tokenize_for_training

    if not item.conversation:
        raise ValueError(f"item {item.id} has no reference conversation to score")
    encoded = tokenize_for_training(tokenizer, list(item.conversation), max_tokens)
    return encoded["input_ids"], encoded["labels"]


def load_scoring_model(adapter_dir: Path | None, base_model: str | None = None) -> tuple[Any, Any]:
    """The base model (float32 for exact losses) with the adapter applied, and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qtune.model import resolve_model

    base_path = resolve_model(base_model)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model.eval(), tokenizer


def teacher_forced_caller(
    model: Any, tokenizer: Any, max_tokens: int = DEFAULT_MAX_SEQ_TOKENS
) -> Callable[[EvalItem], Record]:
    def evaluate_one(item: EvalItem) -> Record:
        ids, labels = encode_for_scoring(tokenizer, item, max_tokens)
        scores = score_sequence(model, ids, labels)
        return {"question": item.question, **asdict(scores)}

    return evaluate_one

"""Preference tuning: DPO on pairs, KTO on answers rated good or bad, for every adapter
method of the registry (the loop is :mod:`qtune.finetune.train`'s).

The reference model is the starting point: the adapter given with ``--from`` (or the
fresh adapter, which equals the base model), frozen as it was before the first step and
kept beside the policy. Its log-probabilities are computed on the fly for the same
batches, so a resumed run recomputes exactly what it had.

Taken from TRL (`trl==1.16.0`): ``selective_log_softmax`` computes the answers'
log-probabilities. The losses follow TRL's ``DPOTrainer`` (``loss_type="sigmoid"``:
``-log σ(β((π_c − ρ_c) − (π_r − ρ_r)))``, Rafailov et al. 2023) and ``KTOTrainer``
(``loss_type="kto"``: ``1 − σ(β(r − z₀))`` for a good answer, ``1 − σ(β(z₀ − r))`` for a
bad one, with ``z₀`` the batch's KL estimate from mismatched prompt/answer pairs, detached
and clamped at 0; Ethayarajh et al. 2024); TRL computes them inside its trainers'
``_compute_loss``, which cannot be called without a Trainer, so they are restated here
in a few lines and tested against their definitions (tests/test_preference.py).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from qtune.finetune.batches import SeededOrder, collate, eval_batches, pad_token_id
from qtune.finetune.objectives import (
    StepResult,
    heldout_loss,
    micro_batch_contexts,
    reduce_sum,
)
from qtune.finetune.preference_data import (
    PreferenceExample,
    examples_digest,
    preference_examples,
)

from qtune.vocab import IGNORE_INDEX


def trl_selective_log_softmax():
    """TRL's log_softmax-then-gather. Importing trl sets VLLM_LOGGING_LEVEL for the whole
    process; the environment is put back so that a vLLM server started later logs as asked."""
    saved = dict(os.environ)
    try:
        from trl.trainer.utils import selective_log_softmax
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return selective_log_softmax


def completion_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probability of each row's answer tokens, their count)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    labels = batch.labels[:, 1:]
    mask = labels != IGNORE_INDEX
    gathered = trl_selective_log_softmax()(logits[:, :-1].float(), labels.clamp(min=0))
    return (gathered * mask).sum(-1), mask.sum(-1)


def dpo_losses(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """Per-pair DPO loss (TRL's sigmoid loss)."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin)


def kto_losses(policy, reference, good, z0, beta: float):
    """Per-answer KTO loss; ``good`` is a bool tensor, ``z0`` the detached KL estimate."""
    ratio = policy - reference
    return torch.where(good, 1 - torch.sigmoid(beta * (ratio - z0)),
                       1 - torch.sigmoid(beta * (z0 - ratio)))


def _rounded(scores: torch.Tensor) -> list[float]:
    return [round(float(score), 6) for score in scores]


def encode(tokenizer, prompt, answer: str, seq_len: int) -> dict:
    """The prompt and answer as the trainer renders them, loss on the final answer only."""
    from qtune.data.prompts import tokenize_for_training

    encoded = tokenize_for_training(
        tokenizer, [*prompt, {"role": "assistant", "content": answer}], seq_len)
    labels = encoded["labels"]
    end = max((i for i, t in enumerate(labels) if t != IGNORE_INDEX), default=-1)
    start = end
    while start > 0 and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    encoded["labels"] = [t if start <= i <= end else IGNORE_INDEX for i, t in enumerate(labels)]
    return encoded


class PreferenceObjective:
    """DPO or KTO over a run's preference examples (see the module docstring)."""

    def __init__(self, config, train_records: list, eval_records: list, tokenizer,
                 rank: int, world: int) -> None:
        self.config, self.tokenizer, self.rank, self.world = config, tokenizer, rank, world
        self.train, self.held, self.held_name = preference_examples(config)
        self.data_digest = examples_digest(self.train, self.held)
        if config.max_train_examples:
            self.train = self.train[: config.max_train_examples]
        self.sft_held_out = eval_batches(eval_records, tokenizer, config, rank, world)
        self.reference = None
        self.scores: dict[str, list[float]] = {}
        self.order = SeededOrder(len(self.train), config.seed)

    # ---- data ------------------------------------------------------------------------
    def _examples(self, step: int, micro: int) -> list[PreferenceExample]:
        indices = self.order.micro_batch(self.config, step, micro, self.rank, self.world)
        return [self.train[i] for i in indices]

    def _batch(self, examples: list[PreferenceExample], device):
        """DPO: chosen rows then rejected rows. KTO: each answer, then the answer of the
        next example under this prompt (the mismatched pairs of the KL estimate)."""
        seq_len, rows = self.config.seq_len, []
        if self.config.objective == "dpo":
            rows = ([encode(self.tokenizer, e.prompt, e.chosen, seq_len) for e in examples]
                    + [encode(self.tokenizer, e.prompt, e.rejected, seq_len) for e in examples])
        else:
            shifted = examples[1:] + examples[:1]
            rows = ([encode(self.tokenizer, e.prompt, e.chosen, seq_len) for e in examples]
                    + [encode(self.tokenizer, e.prompt, o.chosen, seq_len)
                       for e, o in zip(examples, shifted, strict=True)])
        return collate(rows, pad_token_id(self.tokenizer)).to(device)

    # ---- the objective ------------------------------------------------------------------
    def prepare(self, model, accelerator, extra: dict[str, Any]) -> None:
        """Freeze a copy of the starting model as the reference (before a checkpoint's
        weights are loaded, so a resumed run has the same reference)."""
        self.reference = copy.deepcopy(accelerator.unwrap_model(model)).eval()
        for parameter in self.reference.parameters():
            parameter.requires_grad_(False)

    def _losses(self, model, examples, device) -> tuple[torch.Tensor, ...]:
        """(per-example losses, policy and reference log-probs per answer token, how far
        each answer's log-probability moved from the reference, tokens processed)."""
        batch = self._batch(examples, device)
        n = len(examples)
        policy, counts = completion_logps(model, batch)
        with torch.no_grad():
            reference, _ = completion_logps(self.reference, batch)
        if self.config.objective == "dpo":
            losses = dpo_losses(policy[:n], policy[n:], reference[:n], reference[n:],
                                self.config.beta)
        else:
            z0 = (policy[n:] - reference[n:]).detach().mean().clamp(min=0)
            good = torch.tensor([e.good for e in examples], device=device)
            losses = kto_losses(policy[:n], reference[:n], good, z0, self.config.beta)
        moved = (policy[:n] - reference[:n]).detach()
        tokens = counts.clamp(min=1)
        return (losses, policy / tokens, reference / tokens, moved,
                int(batch.attention_mask.sum()))

    def step(self, model, step: int, accelerator) -> StepResult:
        count = self.config.grad_accum
        examples = [self._examples(step, m) for m in range(count)]
        total = reduce_sum(accelerator, sum(len(e) for e in examples))
        scale = self.world / max(total, 1.0)  # the mean over the step's examples
        loss_sum, tokens = 0.0, 0
        for index, context in micro_batch_contexts(model, accelerator, count):
            with context, accelerator.autocast():
                losses, *_, used = self._losses(model, examples[index], accelerator.device)
                accelerator.backward(losses.sum() * scale)
            loss_sum += float(losses.detach().sum())
            tokens += used
        return StepResult(reduce_sum(accelerator, loss_sum) / max(total, 1.0),
                          int(reduce_sum(accelerator, tokens)), int(total))

    @torch.no_grad()
    def evaluate(self, model, accelerator) -> dict[str, float]:
        """The SFT held-out loss, and on the held-out preferences: the loss and the
        accuracy (DPO: the preferred answer has the higher log-probability per token;
        KTO: a good answer became likelier than under the reference, a bad one less).
        Each held-out example's score is kept for the run's metrics (see `_scores`)."""
        model.eval()
        mine = self.held[self.rank::self.world]
        size, loss = self.config.batch_size, 0.0
        tuned, before = [], []
        for start in range(0, len(mine), size):
            examples = mine[start:start + size]
            with accelerator.autocast():
                losses, per_token, reference, moved, _ = self._losses(
                    model, examples, accelerator.device)
            n = len(examples)
            if self.config.objective == "dpo":
                tuned.append(per_token[:n] - per_token[n:])
                before.append(reference[:n] - reference[n:])
            else:
                good = torch.tensor([e.good for e in examples], device=accelerator.device)
                tuned.append(torch.where(good, moved, -moved))
                before.append(torch.zeros_like(moved))
            loss += float(losses.sum())
        model.train()
        scores = self._scores(tuned, accelerator)
        self.scores = {"preference_scores": _rounded(scores),
                       "preference_scores_before": _rounded(self._scores(before, accelerator))}
        total = reduce_sum(accelerator, len(mine))
        right = float((scores > 0).sum())
        return {"eval_loss": heldout_loss(model, self.sft_held_out, accelerator),
                "preference_accuracy": right / max(total, 1.0),
                "preference_loss": reduce_sum(accelerator, loss) / max(total, 1.0)}

    def _scores(self, parts: list[torch.Tensor], accelerator) -> torch.Tensor:
        """Every held-out example's score, in the held-out order, from all processes: DPO,
        the preferred answer's log-probability per token minus the other's; KTO, how far
        the answer moved the right way from the reference. Positive is right."""
        scores = torch.zeros(len(self.held), dtype=torch.float64, device=accelerator.device)
        if parts:
            scores[self.rank::self.world] = torch.cat(parts).double()
        return accelerator.reduce(scores, reduction="sum")

    def metrics(self, history: list[dict]) -> dict[str, Any]:
        scored = [row for row in history if row.get("preference_accuracy") is not None]
        first, last = (scored[0], scored[-1]) if scored else ({}, {})
        return {"objective": self.config.objective, "beta": self.config.beta,
                "preferences": self.config.preferences, "start_from": self.config.start_from,
                "preference_pairs" if self.config.objective == "dpo" else "preference_ratings":
                    len(self.train),
                "preference_heldout": f"{self.held_name}",
                "preference_data_digest": self.data_digest,
                "preference_accuracy_before": first.get("preference_accuracy"),
                "preference_accuracy": last.get("preference_accuracy"),
                "preference_loss_before": first.get("preference_loss"),
                "preference_loss": last.get("preference_loss"),
                # Per held-out example, at the end and under the reference: for paired
                # tests over the examples (the study's report).
                **self.scores}

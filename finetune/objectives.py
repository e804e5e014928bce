"""What a training step minimises: the objective of a run (``TrainConfig.objective``).

The loop in :mod:`qtune.finetune.train` is the same for every objective: it asks the
objective for one optimizer step's loss (forward and backward over the step's
micro-batches on this process) and, at evaluation points, for the held-out figures.

* ``sft``: next-token cross-entropy over the assistant tokens (:class:`SFTObjective`);
* ``dpo`` / ``kto``: preference tuning (:mod:`qtune.finetune.preference`), which also
  reports the held-out loss of the SFT data, so that one sees it is not wrecked.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from qtune.finetune.batches import Batch, ExampleStream, eval_batches

from qtune.vocab import IGNORE_INDEX


@dataclass
class StepResult:
    train_loss: float  # the step's loss, all processes together
    tokens: int  # tokens processed (padding excluded), all processes
    label_tokens: int  # tokens that carried loss, all processes


def reduce_sum(accelerator, value: float | int) -> float:
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(tensor, reduction="sum").item())


def token_loss_sum(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Summed next-token cross-entropy over assistant tokens (IGNORE_INDEX elsewhere)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    shifted = logits[:, :-1].float()
    return F.cross_entropy(shifted.reshape(-1, shifted.size(-1)),
                           batch.labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX,
                           reduction="sum")


@torch.no_grad()
def heldout_loss(model, batches: list[Batch], accelerator) -> float:
    """Mean assistant-token loss over the evaluation slice (all processes together)."""
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        batch = batch.to(accelerator.device)
        with accelerator.autocast():
            total += float(token_loss_sum(model, batch))
        count += batch.label_tokens
    model.train()
    total, count = reduce_sum(accelerator, total), reduce_sum(accelerator, count)
    return total / count if count else float("nan")


def micro_batch_contexts(model, accelerator, count: int):
    """(index, gradient-sync context) of each micro-batch: DDP syncs on the last only."""
    for index in range(count):
        last = index == count - 1
        yield index, (nullcontext() if last else accelerator.no_sync(model))


class SFTObjective:
    """Next-token loss on the assistant's answers (the default)."""

    def __init__(self, config, train_records: list, eval_records: list, tokenizer,
                 rank: int, world: int) -> None:
        self.config, self.rank, self.world = config, rank, world
        self.stream = ExampleStream(config.task, train_records, tokenizer, config)
        self.held_out = eval_batches(eval_records, tokenizer, config, rank, world)

    def prepare(self, model, accelerator, extra: dict[str, Any]) -> None:
        """Nothing to set up before the first step."""

    def step(self, model, step: int, accelerator) -> StepResult:
        micro_batches = [self.stream.micro_batch(step, m, self.rank, self.world)
                         .to(accelerator.device) for m in range(self.config.grad_accum)]
        label_tokens = reduce_sum(accelerator, sum(b.label_tokens for b in micro_batches))
        # DDP averages gradients over processes: scale so the result is the mean over
        # every assistant token of the step, whatever the padding and split.
        scale = self.world / max(label_tokens, 1.0)
        loss_sum = 0.0
        for index, context in micro_batch_contexts(model, accelerator, len(micro_batches)):
            with context, accelerator.autocast():
                summed = token_loss_sum(model, micro_batches[index])
                accelerator.backward(summed * scale)
            loss_sum += float(summed.detach())
        tokens = reduce_sum(accelerator, sum(int(b.attention_mask.sum()) for b in micro_batches))
        return StepResult(reduce_sum(accelerator, loss_sum) / max(label_tokens, 1.0),
                          int(tokens), int(label_tokens))

    def evaluate(self, model, accelerator) -> dict[str, float]:
        return {"eval_loss": heldout_loss(model, self.held_out, accelerator)}

    def metrics(self, history: list[dict]) -> dict[str, Any]:
        return {}

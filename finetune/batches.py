"""Training data as batches: records in a seeded order that depends only on (seed, step),
right-padded micro-batches, and the fixed held-out slice every run is scored on."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from qtune.finetune.config import TrainConfig

from qtune.errors import QtuneError
from qtune.vocab import CARVED_SPLIT, CHAT_TASK, IGNORE_INDEX

#: The evaluation slice is drawn with its own fixed seed so that every run (any method,
#: any training seed) is scored on the same examples.
EVAL_SAMPLE_SEED = 1234


def load_records(task: str, split: str, best_only: bool = True) -> list[dict]:
    """The task's records, with a clear error when the dataset is missing. ``best_only``
    (CounselChat): only each question's most upvoted answer, else every answer."""
    from qtune.data.datasets import load_task

    try:
        records = list(load_task(task, split, best_only=best_only))
    except (FileNotFoundError, OSError) as error:
        raise QtuneError(
            f"cannot load the {task} {split} split: {error}. Set QTUNE_DATA_DIR to the "
            "datasets folder (see `qtune data --help`)."
        ) from error
    if not records:
        raise QtuneError(f"the {task} {split} split is empty")
    return records


#: A held-out slice carved from an assistant's own training file: this share of its rows,
#: at least one batch's worth and at most the evaluation slice a run reads.
CARVED_SHARE = 0.1


def run_records(config: TrainConfig) -> tuple[list, list, dict]:
    """(training records, held-out records, what the held-out set is) of a run: a shipped
    data set's splits, or an assistant's own chat files, whose held-out rows are its
    validation file or a fixed, seeded slice carved off its training file (never its test
    data). Chat records are message lists with the assistant's system prompt filled in
    where a row has none."""
    if config.task != CHAT_TASK and config.eval_split == CARVED_SPLIT:
        train, held_out = carve_held_out(load_records(config.task, "train"), config)
        info = {"eval_split": CARVED_SPLIT, "heldout_rows": len(held_out),
                "heldout_fingerprint": fingerprint(held_out)}
    elif config.task != CHAT_TASK:
        train = load_records(config.task, "train")
        held_out = load_records(config.task, config.eval_split,
                                best_only=config.eval_pool == "best")
        info = {"eval_split": config.eval_split}
    else:
        from qtune.data.sources import assistant_sources, load_chat_source

        from qtune.assistants import get_assistant

        assistant = get_assistant(config.assistant)
        train_source, validation_source = assistant_sources(assistant)
        rows = [_with_system(r, assistant.system_prompt) for r in load_chat_source(train_source)]
        if validation_source is not None:
            train = rows
            held_out = [_with_system(r, assistant.system_prompt)
                        for r in load_chat_source(validation_source)]
            info = {"eval_split": f"validation ({validation_source.label})"}
        else:
            train, held_out = carve_held_out(rows, config)
            info = {"eval_split": CARVED_SPLIT, "heldout_rows": len(held_out),
                    "heldout_fingerprint": fingerprint(held_out)}
    if config.max_train_examples:
        train = train[: config.max_train_examples]
    if config.task == CHAT_TASK:  # one's own data: which rows trained it, recorded
        info["train_rows"], info["train_fingerprint"] = len(train), fingerprint(train)
    return train, held_out, info


def _with_system(messages: list[dict], prompt: str) -> list[dict]:
    """A row's own system prompt is kept; the assistant's fills in where it has none."""
    if messages[0]["role"] == "system":
        return messages
    return [{"role": "system", "content": prompt}, *messages]


def carve_held_out(rows: list, config: TrainConfig) -> tuple[list, list]:
    """A seeded slice of the rows (the same for every run of the same file), the rest."""
    wanted = config.eval_batches * config.batch_size
    size = max(min(wanted, int(len(rows) * CARVED_SHARE)), min(config.batch_size, len(rows) - 1))
    if size < 1:
        raise QtuneError(f"{len(rows)} rows cannot give both training and held-out data: add "
                         "rows, or give the assistant a validation file")
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(EVAL_SAMPLE_SEED))
    chosen = set(order[:size].tolist())
    return ([r for i, r in enumerate(rows) if i not in chosen],
            [r for i, r in enumerate(rows) if i in chosen])


def fingerprint(records: list) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    @property
    def label_tokens(self) -> int:
        """Tokens that carry loss (the label of position t is predicted from t-1)."""
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device),
                     self.labels.to(device))


def collate(examples: list[dict], pad_id: int) -> Batch:
    """Right-pad one micro-batch to its longest example (labels padded with IGNORE_INDEX)."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        ids[row, :n] = torch.tensor(example["input_ids"])
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(example["labels"])
    return Batch(ids, mask, labels)


class SeededOrder:
    """Positions of a data stream mapped to examples: one seeded permutation of ``size``
    examples per epoch, a function of (seed, position) only, so resuming is exact."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self._permutations: dict[int, list[int]] = {}

    def index(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if epoch not in self._permutations:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._permutations[epoch] = torch.randperm(self.size, generator=generator).tolist()
        return self._permutations[epoch][offset]

    def micro_batch(self, config: TrainConfig, step: int, micro: int, rank: int,
                    world: int) -> list[int]:
        """The examples of micro-batch ``micro`` of optimizer step ``step`` on ``rank``."""
        size = config.batch_size
        start = step * size * config.grad_accum * world + (micro * world + rank) * size
        return [self.index(p) for p in range(start, start + size)]


class ExampleStream:
    """Training examples in a seeded order that depends only on (seed, position).

    The stream concatenates one permutation of the split per epoch. Optimizer step
    ``s`` consumes ``batch_size * grad_accum * world`` consecutive positions; process
    ``rank`` takes its own micro-batches among them. Tokenisation happens on first use.
    """

    def __init__(self, task: str, records: list[dict], tokenizer, config: TrainConfig):
        self.task, self.records, self.tokenizer, self.config = task, records, tokenizer, config
        self.order = SeededOrder(len(records), config.seed)
        self._tokenized: dict[int, dict] = {}

    def tokenized(self, index: int) -> dict:
        if index not in self._tokenized:
            self._tokenized[index] = tokenize_record(
                self.tokenizer, self.task, self.records[index], self.config.seq_len
            )
        return self._tokenized[index]

    def micro_batch(self, step: int, micro: int, rank: int, world: int) -> Batch:
        indices = self.order.micro_batch(self.config, step, micro, rank, world)
        examples = [self.tokenized(i) for i in indices]
        return collate(examples, pad_token_id(self.tokenizer))


def tokenize_record(tokenizer, task: str, record: dict, seq_len: int) -> dict:
    from qtune.data.prompts import example_messages, tokenize_for_training

    # An assistant's own rows are message lists already (run_records filled the prompt in).
    messages = record if task == CHAT_TASK else example_messages(task, record)
    return tokenize_for_training(tokenizer, messages, seq_len)


def pad_token_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def eval_batches(records: list[dict], tokenizer, config: TrainConfig, rank: int,
                 world: int) -> list[Batch]:
    """This process's share of the fixed evaluation slice, as micro-batches."""
    generator = torch.Generator().manual_seed(EVAL_SAMPLE_SEED)
    order = torch.randperm(len(records), generator=generator).tolist()
    chosen = order[: config.eval_batches * config.batch_size][rank::world]
    examples = [tokenize_record(tokenizer, config.task, records[i], config.seq_len) for i in chosen]
    size = config.batch_size
    return [collate(examples[i:i + size], pad_token_id(tokenizer))
            for i in range(0, len(examples), size)]

"""The words every part of qtune shares, named once.

Tasks are the data sets a run can train on; assistants are the two products the UI and
the report show; methods are the adapter kinds the trainer builds. Served adapter names
follow ``<assistant>-<method>`` (``math-qwth``), which is how the UI and the report pair a
quantum-tuned adapter with its baseline.
"""

from __future__ import annotations

from qtune.assistants import shipped_assistants

#: Data sets a fine-tuning run can use (``qtune finetune --task``).
TASKS: tuple[str, ...] = ("math", "counselling", "cpsycound")
#: The task of a run on an assistant's own chat files (``qtune finetune --assistant FILE``).
CHAT_TASK = "chat"
#: The assistants users meet, as assistants/*.toml define them (CPsyCounD trains the
#: counselling assistant too).
ASSISTANTS: tuple[str, ...] = tuple(shipped_assistants())
#: The methods of the shipped adapters: the quantum-weighted tensor hybrid and its
#: baseline (every method the trainer builds is in the registry, qtune.finetune.methods).
METHODS: tuple[str, ...] = ("qwth", "lora")
#: How the shipped methods are called in the results report.
METHOD_LABELS: dict[str, str] = {"qwth": "QWTH", "lora": "LoRA"}
#: Tasks whose assistants counsel people (``crisis_screen = true`` in their files): the
#: served endpoint screens their chats for a crisis as the web UI does (qtune.serve.guard).
CRISIS_SCREENED_TASKS: tuple[str, ...] = tuple(
    task for assistant in shipped_assistants().values() if assistant.crisis_screen
    for task in assistant.tasks)
#: Held-out split used for the evaluation loss of each task (GSM8K has no official dev
#: split; the data loader carves one out of train).
#: A data set without a validation split is scored on a fixed, seeded slice carved off its
#: train split (a test split never chooses anything).
CARVED_SPLIT = "carved from train"
EVAL_SPLITS: dict[str, str] = {"math": "dev", "counselling": "validation",
                               "cpsycound": CARVED_SPLIT}
#: Preference objectives beside supervised fine-tuning; their adapters are served as
#: ``<assistant>-<method>-<objective>`` (a new version beside the one they started from).
PREFERENCE_OBJECTIVES: tuple[str, ...] = ("dpo", "kto")
#: Label of tokens that carry no loss (PyTorch's cross-entropy ignore index).
IGNORE_INDEX = -100


def adapter_name(assistant: str, method: str) -> str:
    """The served (and folder) name of an assistant's adapter: ``math-qwth``."""
    return f"{assistant}-{method}"


#: The adapters shipped in adapters/, in training order (configs/<name>.toml each).
SHIPPED_ADAPTERS: tuple[str, ...] = tuple(
    adapter_name(assistant, method) for assistant in ASSISTANTS for method in METHODS
)

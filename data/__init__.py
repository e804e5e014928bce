"""Datasets, prompts and answer checking for the math and counselling assistants.

The loaders read a local dataset folder ($QTUNE_DATA_DIR) or the Hugging Face Hub;
the prompt helpers turn records into chat messages and answer-only training labels;
the answer helpers pull the final number out of a math reply. Importing this package
is cheap: nothing here loads torch, transformers or the ``datasets`` library until used.
"""

from .answers import answers_match, extract_final_number, normalize_number
from .datasets import (
    GSM8K_DEV_SIZE,
    SPLITS,
    TASKS,
    CounselExample,
    Dialogue,
    MathExample,
    load_counselchat,
    load_cpsycound,
    load_gsm8k,
    load_task,
    resolve_data_dir,
    split_names,
)
from .prompts import (
    ASSISTANTS,
    IGNORE_INDEX,
    SYSTEM_PROMPTS,
    assistant_for,
    build_messages,
    example_messages,
    render_chat,
    system_prompt,
    tokenize_for_training,
)

__all__ = [
    "ASSISTANTS",
    "GSM8K_DEV_SIZE",
    "IGNORE_INDEX",
    "SPLITS",
    "SYSTEM_PROMPTS",
    "TASKS",
    "CounselExample",
    "Dialogue",
    "MathExample",
    "answers_match",
    "assistant_for",
    "build_messages",
    "example_messages",
    "extract_final_number",
    "load_counselchat",
    "load_cpsycound",
    "load_gsm8k",
    "load_task",
    "normalize_number",
    "render_chat",
    "resolve_data_dir",
    "split_names",
    "system_prompt",
    "tokenize_for_training",
]

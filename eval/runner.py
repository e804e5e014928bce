"""Run evaluation items concurrently, caching each result as it finishes (resumable)."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from qtune.eval.items import EvalItem, Record

from qtune.adapter_format import PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, weights_version
from qtune.config import DEFAULT_BASE_MODEL, settings
from qtune.errors import QtuneError

log = logging.getLogger(__name__)


class ResultCache:
    """Per-item results as JSON lines, appended (and flushed) as each item finishes.

    A line cut short by an interruption is ignored on reading, so the item is simply
    computed again.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._line_start_checked = False

    def load(self) -> dict[str, Record]:
        if self.path is None or not self.path.exists():
            return {}
        records: dict[str, Record] = {}
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "id" in record:
                    records[record["id"]] = record
        return records

    def append(self, record: Record) -> None:
        if self.path is None:
            return
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                if not self._line_start_checked:
                    self._end_partial_line()
                    self._line_start_checked = True
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                handle.flush()

    def _end_partial_line(self) -> None:
        """Close a line cut short by an interruption so the next record starts afresh."""
        assert self.path is not None
        with self.path.open("rb+") as handle:
            handle.seek(0, 2)
            if handle.tell() == 0:
                return
            handle.seek(-1, 2)
            if handle.read(1) != b"\n":
                handle.write(b"\n")


def run_items(
    items: Sequence[EvalItem],
    evaluate_one: Callable[[EvalItem], Record],
    cache: ResultCache,
    concurrency: int = 1,
    desc: str = "items",
    progress: bool = True,
) -> list[Record]:
    """Results for ``items`` in order: cached ones are reused, the others computed by
    ``evaluate_one`` (``concurrency`` at a time) and cached as they finish."""
    cached = cache.load()
    missing = [item for item in items if item.id not in cached]
    results = {item.id: cached[item.id] for item in items if item.id in cached}
    if missing:
        log.info("%s: %d cached, %d to compute", desc, len(results), len(missing))
    bar = _progress_bar(len(items), len(results), desc, enabled=progress and bool(missing))
    try:
        if concurrency <= 1:
            for item in missing:
                results[item.id] = _finish(item, evaluate_one(item), cache, bar)
        else:
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                futures = {pool.submit(evaluate_one, item): item for item in missing}
                for future in as_completed(futures):
                    item = futures[future]
                    results[item.id] = _finish(item, future.result(), cache, bar)
    finally:
        if bar is not None:
            bar.close()
    return [results[item.id] for item in items]


def _finish(item: EvalItem, record: Record, cache: ResultCache, bar: Any) -> Record:
    record = {"id": item.id, **record}
    cache.append(record)
    if bar is not None:
        bar.update(1)
    return record


def _progress_bar(total: int, done: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    import sys

    from tqdm import tqdm

    # In a log file (no terminal) a line every 30 s rather than a redrawn bar.
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=done,
        desc=desc,
        unit="item",
        dynamic_ncols=interactive,
        mininterval=0.5 if interactive else 30.0,
    )


def cache_path(kind: str, dataset: str, split: str, model: str, fingerprint: str, tag: str) -> Path:
    """Where the per-item results of one model on one dataset live (under QTUNE_HOME)."""
    safe_model = re.sub(r"[^A-Za-z0-9_.-]+", "_", model)
    return (
        settings().home
        / "eval"
        / f"{dataset}-{split}"
        / kind
        / f"{safe_model}.{fingerprint}.{tag}.jsonl"
    )


def model_fingerprint(model: str, adapters_dir: Path | None = None) -> str:
    """Short hash of the adapter weights served under ``model`` ("base" for the base
    model, "ext" for a name with no local adapter folder): retrained adapters get a
    fresh cache instead of stale results."""
    folder = adapter_dir_for(model, adapters_dir, required=False)
    if folder is None:
        return "base" if model == DEFAULT_BASE_MODEL else "ext"
    return weights_version(folder)


def adapter_dir_for(
    model: str, adapters_dir: Path | None = None, required: bool = True
) -> Path | None:
    """The PEFT folder of a served adapter name; ``None`` for the base model."""
    if model == DEFAULT_BASE_MODEL:
        return None
    folder = (adapters_dir or settings().adapters_dir) / model
    if (folder / PEFT_CONFIG_FILE).is_file() and (folder / PEFT_WEIGHTS_FILE).is_file():
        return folder
    if not required:
        return None
    raise QtuneError(
        f"no adapter folder for model {model!r} at {folder} ({PEFT_CONFIG_FILE} and "
        f"{PEFT_WEIGHTS_FILE}): train it with `qtune finetune` or pass a served base model"
    )

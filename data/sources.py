"""Where an assistant's chat data comes from: a JSONL file, a Parquet/CSV/Arrow file, a
folder the `datasets` library loads (``save_to_disk`` output or a folder of data files),
or a Hugging Face Hub id where the machine reaches the Hub, each with an optional column
mapping (LLaMA-Factory's ``columns``: qtune's key -> the data set's column) and a split.

Every row goes through :func:`qtune.data.formats.to_messages`, so every source gives the
same messages and the same problems; a problem names the source and the row (file:line
for JSONL, ``path[split]:row`` for the others).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtune.data.formats import FORMATS, RowProblem, to_messages

from qtune.assistants import HUB_ID, MAPPABLE_KEYS
from qtune.errors import QtuneError

#: Files read as JSON lines (one row per line); other files and folders go to `datasets`.
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
#: The `datasets` builder of each data-file suffix.
FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow", ".tsv": "csv"}
#: The split a source is read from when none is named.
DEFAULT_SPLIT = "train"


@dataclass(frozen=True)
class ChatSource:
    """One chat data source: where, in which format, with which columns, which split."""

    location: str
    fmt: str = "auto"
    columns: Mapping[str, str] = field(default_factory=dict)
    split: str = DEFAULT_SPLIT

    @property
    def path(self) -> Path:
        return Path(self.location).expanduser()

    @property
    def is_jsonl(self) -> bool:
        return self.path.is_file() and self.path.suffix.lower() not in FILE_BUILDERS

    @property
    def label(self) -> str:
        """How problems name this source."""
        return str(self.path) if self.is_jsonl else f"{self.location}[{self.split}]"

    def check(self) -> None:
        """Refuse a source that cannot be read at all (before anything heavy loads)."""
        if self.fmt != "auto" and self.fmt not in FORMATS:
            raise QtuneError(f"unknown chat format {self.fmt!r}: choose auto or "
                             f"{', '.join(FORMATS)}")
        bad = sorted(set(self.columns) - set(MAPPABLE_KEYS))
        if bad:
            raise QtuneError(f"column mapping of {self.location}: unknown key(s) "
                             f"{', '.join(bad)}; map any of {', '.join(MAPPABLE_KEYS)}")
        if not self.path.exists() and not HUB_ID.fullmatch(self.location):
            raise QtuneError(f"chat data {self.location} does not exist (give a JSONL, "
                             "Parquet, CSV or Arrow file, a datasets folder or a Hub id)")

    def rows(self) -> Iterator[tuple[int, list[dict[str, str]] | RowProblem]]:
        """(line or row number, messages or the row's problem) for every row."""
        self.check()
        raw = jsonl_rows(self.path) if self.is_jsonl else _dataset_rows(self)
        for number, row in raw:
            if isinstance(row, RowProblem):
                yield number, row
                continue
            try:
                yield number, to_messages(self.mapped(row), self.fmt)
            except RowProblem as problem:
                yield number, problem

    def mapped(self, row: Any) -> Any:
        """The row with the mapped columns under qtune's keys."""
        if not self.columns or not isinstance(row, dict):
            return row
        missing = [column for column in self.columns.values() if column not in row]
        if missing:
            raise RowProblem(f"no column {missing[0]!r} (the mapping names it; the row has "
                             f"{', '.join(map(str, row)) or 'none'})")
        renamed = {key: row[column] for key, column in self.columns.items()}
        return {**{k: v for k, v in row.items() if k not in self.columns.values()}, **renamed}


def jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, the parsed row or its RowProblem) of every non-blank line."""
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except ValueError as error:
                    yield number, RowProblem(f"not valid JSON ({error})")
    except UnicodeDecodeError as error:
        raise QtuneError(f"{path} is not UTF-8 text ({error})") from error


def _dataset_rows(source: ChatSource) -> Iterator[tuple[int, Any]]:
    for number, row in enumerate(load_dataset_split(source), start=1):
        # A CSV's "5" is read as the number 5: a table's numbers are the author's text.
        yield number, {k: str(v) if isinstance(v, int | float) and not isinstance(v, bool)
                       else v for k, v in _plain(row).items()}


def _plain(value: Any) -> Any:
    """Arrow values as JSON ones (numpy arrays of structs become lists of dicts)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def load_dataset_split(source: ChatSource) -> Any:
    """The `datasets` Dataset of a non-JSONL source's split, or a QtuneError that says why."""
    import datasets

    path, split = source.path, source.split
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file()
                              or (path / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise QtuneError(f"{path} has no split {split!r} (it has "
                                     f"{', '.join(loaded)}); set the split")
                return loaded[split]
            return loaded
        if path.is_file():
            builder = FILE_BUILDERS.get(path.suffix.lower())
            extra = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
            return datasets.load_dataset(builder, data_files=str(path), split="train", **extra)
        return datasets.load_dataset(str(path) if path.is_dir() else source.location,
                                     split=split)
    except QtuneError:
        raise
    except ValueError as error:
        if "split" in str(error).lower():
            raise QtuneError(f"{source.location} has no split {split!r} ({error})") from error
        raise QtuneError(f"{source.location} cannot be read as a data set ({error})") from error
    except (OSError, ConnectionError) as error:
        offline = "" if path.exists() else (
            " Is this machine offline, or the Hub unreachable? Save the data set with "
            "datasets' save_to_disk where the Hub is reachable and name that folder.")
        raise QtuneError(f"could not load {source.location} ({error}).{offline}") from error
    except Exception as error:  # datasets raises its own kinds (DatasetNotFoundError, ...)
        raise QtuneError(f"could not load {source.location} ({type(error).__name__}: "
                         f"{error}). Give a JSONL, Parquet, CSV or Arrow file, a datasets "
                         "folder, or a Hub id this machine can reach.") from error


def read_rows(source: ChatSource) -> tuple[list[tuple[int, list[dict[str, str]]]], list[str]]:
    """((row number, messages) of every good row, "source:row: problem" of every bad one)."""
    rows, problems = [], []
    for number, result in source.rows():
        if isinstance(result, RowProblem):
            problems.append(f"{source.label}:{number}: {result}")
        else:
            rows.append((number, result))
    return rows, problems


def load_chat_source(source: ChatSource) -> list[list[dict[str, str]]]:
    """Every row as a message list, or a QtuneError naming the bad rows as `qtune data
    check` prints them (training refuses data with any bad row)."""
    rows, problems = read_rows(source)
    if problems:
        more = f"\n... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise QtuneError(f"{len(problems)} bad rows in {source.label} (`qtune data check "
                         f"{source.location}` lists them all):\n" + "\n".join(problems[:10])
                         + more)
    if not rows:
        raise QtuneError(f"{source.label} holds no rows")
    return [messages for _, messages in rows]


def assistant_sources(assistant: Any) -> tuple[ChatSource, ChatSource | None]:
    """(train source, validation source or None) of an assistant with its own data."""
    columns = dict(assistant.columns)
    train = ChatSource(assistant.train, assistant.format, columns, assistant.train_split)
    if assistant.validation:
        return train, ChatSource(assistant.validation, assistant.format, columns,
                                 assistant.validation_split or DEFAULT_SPLIT)
    if assistant.validation_split:
        return train, ChatSource(assistant.train, assistant.format, columns,
                                 assistant.validation_split)
    return train, None

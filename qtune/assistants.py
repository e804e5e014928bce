"""Assistants are data: one TOML file each (``assistants/<name>.toml``, or any file named
with ``--assistant``) gives the name, the title the UI shows, the system prompt the model
is trained and served with, the data sets that train it, how it is evaluated and whether
the crisis screen applies. The shipped math and counselling assistants are two such
files; the system prompts, the crisis-screened tasks and the assistant list every part
uses are read from them here.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import tomllib

from qtune.config import PROJECT_ROOT
from qtune.errors import QtuneError

#: Where the shipped assistants are defined.
ASSISTANTS_DIR = PROJECT_ROOT / "assistants"
#: What a column mapping may name: the keys of a row that qtune.data.formats reads.
MAPPABLE_KEYS = ("messages", "conversations", "system", "instruction", "input", "output")
#: A Hugging Face Hub data set id (owner/name), as `train` and `validation` may name one.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
#: What an assistant can be evaluated on (held-out loss always).
EVALUATIONS = ("heldout_loss", "final_number", "next_token_error", "exact_match")


@dataclass(frozen=True)
class AssistantConfig:
    """One assistant (TOML keys use these names)."""

    name: str
    """The assistant's name: adapters are served as `<name>-<method>`."""
    title: str
    """What the UI calls it."""
    system_prompt: str
    """The system prompt it is trained with and answers with (in the UI and on the endpoint, unless a request brings its own)."""
    tasks: tuple[str, ...] = ()
    """The data sets that train it (a training run's `task`); a task trains one assistant."""
    evaluation: tuple[str, ...] = ("heldout_loss",)
    """What `qtune eval` measures: heldout_loss, and final_number, next_token_error or exact_match where the answers suit them."""
    crisis_screen: bool = False
    """Screen its chats for a crisis (resources first, unsafe answers replaced), in the UI and on the endpoint."""
    position: int = 100
    """Where lists show it (lowest first, then by name)."""
    train: str = ""
    """Its own chat data to train on, instead of `tasks`: a JSONL (OpenAI, ShareGPT or Alpaca rows), Parquet, CSV or Arrow file, a folder the datasets library loads, or a Hub id (a path is relative to this file)."""
    validation: str = ""
    """Held-out chat data that scores the runs, in the same kinds as `train` (unset: `validation_split` of `train`, else a fixed, seeded slice of `train` is carved off; a test split is never used)."""
    format: str = "auto"
    """The rows' format: auto (each row's own), openai, sharegpt or alpaca."""
    columns: dict[str, str] = dataclasses.field(default_factory=dict)
    """Column mapping, qtune's key to the data's column, e.g. `{instruction = "question", output = "answer"}` (keys: messages, conversations, system, instruction, input, output)."""
    train_split: str = "train"
    """The split of `train` to train on (a datasets folder or Hub id; a single file is its train split)."""
    validation_split: str = ""
    """The split that scores the runs: of `validation` (default train), or of `train` when `validation` is unset."""

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str) -> AssistantConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise QtuneError(f"{where}: unknown assistant setting(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        missing = sorted({"name", "title", "system_prompt"} - set(values))
        if missing:
            raise QtuneError(f"{where}: {', '.join(missing)} missing")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        if not isinstance(values.get("columns", {}), dict) or not all(
                isinstance(v, str) for v in values.get("columns", {}).values()):
            raise QtuneError(f"{where}: columns must be a table of key = \"column\" names")
        try:
            return cls(**values).validate(where)
        except TypeError as error:
            raise QtuneError(f"{where}: {error}") from error

    def validate(self, where: str) -> AssistantConfig:
        for name in ("name", "title", "system_prompt"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise QtuneError(f"{where}: {name} must be non-empty text")
        if not self.name.replace("_", "").isalnum() or not self.name.islower():
            raise QtuneError(f"{where}: name {self.name!r} must be lower-case letters, digits "
                             "and '_' (it starts the adapters' names)")
        bad = sorted(set(self.evaluation) - set(EVALUATIONS))
        if bad or "heldout_loss" not in self.evaluation:
            raise QtuneError(f"{where}: evaluation must hold heldout_loss and may add "
                             f"{', '.join(EVALUATIONS[1:])} (got {list(self.evaluation)})")
        if not isinstance(self.crisis_screen, bool):
            raise QtuneError(f"{where}: crisis_screen must be true or false")
        # The format is checked where the data is read (qtune.data.formats lists them).
        bad_keys = sorted(set(self.columns) - set(MAPPABLE_KEYS))
        if bad_keys:
            raise QtuneError(f"{where}: columns maps unknown key(s) {', '.join(bad_keys)}; "
                             f"map any of {', '.join(MAPPABLE_KEYS)}")
        if self.train and self.tasks:
            raise QtuneError(f"{where}: give either tasks (shipped data sets) or train (your "
                             "own chat file), not both")
        return self

    @property
    def own_data(self) -> bool:
        return bool(self.train)


def read_assistant(path: Path) -> AssistantConfig:
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise QtuneError(f"assistant file {path} cannot be read ({error})") from error
    except tomllib.TOMLDecodeError as error:
        raise QtuneError(f"assistant file {path} is not valid TOML: {error}") from error
    for key in ("train", "validation"):  # relative to the assistant file, as people write them
        if isinstance(values.get(key), str) and values[key]:
            values[key] = _data_location(path.parent, values[key])
    return AssistantConfig.from_dict(values, str(path))


def _data_location(folder: Path, value: str) -> str:
    """A path relative to the assistant file, or a Hub id (owner/name) kept as written
    when no such path exists."""
    local = (folder / value).expanduser().resolve()
    if not local.exists() and HUB_ID.fullmatch(value):
        return value
    return str(local)


@cache
def shipped_assistants() -> dict[str, AssistantConfig]:
    """The assistants defined in assistants/, in list order."""
    found = [read_assistant(path) for path in sorted(ASSISTANTS_DIR.glob("*.toml"))]
    found.sort(key=lambda a: (a.position, a.name))
    assistants: dict[str, AssistantConfig] = {}
    owners: dict[str, str] = {}
    for assistant in found:
        if assistant.name in assistants:
            raise QtuneError(f"two files in {ASSISTANTS_DIR} define assistant {assistant.name!r}")
        for task in assistant.tasks:
            if task in owners:
                raise QtuneError(f"task {task!r} trains both {owners[task]!r} and "
                                 f"{assistant.name!r}: a task trains one assistant")
            owners[task] = assistant.name
        assistants[assistant.name] = assistant
    return assistants


def get_assistant(name_or_file: str) -> AssistantConfig:
    """A shipped assistant by name, or the assistant a TOML file defines."""
    if name_or_file in shipped_assistants():
        return shipped_assistants()[name_or_file]
    path = Path(name_or_file).expanduser()
    if path.suffix == ".toml" or path.is_file():
        return read_assistant(path)
    raise QtuneError(f"unknown assistant {name_or_file!r}: choose one of "
                     f"{', '.join(shipped_assistants())}, or give an assistant's .toml file")


def assistant_of_task(task: str | None) -> AssistantConfig | None:
    """The shipped assistant a data set trains (None for an unknown task)."""
    return next((a for a in shipped_assistants().values() if task in a.tasks), None)


@dataclass(frozen=True)
class RecordedAssistant:
    """What an adapter records of the assistant it was trained as (its metrics.json
    ``assistant``): enough for the server and the UI to serve it without the file."""

    name: str
    title: str
    system_prompt: str
    crisis_screen: bool = False

    @classmethod
    def of(cls, assistant: AssistantConfig) -> RecordedAssistant:
        return cls(assistant.name, assistant.title, assistant.system_prompt,
                   assistant.crisis_screen)

    @classmethod
    def from_record(cls, record: Any) -> RecordedAssistant | None:
        """The record as metrics.json holds it, or None when it is missing or malformed."""
        if not isinstance(record, dict):
            return None
        name, prompt = record.get("name"), record.get("system_prompt")
        if not all(isinstance(text, str) and text.strip() for text in (name, prompt)):
            return None
        title = record.get("title") if isinstance(record.get("title"), str) else name
        return cls(name, title or name, prompt, record.get("crisis_screen") is True)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def adapter_assistant(folder: Path, name: str = "") -> RecordedAssistant | None:
    """The assistant an adapter serves: the one its metrics.json records, else the shipped
    assistant of its task (its training config, else its ``<assistant>-<method>`` name);
    None when nothing tells."""
    from qtune import adapter_format as fmt

    try:
        recorded = fmt.read_json(Path(folder) / fmt.METRICS_FILE).get("assistant")
    except (OSError, ValueError, AttributeError, QtuneError):
        recorded = None
    found = RecordedAssistant.from_record(recorded)
    if found is not None:
        return found
    task = fmt.adapter_task(folder, name)
    shipped = assistant_of_task(task) or shipped_assistants().get(task or "")
    return RecordedAssistant.of(shipped) if shipped else None


def adapter_system_prompt(folder: Path, name: str = "") -> str | None:
    """The system prompt an adapter was trained with (None when nothing tells)."""
    assistant = adapter_assistant(folder, name)
    return assistant.system_prompt if assistant else None

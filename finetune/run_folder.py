"""A run's output folder is never overwritten by accident.

Starting a run where a checkpoint or a finished adapter already is asks for ``--resume``
(continue it) or ``--overwrite`` (start afresh); so does a folder holding anything else
(a PEFT adapter trained elsewhere, the user's own files). ``--overwrite`` removes only what
belongs to a run (the files named in :mod:`qtune.adapter_format`), never other files the
user keeps there. A run that fails before its first checkpoint removes what it created,
so no empty or half-written folder is left behind.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from qtune.finetune.config import TrainConfig

from qtune import adapter_format as fmt
from qtune.errors import QtuneError

log = logging.getLogger(__name__)

#: Everything a run writes into its folder (files and folders).
RUN_ENTRIES = (fmt.PEFT_CONFIG_FILE, fmt.PEFT_WEIGHTS_FILE, fmt.QWTH_DIR, fmt.QWTH_METADATA_FILE,
               fmt.TRAINING_CONFIG_FILE, fmt.METRICS_FILE, fmt.LOG_FILE, fmt.LOSS_PLOT_FILE,
               fmt.CARD_FILE, fmt.CHECKPOINT_DIR)


def checkpoint_file(folder: Path) -> Path:
    return folder / fmt.CHECKPOINT_DIR / fmt.CHECKPOINT_FILE


def is_finished(folder: Path) -> bool:
    """A finished run leaves its adapter and metrics.json."""
    return (folder / fmt.METRICS_FILE).is_file() and (folder / fmt.PEFT_WEIGHTS_FILE).is_file()


def clear_run(folder: Path) -> None:
    """Remove what a run wrote into ``folder`` (and nothing else)."""
    for name in RUN_ENTRIES:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _contents(folder: Path) -> str:
    """What a folder holds, in words ("" for a missing or empty folder)."""
    if not folder.is_dir():
        return ""
    names = sorted(entry.name for entry in folder.iterdir())
    if not names:
        return ""
    if (folder / fmt.PEFT_WEIGHTS_FILE).exists() or (folder / fmt.PEFT_CONFIG_FILE).exists():
        return "an adapter (" + ", ".join(n for n in names if n.startswith("adapter_")) + ")"
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"other files ({shown})"


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".qtune-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise QtuneError(f"cannot write to the output folder {folder}: {error}") from error


@dataclass
class RunFolder:
    """The output folder a run has claimed, and whether this run created it."""

    path: Path
    created: bool

    @classmethod
    def claim(cls, config: TrainConfig) -> RunFolder:
        """Check that the run may write into its folder; clear it on --overwrite."""
        path = config.output_dir
        has_checkpoint, finished = checkpoint_file(path).is_file(), is_finished(path)
        if config.overwrite and (has_checkpoint or finished or path.is_dir()):
            log.info("--overwrite: clearing the previous run in %s", path)
            try:
                clear_run(path)
            except OSError as error:
                raise QtuneError(f"cannot clear the previous run in {path}: {error}") from error
        elif config.resume and finished and not has_checkpoint:
            raise QtuneError(
                f"{path} holds a finished run (no checkpoint to resume): nothing to continue. "
                "Pass --overwrite to train it again, or choose another --output."
            )
        elif not config.resume and (has_checkpoint or finished):
            what = ("an unfinished run's checkpoint" if has_checkpoint
                    else "a finished adapter")
            raise QtuneError(
                f"{path} already holds {what}. Pass --resume to continue it, --overwrite to "
                "start afresh (this deletes the previous run's files), or choose another "
                "--output."
            )
        elif not config.resume and not config.overwrite and _contents(path):
            raise QtuneError(
                f"{path} already holds {_contents(path)}, not written by a qtune run. Pass "
                "--overwrite to train there anyway (the adapter files a run writes are "
                "replaced; other files stay), or choose another --output."
            )
        created = not path.exists()
        check_writable(path)
        return cls(path, created)

    def release_after_failure(self) -> None:
        """After a failure before the first checkpoint, remove what this run created."""
        if checkpoint_file(self.path).is_file():
            return  # something to resume from: keep everything
        try:
            if self.created:
                shutil.rmtree(self.path)
            else:
                for name in (fmt.TRAINING_CONFIG_FILE, fmt.LOG_FILE):
                    (self.path / name).unlink(missing_ok=True)
        except OSError as error:
            log.warning("could not remove the unfinished run in %s: %s", self.path, error)

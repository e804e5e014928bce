"""Find and check LoRA adapters before vLLM sees them.

vLLM reports a broken adapter late (at the first request, or with a long traceback at
start-up) and accepts some adapters it then serves wrongly. Everything here is read
from the files with numpy (no torch, no model loaded), so checking the shipped
adapters takes milliseconds:

* the folder holds ``adapter_config.json`` and ``adapter_model.safetensors``;
* the config is readable JSON with ``peft_type`` LORA, no ``modules_to_save``, no DoRA,
  no trained biases, and a rank vLLM can serve;
* every adapted module exists in the base model, and every ``lora_A``/``lora_B``
  tensor has the shape the base model's ``config.json`` implies. An adapter trained
  on another base model fails here with "exported for another base model";
* every weight is read in full and is finite and below ``MAX_ABS_WEIGHT``: one NaN in
  one adapter, once requested, left vLLM answering every model with empty text.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from qtune import adapter_format as fmt
from qtune.adapter_format import BaseShapes, vllm_max_lora_rank
from qtune.errors import QtuneError

__all__ = ["AdapterInfo", "BaseShapes", "check_name", "discover_adapters", "stage_snapshot",
           "validate_adapter", "validate_all", "vllm_max_lora_rank"]


#: vLLM fuses these projections into one layer (Llama's packed_modules_mapping); its
#: --lora-target-modules names the fused layer.
VLLM_PACKED_MODULES = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj",
                       "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj"}


def vllm_target_modules(adapters: list[AdapterInfo]) -> list[str]:
    """vLLM's layers that the adapters adapt (its --lora-target-modules): on CPU vLLM runs
    LoRA's extra matmuls on every enabled layer whatever the adapters target, so enabling
    only these saves that work (docs/benchmarks.md)."""
    return sorted({VLLM_PACKED_MODULES.get(module, module)
                   for adapter in adapters for module in adapter.target_modules})


@dataclass(frozen=True)
class AdapterInfo:
    """A checked adapter: the name it is served under, its folder, rank and weights version."""

    name: str
    path: Path
    rank: int
    target_modules: tuple[str, ...]
    version: str = "unknown"


def _read_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / fmt.PEFT_CONFIG_FILE).read_text())
    except ValueError as error:
        raise QtuneError(f"{fmt.PEFT_CONFIG_FILE} is not valid JSON ({error})") from error
    except OSError as error:
        raise QtuneError(f"{fmt.PEFT_CONFIG_FILE} cannot be read ({error})") from error
    if not isinstance(config, dict):
        raise QtuneError(f"{fmt.PEFT_CONFIG_FILE} does not hold a JSON object")
    return config


def _check_config(config: dict) -> int:
    """Check the PEFT settings vLLM cannot serve; return the highest rank."""
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise QtuneError(f"peft_type is {config.get('peft_type')!r}; vLLM serves only LORA adapters")
    if config.get("modules_to_save"):
        raise QtuneError(
            f"modules_to_save={config['modules_to_save']} (fully trained extra layers); "
            "vLLM cannot serve them. Retrain without modules_to_save."
        )
    if config.get("use_dora"):
        raise QtuneError("use_dora=true; vLLM does not serve DoRA adapters")
    if config.get("bias", "none") != "none":
        raise QtuneError(f"bias={config['bias']!r}; vLLM serves LoRA without trained biases")
    ranks = [config.get("r")] + list((config.get("rank_pattern") or {}).values())
    for rank in ranks:
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise QtuneError(f"rank r={rank!r} is not a positive integer")
        if rank > fmt.VLLM_LORA_RANKS[-1]:
            raise QtuneError(f"rank r={rank} exceeds vLLM's maximum LoRA rank {fmt.VLLM_LORA_RANKS[-1]}")
    return max(ranks)


def _declared_rank(module: str, config: dict) -> int:
    """The rank adapter_config.json declares for ``module`` (rank_pattern, else r)."""
    for pattern, rank in (config.get("rank_pattern") or {}).items():
        if module == pattern or module.endswith("." + pattern):
            return rank
        with contextlib.suppress(re.error):
            if re.fullmatch(pattern, module):
                return rank
    return config["r"]


def _check_ranks(shapes: dict[str, list[int]], config: dict) -> None:
    """Every lora_A / lora_B tensor has the rank the config declares: vLLM sizes its
    buffers from the config and fails at start (or at the first request) otherwise."""
    for key, shape in shapes.items():
        match = re.match(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])", key)
        if not match or len(shape) != 2:
            continue
        rank = shape[0] if match["part"] == "A" else shape[1]
        declared = _declared_rank(match["module"], config)
        if rank != declared:
            raise QtuneError(
                f"tensor {key} has rank {rank} but {fmt.PEFT_CONFIG_FILE} declares r={declared}: "
                "the config does not describe these weights; export the adapter again"
            )


def weights_refusal(folder: Path) -> str | None:
    """Why the adapter in ``folder`` must not be served, judged on every weight (None:
    every value is finite and sane). Shared by `qtune serve`, `qtune adapters load` and the
    runtime-load route of the running server (qtune.serve.guard)."""
    try:
        problem = fmt.weight_problem(folder / fmt.PEFT_WEIGHTS_FILE)
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{fmt.PEFT_WEIGHTS_FILE} cannot be read in full ({error})"
    if problem:
        return (f"{fmt.PEFT_WEIGHTS_FILE}: {problem}; it would poison the engine for every "
                "model. Retrain or re-export it")
    return None


def same_base(declared: str, base_names: set[str]) -> bool:
    """Whether an adapter's ``base_model_name_or_path`` names the served base model: the
    last path component, case aside ("HuggingFaceTB/SmolLM2-135M-Instruct" names the
    folder ".../smollm2-135m-instruct")."""
    def tail(name: str) -> str:
        return str(name).rstrip("/").rsplit("/", 1)[-1].lower()

    return tail(declared) in {tail(name) for name in base_names if name}


def _check_base_name(config: dict, base_names: set[str]) -> None:
    declared = config.get("base_model_name_or_path")
    if declared and not same_base(declared, base_names):
        raise QtuneError(
            f"it was trained on {declared!r}, but the served base model is "
            f"{sorted(n for n in base_names if n)[0]!r}: serve it with that base model, or, "
            "if this base is a renamed copy of it, pass --ignore-base-name"
        )


def validate_adapter(name: str, path: str | Path, base: BaseShapes,
                     base_names: set[str] | None = None) -> AdapterInfo:
    """Check one adapter folder; raise QtuneError naming the adapter and the reason.

    ``base_names``: the names the served base model goes by; an adapter whose config
    names another base is refused (None: not checked)."""
    folder = Path(path).expanduser()
    try:
        if not folder.is_dir():
            raise QtuneError(f"{folder} is not a folder")
        for needed in (fmt.PEFT_CONFIG_FILE, fmt.PEFT_WEIGHTS_FILE):
            if not (folder / needed).is_file():
                raise QtuneError(f"{needed} is missing from {folder}")
        config = _read_config(folder)
        rank = _check_config(config)
        if base_names is not None:
            _check_base_name(config, base_names)
        try:
            shapes = fmt.safetensors_shapes(folder / fmt.PEFT_WEIGHTS_FILE)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise QtuneError(
                f"{fmt.PEFT_WEIGHTS_FILE} is not a readable safetensors file ({error})") from error
        _check_ranks(shapes, config)
        problem = weights_refusal(folder)
        if problem:
            raise QtuneError(problem)
        try:
            modules = fmt.check_module_shapes(fmt.peft_module_shapes(shapes), base)
        except QtuneError as error:
            raise QtuneError(f"adapter {error}") from error
        version = fmt.weights_version(folder)
    except QtuneError as error:
        raise QtuneError(f"adapter {name!r} ({folder}): {error}") from error
    return AdapterInfo(name=name, path=folder.resolve(), rank=rank, target_modules=modules,
                       version=version)


def stage_snapshot(adapter: AdapterInfo, served_root: Path) -> Path:
    """The folder vLLM is given for ``adapter``: a copy of its PEFT files (and card files,
    see ``SNAPSHOT_FILES``) named ``<name>@<version>`` under ``served_root``, so that ``/v1/models`` reports the version
    it serves (its ``root``) and retraining the adapter while it is served changes nothing
    until the next start. Hard links where the file system allows (no bytes copied)."""
    target = served_root / fmt.snapshot_name(adapter.name, adapter.version)
    wanted = [name for name in fmt.SNAPSHOT_FILES if (adapter.path / name).is_file()]
    with contextlib.suppress(OSError):  # the same weights (the name) and files: reuse it
        if all((target / name).read_bytes() == (adapter.path / name).read_bytes()
               for name in wanted if name != fmt.PEFT_WEIGHTS_FILE) and (
                target / fmt.PEFT_WEIGHTS_FILE).is_file():
            return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in wanted:  # the card files are optional (an adapter trained elsewhere)
        try:
            os.link(adapter.path / name, partial / name)
        except OSError:
            shutil.copy2(adapter.path / name, partial / name)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def discover_adapters(folder: str | Path) -> list[tuple[str, Path]]:
    """Every sub-folder of ``folder`` that looks like an adapter, named after the folder.

    A sub-folder counts when it holds either adapter file, so a half-copied adapter is
    reported as broken rather than silently left out. Hidden folders are ignored.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise QtuneError(f"adapters folder {root} does not exist")
    found = []
    for child in sorted(root.iterdir()):
        if child.name.startswith((".", "_")) or not child.is_dir():
            continue
        if (child / fmt.PEFT_CONFIG_FILE).exists() or (child / fmt.PEFT_WEIGHTS_FILE).exists():
            found.append((child.name, child))
    return found


def trained_on_other_base(folder: Path, base_names: set[str]) -> str | None:
    """The base an adapter folder records when it is not the served one, else None (also
    when the record is missing or unreadable: the full check reports those)."""
    try:
        declared = _read_config(folder).get("base_model_name_or_path")
    except QtuneError:
        return None
    if isinstance(declared, str) and declared and not same_base(declared, base_names):
        return declared
    return None


def check_name(name: str, base_name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise QtuneError(
            f"adapter name {name!r} must start with a letter or digit and use only letters, "
            "digits, '.', '_' and '-' (it becomes the model name clients ask for)"
        )
    if name == base_name:
        raise QtuneError(f"adapter name {name!r} is the base model's served name; rename it")


def validate_all(
    adapters: list[tuple[str, Path]],
    base: BaseShapes,
    base_name: str,
    skip_broken: bool = False,
    base_names: set[str] | None = None,
) -> tuple[list[AdapterInfo], list[str]]:
    """Check every adapter. Returns (good adapters, problems of the skipped ones).

    Without ``skip_broken`` the first problem is raised, naming the adapter.
    """
    good: list[AdapterInfo] = []
    problems: list[str] = []
    seen: set[str] = set()
    for name, path in adapters:
        try:
            check_name(name, base_name)
            if name in seen:
                raise QtuneError(f"two adapters are named {name!r}; served names must be unique")
            good.append(validate_adapter(name, path, base, base_names))
            seen.add(name)
        except QtuneError as error:
            if not skip_broken:
                raise QtuneError(
                    f"{error}\nFix or remove it, or pass --skip-broken-adapters to start without it."
                ) from error
            problems.append(str(error))
    return good, problems

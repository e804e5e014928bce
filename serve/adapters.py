"""Find and check LoRA adapters before vLLM sees them.

vLLM reports a broken adapter late (at the first request, or with a long traceback at
start-up) and accepts some adapters it then serves wrongly. Everything here is read
from file headers only (no torch, no weights loaded), so checking the shipped
adapters takes milliseconds:

* the folder holds ``adapter_config.json`` and ``adapter_model.safetensors``;
* the config is readable JSON with ``peft_type`` LORA, no ``modules_to_save``, no DoRA,
  no trained biases, and a rank vLLM can serve;
* every adapted module exists in the base model, and every ``lora_A``/``lora_B``
  tensor has the shape the base model's ``config.json`` implies. An adapter trained
  on another base model fails here with "exported for another base model".
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from qtune.errors import QtuneError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

#: The values vLLM accepts for ``--max-lora-rank`` (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

_LORA_KEY = re.compile(
    r"layers\.(?P<layer>\d+)\.(?:\w+\.)*?(?P<module>\w+)\.lora_(?P<part>[AB])(?:\.\w+)?\.weight$"
)


@dataclass(frozen=True)
class AdapterInfo:
    """A checked adapter: the name it is served under, its folder and its rank."""

    name: str
    path: Path
    rank: int
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class BaseShapes:
    """What a decoder-only base model's linear layers look like, from its config.json."""

    num_layers: int
    dims: dict[str, tuple[int, int]]  # module name -> (in_features, out_features)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> BaseShapes:
        config_path = Path(model_dir) / "config.json"
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError) as error:
            raise QtuneError(f"cannot read the base model's {config_path}: {error}") from error
        return cls.from_config(config)

    @classmethod
    def from_config(cls, config: dict) -> BaseShapes:
        config = config.get("text_config", config)
        hidden = config["hidden_size"]
        heads = config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads") or heads
        head_dim = config.get("head_dim") or hidden // heads
        inter = config["intermediate_size"]
        q_out, kv_out = heads * head_dim, kv_heads * head_dim
        dims = {
            "q_proj": (hidden, q_out),
            "k_proj": (hidden, kv_out),
            "v_proj": (hidden, kv_out),
            "o_proj": (q_out, hidden),
            "gate_proj": (hidden, inter),
            "up_proj": (hidden, inter),
            "down_proj": (inter, hidden),
        }
        return cls(num_layers=config["num_hidden_layers"], dims=dims)


def vllm_max_lora_rank(ranks: list[int]) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that fits every rank."""
    highest = max(ranks, default=1)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= highest:
            return allowed
    raise QtuneError(f"LoRA rank {highest} exceeds vLLM's maximum of {VLLM_LORA_RANKS[-1]}")


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, read from the safetensors header alone."""
    with path.open("rb") as handle:
        raw_len = handle.read(8)
        if len(raw_len) != 8:
            raise ValueError("file is shorter than a safetensors header")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > 100_000_000:
            raise ValueError("implausible safetensors header length")
        header = json.loads(handle.read(header_len))
    return {name: meta["shape"] for name, meta in header.items() if name != "__metadata__"}


def _read_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
    except ValueError as error:
        raise QtuneError(f"{ADAPTER_CONFIG} is not valid JSON ({error})") from error
    except OSError as error:
        raise QtuneError(f"{ADAPTER_CONFIG} cannot be read ({error})") from error
    if not isinstance(config, dict):
        raise QtuneError(f"{ADAPTER_CONFIG} does not hold a JSON object")
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
        if rank > VLLM_LORA_RANKS[-1]:
            raise QtuneError(f"rank r={rank} exceeds vLLM's maximum LoRA rank {VLLM_LORA_RANKS[-1]}")
    return max(ranks)


def _check_shapes(shapes: dict[str, list[int]], base: BaseShapes) -> tuple[str, ...]:
    """Match every LoRA tensor against the base model; return the adapted module names."""
    modules: set[str] = set()
    for key, shape in shapes.items():
        match = _LORA_KEY.search(key)
        if not match:
            if "lora_" in key:
                raise QtuneError(f"tensor {key} adapts a layer vLLM cannot serve with LoRA")
            continue
        module, layer = match["module"], int(match["layer"])
        if module not in base.dims:
            raise QtuneError(
                f"tensor {key} adapts {module!r}, which the base model does not have "
                f"(it has {', '.join(base.dims)}): adapter exported for another base model"
            )
        if layer >= base.num_layers:
            raise QtuneError(
                f"tensor {key} adapts layer {layer} but the base model has {base.num_layers} "
                "layers: adapter exported for another base model"
            )
        in_dim, out_dim = base.dims[module]
        want_in = shape[1] == in_dim if match["part"] == "A" else shape[0] == out_dim
        if len(shape) != 2 or not want_in:
            expected = f"(r, {in_dim})" if match["part"] == "A" else f"({out_dim}, r)"
            raise QtuneError(
                f"tensor {key} has shape {tuple(shape)}, the base model needs {expected}: "
                "adapter exported for another base model"
            )
        modules.add(module)
    if not modules:
        raise QtuneError(f"{ADAPTER_WEIGHTS} holds no lora_A/lora_B tensors")
    return tuple(sorted(modules))


def validate_adapter(name: str, path: str | Path, base: BaseShapes) -> AdapterInfo:
    """Check one adapter folder; raise QtuneError naming the adapter and the reason."""
    folder = Path(path).expanduser()
    try:
        if not folder.is_dir():
            raise QtuneError(f"{folder} is not a folder")
        for needed in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            if not (folder / needed).is_file():
                raise QtuneError(f"{needed} is missing from {folder}")
        rank = _check_config(_read_config(folder))
        try:
            shapes = safetensors_shapes(folder / ADAPTER_WEIGHTS)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise QtuneError(f"{ADAPTER_WEIGHTS} is not a readable safetensors file ({error})") from error
        modules = _check_shapes(shapes, base)
    except QtuneError as error:
        raise QtuneError(f"adapter {name!r} ({folder}): {error}") from error
    return AdapterInfo(name=name, path=folder.resolve(), rank=rank, target_modules=modules)


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
        if (child / ADAPTER_CONFIG).exists() or (child / ADAPTER_WEIGHTS).exists():
            found.append((child.name, child))
    return found


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
            good.append(validate_adapter(name, path, base))
            seen.add(name)
        except QtuneError as error:
            if not skip_broken:
                raise QtuneError(
                    f"{error}\nFix or remove it, or pass --skip-broken-adapters to start without it."
                ) from error
            problems.append(str(error))
    return good, problems

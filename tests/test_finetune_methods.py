"""The method registry: every built-in method's size and exact LoRA export, and a method
from outside the package that registers, trains, saves and reloads like the built-in ones."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import export_logits
from qtune.finetune.config import TrainConfig
from qtune.finetune.methods import (
    AdapterConfig,
    AdapterMethod,
    SavedAdapter,
    get_method,
    method_names,
    register_method,
)
from qtune.finetune.train import train

from qtune.errors import QtuneError

# tiny_llama: hidden 64, 2 layers, 4 heads of 16 and 2 KV heads, so q_proj is 64 -> 64 and
# v_proj 64 -> 32.
Q, V, LAYERS = (64, 64), (64, 32), 2

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # also points QTUNE_DATA_DIR at the data


@pytest.fixture()
def input_ids():
    return torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(3))


def test_the_built_in_methods_are_registered_and_unknown_ones_refused():
    assert {"qwth", "lora", "vera", "lora-xs", "qtha"} <= set(method_names())
    with pytest.raises(QtuneError, match="unknown method 'dora'.*lora-xs"):
        get_method("dora")
    with pytest.raises(QtuneError, match="n_qubits is a setting of qwth"):
        TrainConfig.from_dict({"method": "vera", "n_qubits": 4})


@pytest.mark.parametrize(("method", "settings", "expected"), [
    ("lora", {"r": 2}, LAYERS * 2 * (sum(Q) + sum(V))),
    ("lora", {"r": 4}, LAYERS * 4 * (sum(Q) + sum(V))),
    ("vera", {"r": 16}, LAYERS * ((16 + Q[1]) + (16 + V[1]))),  # lambda_d (r) + lambda_b (out)
    ("lora-xs", {"r": 8}, LAYERS * 2 * 8 * 8),  # one r x r matrix per layer
])
def test_trainable_parameter_counts(tiny_llama, method, settings, expected):
    adapter_method = get_method(method)
    config = adapter_method.config_class(**settings)
    adapter_method.validate(config)
    model = adapter_method.wrap(tiny_llama, config)
    assert adapter_method.num_trainable(model) == expected


def _perturb(model) -> None:
    """Every trainable tensor random, as training would leave it (zero starts made nonzero)."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


@pytest.mark.parametrize(("method", "settings"), [("vera", {"r": 16}), ("lora-xs", {"r": 8}),
                                                  ("lora", {"r": 2})])
def test_the_exported_lora_is_the_trained_adapter(tiny_llama, input_ids, tmp_path, method,
                                                  settings):

    reference = copy.deepcopy(tiny_llama)
    adapter_method = get_method(method)
    model = adapter_method.wrap(tiny_llama, adapter_method.config_class(**settings))
    _perturb(model)
    saved = adapter_method.save(model, tmp_path, "tiny-llama")
    assert (tmp_path / saved.compact_path).exists() and saved.compact_bytes > 0
    exported = json.loads((tmp_path / "adapter_config.json").read_text())
    assert exported["peft_type"] == "LORA" and exported["r"] == settings["r"]
    ours, theirs, base = export_logits(model, reference, tmp_path, input_ids)
    assert (ours - base).abs().max() > 1e-2, "the adapter should change the logits"
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


def test_lora_xs_starts_as_the_base_model_and_its_factors_come_from_the_weights(tiny_llama,
                                                                                input_ids):
    reference = copy.deepcopy(tiny_llama)
    method = get_method("lora-xs")
    model = method.wrap(tiny_llama, method.config_class(r=8))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=input_ids).logits,
                                   reference(input_ids=input_ids).logits)
    layer = next(iter(model.adapted.values()))
    weight = layer.base_layer.weight.detach().float()
    # A·B is the best rank-8 approximation of W (Eckart-Young): its error is the tail's.
    singular = torch.linalg.svdvals(weight)
    error = torch.linalg.matrix_norm(weight - layer.xs_A @ layer.xs_B)
    torch.testing.assert_close(error, singular[8:].square().sum().sqrt(), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- a plugin
@dataclass
class ScaleConfig(AdapterConfig):
    """A toy method: each adapted layer's output times (1 + g), g a trained vector."""

    start: float = 0.0
    """Toy: the initial value of every g."""


class _ScaledLinear(torch.nn.Module):
    def __init__(self, base: torch.nn.Linear, start: float) -> None:
        super().__init__()
        self.base = base
        self.gain = torch.nn.Parameter(torch.full((base.out_features,), start))

    def forward(self, x):
        return self.base(x) * (1 + self.gain)


class ScaleMethod(AdapterMethod):
    name = "toy-scale"
    label = "Toy"
    summary = "a toy method registered by a test"
    config_class = ScaleConfig
    servable = False
    compact_note = "`toy.safetensors`"

    def wrap(self, base, config: ScaleConfig):
        from qtune.finetune.wrapped import WrappedModel, replace_module, target_linears

        model = WrappedModel(base)
        for name, module in target_linears(base, config.target_modules, "toy"):
            replace_module(base, name, _ScaledLinear(module, config.start))
        return model

    def save(self, model, folder: Path, base_name: str) -> SavedAdapter:
        from safetensors.torch import save_file

        save_file(model.compact_state_dict(), str(folder / "toy.safetensors"))
        return SavedAdapter("toy.safetensors", (folder / "toy.safetensors").stat().st_size)

    def load(self, base, folder: Path):
        from safetensors.torch import load_file

        model = self.wrap(base, ScaleConfig())
        model.load_trainable(load_file(str(folder / "toy.safetensors")), folder)
        return model

    def describe(self, config: ScaleConfig) -> str:
        return f"A toy gain on {', '.join(config.target_modules)}."


@pytest.fixture()
def toy_method():
    """ScaleMethod registered for one test (the CLI reference must not list it after)."""
    from qtune.finetune import methods

    yield register_method(ScaleMethod)
    methods._REGISTRY.pop(ScaleMethod.name)


def test_a_method_from_a_test_module_trains_saves_and_reloads(toy_method, tiny_model_dir,
                                                              tmp_path):
    from transformers import AutoModelForCausalLM

    config = TrainConfig.from_dict(dict(
        method="toy-scale", start=0.0, base_model=str(tiny_model_dir), steps=3, batch_size=2,
        seq_len=64, lr=1e-2, warmup=1, max_train_examples=2, eval_every=0, eval_batches=1,
        save_every=0, output=str(tmp_path / "run"))).validate()
    metrics = train(config)
    assert metrics["trainable_parameters"] == 2 * (32 + 16)  # q_proj 32 -> 32, v_proj 32 -> 16
    card = (tmp_path / "run" / "README.md").read_text()
    assert "A toy gain on q_proj, v_proj." in card
    recorded = json.loads((tmp_path / "run" / "training_config.json").read_text())
    assert recorded["method"] == "toy-scale" and recorded["start"] == 0.0
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    reloaded = ScaleMethod().load(base, tmp_path / "run")
    gains = [p for n, p in reloaded.named_parameters() if n.endswith("gain")]
    assert len(gains) == 4 and any(g.abs().max() > 0 for g in gains)  # trained, then reloaded


def test_an_entry_point_registers_a_method_from_another_package(tmp_path):
    """A package that declares `qtune.adapter_methods` in its metadata adds a method."""
    (tmp_path / "toy_plugin.py").write_text(
        "from dataclasses import dataclass\n"
        "from qtune.finetune.methods import AdapterConfig, AdapterMethod\n"
        "@dataclass\nclass PluginConfig(AdapterConfig):\n    width: int = 3\n"
        "class PluginMethod(AdapterMethod):\n"
        "    name, label, summary, config_class = 'plugin', 'Plugin', 'a plugin', PluginConfig\n")
    dist = tmp_path / "toy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[qtune.adapter_methods]\nplugin = toy_plugin:PluginMethod\n")
    code = ("from qtune.finetune.config import TrainConfig\n"
            "c = TrainConfig.from_dict({'method': 'plugin', 'width': 5})\n"
            "print(type(c.adapter).__name__, c.adapter.width)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
                            timeout=120)
    assert result.stdout.strip() == "PluginConfig 5", result.stderr


def _formula(method: str, adapter, layers: int, q: tuple, v: tuple) -> int:
    from qtune.finetune.qwth.model import qwth_parameter_count

    r = adapter.r
    if method == "lora":
        return layers * r * (sum(q) + sum(v))
    if method == "vera":
        return layers * ((r + q[1]) + (r + v[1]))
    if method == "lora-xs":
        return layers * 2 * r * r
    return qwth_parameter_count([q, v] * layers, adapter)


def test_the_frontier_study_sizes_on_smollm2():
    """Every method of studies/frontier.toml on SmolLM2-135M's shapes (meta tensors: no
    weights load) has the count its formula gives: LoRA r(d_in + d_out), VeRA r + d_out,
    LoRA-XS r², QWTH its cores, fusion weights and circuit, per adapted layer."""
    from qtune.study.config import StudyConfig
    from test_finetune_qwth import SMOLLM2
    from transformers import LlamaConfig, LlamaForCausalLM

    layers, q, v = 30, (576, 576), (576, 192)
    study = StudyConfig.from_toml(Path(__file__).parent.parent / "studies" / "frontier.toml")
    counts = {}
    for name in study.methods:
        run = study.run_config("math", name, 1e-3, 0, Path("unused"))
        with torch.device("meta"):
            base = LlamaForCausalLM(LlamaConfig(**SMOLLM2))
        method = get_method(run.method)
        counts[name] = method.num_trainable(method.wrap(base, run.adapter))
        expected = _formula(run.method, run.adapter, layers, q, v)
        assert counts[name] == expected, name
    assert counts["qwth-tt2"] < counts["lora-xs"] < counts["qwth"] < counts["qwth-tt8"]
    assert abs(counts["lora-xs-r16"] / counts["qwth-tt2"] - 1) < 0.05  # its classical neighbour
    assert counts["vera"] < counts["qwth"] == 44_160


def test_served_names_split_at_the_registered_method():
    from qtune.finetune.methods import split_adapter_name
    from qtune.ui.endpoint import parse_model

    assert split_adapter_name("math-lora-xs") == ("math", "lora-xs")
    assert split_adapter_name("support-desk-vera") == ("support-desk", "vera")
    assert split_adapter_name("math-custom") == ("math", "custom")
    served = parse_model("counselling-lora-xs", parent="base", root="/x/counselling-lora-xs@ab")
    assert (served.assistant, served.method, served.label) == (
        "counselling", "lora-xs", "LoRA-XS adapter")


def test_a_run_without_a_rate_gets_its_methods_tuned_rate():
    """The study's tuned rates (40 steps, both assistants): LoRA 3.16e-3, QWTH 1e-2."""
    assert TrainConfig(method="lora").lr == 3.16e-3
    assert TrainConfig(method="qwth").lr == 1e-2
    assert TrainConfig(method="qwth", lr=5e-4).lr == 5e-4
    assert TrainConfig.from_dict({"method": "lora-xs"}).lr == get_method("lora-xs").default_lr

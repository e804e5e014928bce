"""QWTH adapter: factorisation, circuit gradients, exact LoRA export, training, errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import export_logits
from qtune.finetune.qwth import (
    QWTHConfig,
    QWTHModel,
    export_peft,
    get_qwth_model,
    load_compact,
    lora_parameter_count,
    qwth_parameter_count,
    save_compact,
)
from qtune.finetune.qwth.circuit import QuantumWeights
from qtune.finetune.qwth.config import QUANTUM_BRANCHES
from qtune.finetune.qwth.tensor import (
    balanced_factors,
    core_shapes,
    tt_matrices_batched,
    tt_matrix_shape,
    tt_matrix_tensorly,
)
from transformers import LlamaConfig, LlamaForCausalLM

from qtune.adapter_format import check_fits_base
from qtune.errors import QtuneError

SMOLLM2 = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
    num_attention_heads=9, num_key_value_heads=3, head_dim=64, tie_word_embeddings=True,
)


def small_config(**overrides) -> QWTHConfig:
    values = dict(n_qubits=6, circuit_layers=2)
    values.update(overrides)
    return QWTHConfig(**values)


def perturb(model: QWTHModel, steps: int = 3) -> None:
    """A few AdamW steps on a fixed batch so that every factor is nonzero."""
    torch.manual_seed(1)
    ids = torch.randint(0, model.base_model.config.vocab_size, (2, 10))
    optimiser = torch.optim.AdamW(model.parameter_groups(2e-2))
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        optimiser.step()
        optimiser.zero_grad()


@pytest.fixture()
def input_ids():
    return torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(3))


# -- tensor trains ---------------------------------------------------------------------
def test_balanced_factors_and_fallback():
    assert balanced_factors(576, 3) == (8, 8, 9)
    assert balanced_factors(192, 3) == (4, 6, 8)
    assert balanced_factors(8, 3) == (2, 2, 2)
    assert balanced_factors(64, 1) == (64,)
    with pytest.raises(QtuneError, match="cannot be split"):
        balanced_factors(97, 2)
    # A prime dimension makes both sides fall back to fewer cores.
    assert tt_matrix_shape(8, 97, 3) == ((8,), (97,))
    assert tt_matrix_shape(8, 2 * 97, 3) == ((2, 4), (2, 97))


def test_batched_contraction_matches_tensorly():
    torch.manual_seed(0)
    shapes = core_shapes((2, 2, 2), (4, 6, 8), 3)
    cores = [torch.randn(2, *shape) for shape in shapes]
    weights = [torch.randn(2, shape[3]) for shape in shapes[:-1]]
    batched = tt_matrices_batched(cores, weights)
    for g in range(2):
        reference = tt_matrix_tensorly([c[g] for c in cores], [w[g] for w in weights])
        assert reference.shape == (8, 192)
        torch.testing.assert_close(batched[g], reference, rtol=1e-5, atol=1e-6)


# -- the circuit -----------------------------------------------------------------------
@pytest.mark.parametrize("n_qubits", [4, 6])
def test_lightning_adjoint_matches_default_qubit_backprop(n_qubits):
    upstream = torch.randn(2**n_qubits, generator=torch.Generator().manual_seed(0))
    results = []
    for device in ("lightning.qubit", "default.qubit"):
        weights = QuantumWeights(n_qubits, 3, device=device, seed=5).double()
        q = weights()
        (q * upstream).sum().backward()
        results.append((q.detach(), weights.theta.grad.clone()))
    (q_lightning, g_lightning), (q_default, g_default) = results
    assert abs(q_lightning.sum().item()) < 1e-6  # centred: sum of 2^n p - 1 is 0
    torch.testing.assert_close(q_lightning, q_default, rtol=0, atol=1e-8)
    assert g_lightning.abs().max() > 1e-3
    torch.testing.assert_close(g_lightning, g_default, rtol=1e-6, atol=1e-8)


def test_shots_give_sampled_probabilities_and_parameter_shift_gradients():
    weights = QuantumWeights(3, 1, device="lightning.qubit", shots=2000, seed=2)
    exact = QuantumWeights(3, 1, device="lightning.qubit", seed=2)
    assert weights.runner.diff_method == "parameter-shift"
    q = weights()
    (q**2).sum().backward()
    assert torch.isfinite(weights.theta.grad).all() and weights.theta.grad.abs().max() > 0
    probs = (q.detach() + 1) / 8
    assert abs(probs.sum().item() - 1) < 1e-5
    # Sampling noise: close to, but not exactly, the exact probabilities.
    assert (q.detach() - exact().detach()).abs().max() < 0.5


# -- the model -------------------------------------------------------------------------
def test_init_leaves_model_unchanged_and_freezes_base(tiny_llama, input_ids):
    with torch.no_grad():
        before = tiny_llama(input_ids=input_ids).logits
    model = get_qwth_model(tiny_llama, small_config())
    with torch.no_grad():
        after = model(input_ids=input_ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "circuit.theta" in trainable
    assert not any(n.endswith(".weight") for n in trainable)
    assert len(model.adapted) == 4


@pytest.mark.parametrize("quantum", QUANTUM_BRANCHES)  # QWTH and the study's controls
def test_export_is_exact_on_tiny_model(tiny_llama, input_ids, tmp_path, quantum):

    reference = copy.deepcopy(tiny_llama)
    model = get_qwth_model(tiny_llama, small_config(quantum=quantum))
    perturb(model)
    export_peft(model, tmp_path, "tiny-llama")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8 and config["lora_alpha"] == 16
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]  # PEFT stores a set
    assert config["task_type"] == "CAUSAL_LM" and config["bias"] == "none"
    assert not config["use_rslora"] and not config["fan_in_fan_out"]
    assert config["modules_to_save"] is None
    assert config["base_model_name_or_path"] == "tiny-llama"
    ours, theirs, base = export_logits(model, reference, tmp_path, input_ids)
    assert (ours - base).abs().max() > 1e-2, "the adapter should have changed the logits"
    assert (ours - theirs).abs().max() <= 1e-3


def test_peft_key_names_match_a_real_peft_lora(tiny_llama, tmp_path):
    from peft import LoraConfig, get_peft_model
    from safetensors import safe_open

    reference = copy.deepcopy(tiny_llama)
    export_peft(get_qwth_model(tiny_llama, small_config()), tmp_path / "qwth", "tiny")
    lora = get_peft_model(reference, LoraConfig(r=8, lora_alpha=16,
                                                target_modules=["q_proj", "v_proj"],
                                                task_type="CAUSAL_LM"))
    lora.save_pretrained(tmp_path / "lora")
    shapes = []
    for folder in ("qwth", "lora"):
        with safe_open(str(tmp_path / folder / "adapter_model.safetensors"), "pt") as handle:
            shapes.append({k: handle.get_slice(k).get_shape() for k in handle.keys()})  # noqa: SIM118
    assert shapes[0] == shapes[1]


def test_training_steps_reduce_loss_and_reach_every_branch(tiny_llama):
    model = get_qwth_model(tiny_llama, small_config())
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(6):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(loss.item())
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        optimiser.step()
        optimiser.zero_grad()
    assert losses[-1] < losses[0] - 0.05
    layer = "base_model.model.layers.0.self_attn.q_proj"
    for name in ("circuit.theta", f"{layer}.fusion", f"{layer}.qwth_A.cores.0",
                 f"{layer}.qwth_B.cores.2"):
        assert grads[name] is not None and grads[name].abs().max() > 0, name


def test_no_grad_factors_are_cached_until_a_parameter_changes(tiny_llama, input_ids):
    model = get_qwth_model(tiny_llama, small_config())
    perturb(model, steps=1)
    with torch.no_grad():
        first = model(input_ids=input_ids).logits
        factors = model.adapted["model.layers.0.self_attn.q_proj"]._factors
        second = model(input_ids=input_ids).logits
        assert model.adapted["model.layers.0.self_attn.q_proj"]._factors is factors
        model.circuit.theta.add_(0.5)
        third = model(input_ids=input_ids).logits
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert (third - first).abs().max() > 0


@pytest.mark.parametrize("quantum", QUANTUM_BRANCHES)
def test_compact_round_trip_gives_identical_logits(tiny_llama, input_ids, tmp_path, quantum):
    fresh = copy.deepcopy(tiny_llama)
    model = get_qwth_model(tiny_llama, small_config(seed=3, quantum=quantum))
    perturb(model)
    save_compact(model, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {
        "qwth_config.json", "qwth_model.safetensors", "qwth_metadata.json"}
    loaded = load_compact(fresh, tmp_path)
    assert loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=input_ids).logits,
                                   model(input_ids=input_ids).logits, rtol=0, atol=0)


def test_config_round_trip_and_validation():
    config = QWTHConfig(target_modules=["q_proj", "o_proj"], shots=100)
    assert QWTHConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    # Any rank vLLM can hold is fine (it serves rank 12 under --max-lora-rank 16).
    assert QWTHConfig(r=12).validate().r == 12
    for bad in (0, 600):
        with pytest.raises(QtuneError, match=f"rank r={bad}"):
            QWTHConfig(r=bad).validate()
    with pytest.raises(QtuneError, match="unknown quantum device 'no.such.device'.*lightning.qubit"):
        QWTHConfig(device="no.such.device").validate()
    with pytest.raises(QtuneError, match="n_qubits"):
        QWTHConfig(n_qubits=30).validate()
    with pytest.raises(QtuneError, match="unknown QWTHConfig keys"):
        QWTHConfig.from_dict({"rank": 8})


def test_no_target_matched_lists_linear_layers(tiny_llama):
    with pytest.raises(QtuneError, match=r"no module matched.*'q_proj'"):
        QWTHModel(tiny_llama, small_config(target_modules=("query",)))


def test_all_projections_can_be_targeted(tiny_llama, input_ids):
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    model = get_qwth_model(tiny_llama, small_config(target_modules=targets))
    assert len(model.adapted) == 14
    perturb(model, steps=1)
    factors = model.lora_factors()
    a, b = factors["model.layers.1.mlp.down_proj"]
    assert a.shape == (8, 128) and b.shape == (64, 8)


def test_adapter_for_another_base_model_is_refused(tiny_llama, tmp_path):
    model = get_qwth_model(tiny_llama, small_config())
    export_peft(model, tmp_path / "peft", "tiny")
    save_compact(model, tmp_path / "compact")
    check_fits_base(tmp_path / "peft", tiny_llama.config)  # its own base: fine
    other = LlamaConfig(vocab_size=128, hidden_size=96, intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    for folder in ("peft", "compact"):
        with pytest.raises(QtuneError, match="another base model"):
            check_fits_base(tmp_path / folder, other)
    # Only the shapes: a PEFT folder without QWTH metadata.
    (tmp_path / "peft" / "qwth_metadata.json").unlink()
    with pytest.raises(QtuneError, match="another base model.*q_proj"):
        check_fits_base(tmp_path / "peft", other)
    with pytest.raises(QtuneError, match="another base model"):
        load_compact(LlamaForCausalLM(other), tmp_path / "compact")


# -- parameter counts ------------------------------------------------------------------
def test_parameter_formula_matches_count_on_tiny_model(tiny_llama):
    model = get_qwth_model(tiny_llama, small_config())
    shapes = list(model.layer_shapes().values())
    assert model.num_trainable_parameters() == qwth_parameter_count(shapes, model.config)
    assert model.lora_parameter_count() == lora_parameter_count(shapes, 8) == 2 * (
        8 * (64 + 64) + 8 * (64 + 32))


def test_smollm2_shapes_need_under_a_quarter_of_lora():
    config = QWTHConfig()  # q_proj, v_proj, r=8, tt_rank=4, 10 qubits
    with torch.device("meta"):
        base = LlamaForCausalLM(LlamaConfig(**SMOLLM2))
    model = get_qwth_model(base, config)
    shapes = list(model.layer_shapes().values())
    assert shapes.count((576, 576)) == 30 and shapes.count((576, 192)) == 30
    counted = model.num_trainable_parameters()
    assert counted == qwth_parameter_count(shapes, config) == 44_160
    assert model.lora_parameter_count() == 460_800
    assert counted <= 0.24 * model.lora_parameter_count()
    assert model.n_bond_entries == 960 <= 2**config.n_qubits


# -- the real model --------------------------------------------------------------------
@pytest.mark.slow
def test_export_is_exact_on_embedded_model(embedded_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    def load():
        return AutoModelForCausalLM.from_pretrained(embedded_model, dtype=torch.float32).eval()

    model = get_qwth_model(load(), QWTHConfig(seed=1))
    with torch.no_grad():  # random B cores instead of training: every factor nonzero
        for layer in model.adapted.values():
            layer.qwth_B.cores[-1].normal_(0, 0.05)
    export_peft(model, tmp_path, "smollm2-135m-instruct")
    check_fits_base(tmp_path, embedded_model)
    peft_model = PeftModel.from_pretrained(load(), tmp_path).eval()
    ids = torch.randint(0, 49152, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        theirs = peft_model(input_ids=ids).logits
        with peft_model.disable_adapter():
            base = peft_model(input_ids=ids).logits
    assert (ours - base).abs().max() > 1e-2
    assert (ours - theirs).abs().max() <= 1e-3


# -- the study's controls change only the quantum branch --------------------------------
def test_controls_change_only_the_quantum_branch(tiny_llama):
    def trainable(model):
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    models = {q: get_qwth_model(copy.deepcopy(tiny_llama), small_config(quantum=q))
              for q in QUANTUM_BRANCHES}
    cores = {q: {n: p for n, p in trainable(m).items() if ".qwth_" in n}
             for q, m in models.items()}
    for quantum in QUANTUM_BRANCHES:  # the same cores, initialised the same
        assert cores[quantum].keys() == cores["circuit"].keys()
        assert all(torch.equal(cores[quantum][n], cores["circuit"][n]) for n in cores["circuit"])
    branch = {q: {n: p.numel() for n, p in trainable(m).items()
                  if ".qwth_" not in n and not n.endswith(".fusion")}
              for q, m in models.items()}
    angles = 3 * 6 * 2  # 3 per qubit and layer: small_config has 6 qubits, 2 layers
    assert sum(branch["circuit"].values()) == angles and "circuit.theta" in branch["circuit"]
    assert branch["frozen"] == {} and models["frozen"].circuit.theta.requires_grad is False
    assert branch["vector"] == {"quantum_vector": 2**6} and models["vector"].circuit is None
    assert branch["none"] == {} and models["none"].circuit is None
    assert models["none"].quantum_values() is None
    counts = {q: m.num_trainable_parameters() for q, m in models.items()}
    n_layers = len(models["none"].adapted)
    assert counts["circuit"] - counts["frozen"] == angles
    assert counts["vector"] - counts["frozen"] == 2**6
    assert counts["frozen"] - counts["none"] == n_layers  # lambda_q multiplies nothing
    # The vector starts as the circuit's distribution: the same adapter at step 0.
    torch.testing.assert_close(models["vector"].quantum_values(),
                               models["circuit"].quantum_values().detach().float(),
                               rtol=1e-4, atol=1e-4)

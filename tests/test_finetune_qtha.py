"""QTHA, Origin Quantum's per-token adapter: the batched circuit against PennyLane, the
batched forward against a slow per-token reference, start, training, saving and errors."""

from __future__ import annotations

import copy

import pytest
import torch
from qtune.finetune.qtha.circuit import pennylane_expvals, qtha_expvals
from qtune.finetune.qtha.model import get_qtha_model, load_qtha, save_qtha
from qtune.finetune.qwth import QWTHConfig
from qtune.finetune.qwth.tensor import tt_matrix_tensorly

from qtune.errors import QtuneError


def qtha_config(**overrides) -> QWTHConfig:
    values = {"r": 8, "circuit_layers": 2, "tt_rank": 2, "n_factors": 2, **overrides}
    return QWTHConfig(**values)


@pytest.mark.parametrize("layers", [1, 2])  # 2: the re-encoding path
def test_batched_circuit_matches_pennylane_values_and_gradients(layers):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    weights = torch.randn(layers, 4, 5, generator=generator, dtype=torch.float64)
    upstream = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    results = []
    for simulate in (qtha_expvals, pennylane_expvals):
        x, w = features.clone().requires_grad_(True), weights.clone().requires_grad_(True)
        values = simulate(x, w)
        (values.double() * upstream).sum().backward()
        results.append((values.detach().double(), x.grad, w.grad))
    (ours, ours_dx, ours_dw), (reference, ref_dx, ref_dw) = results
    assert (reference.abs() > 0.05).any()  # a generic state, not a trivial one
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_dx, ref_dx, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_dw, ref_dw, rtol=0, atol=1e-5)


def per_token_reference(layer, x: torch.Tensor) -> torch.Tensor:
    """The layer's output one token at a time, with tensorly's TT-matrices and the
    PennyLane circuit: slow and independent of the batched path."""
    a = tt_matrix_tensorly(list(layer.qtha_A.cores))
    b = tt_matrix_tensorly(list(layer.qtha_B.cores))
    rows = []
    for token in x.reshape(-1, layer.in_features):
        hidden = a @ token
        quantum = pennylane_expvals(hidden[None].double(),
                                    layer.circuit_weights.double())[0].float()
        fused = layer.fusion_quantum @ quantum + layer.fusion_classical @ hidden
        rows.append(layer.base_layer(token) + layer.scaling * (b @ fused))
    return torch.stack(rows).reshape(*x.shape[:-1], layer.out_features)


def test_batched_forward_equals_a_slow_per_token_reference(tiny_llama):
    model = get_qtha_model(tiny_llama, qtha_config(seed=2))
    layer = next(iter(model.adapted.values()))
    with torch.no_grad():
        for core in layer.qtha_B.cores:  # B starts at zero: make the update visible
            core.normal_(0, 0.3, generator=torch.Generator().manual_seed(5))
        x = torch.randn(2, 3, layer.in_features, generator=torch.Generator().manual_seed(1))
        batched = layer(x)
        reference = per_token_reference(layer, x)
    assert (batched - layer.base_layer(x)).abs().max() > 1e-2
    torch.testing.assert_close(batched, reference, rtol=1e-4, atol=1e-4)


def test_qtha_starts_as_the_base_model_and_trains_every_part(tiny_llama):
    ids = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = tiny_llama(input_ids=ids).logits
    model = get_qtha_model(tiny_llama, qtha_config())
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=0)
    optimiser = torch.optim.AdamW(model.parameter_groups(1e-2))
    losses = []
    for _ in range(4):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    moved = {name.rsplit(".", 1)[-1] for name, p in model.named_parameters()
             if p.requires_grad and p.grad is None}  # zero_grad(set_to_none) cleared all
    assert moved == {"circuit_weights", "fusion_quantum", "fusion_classical", "0", "1"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.endswith(".weight") for n in trainable)


def test_save_and_load_give_identical_logits_and_a_wrong_base_is_refused(tiny_llama, tmp_path):
    fresh = copy.deepcopy(tiny_llama)
    model = get_qtha_model(tiny_llama, qtha_config(seed=4))
    with torch.no_grad():
        for layer in model.adapted.values():
            layer.qtha_B.cores[-1].normal_(0, 0.2)
    save_qtha(model, tmp_path)
    loaded = load_qtha(fresh, tmp_path)
    ids = torch.randint(0, 128, (1, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits,
                                   rtol=0, atol=0)
    with pytest.raises(QtuneError, match="not a QTHA adapter folder"):
        load_qtha(copy.deepcopy(fresh), tmp_path / "missing")


def test_too_many_qubits_are_refused_before_anything_loads():
    from qtune.finetune.config import TrainConfig

    with pytest.raises(QtuneError, match="r <= 12"):
        TrainConfig.from_dict({"method": "qtha", "r": 16}).validate()


@pytest.mark.usefixtures("one_torch_thread")
def test_a_qtha_run_leaves_its_compact_form_and_a_card_that_says_it_is_not_servable(
        tiny_model_dir, tmp_path):
    from qtune.finetune.config import TrainConfig
    from qtune.finetune.train import train

    config = TrainConfig.from_dict(dict(
        method="qtha", base_model=str(tiny_model_dir), steps=3, batch_size=2, seq_len=64,
        lr=3e-2, warmup=1, max_train_examples=2, eval_every=0, eval_batches=1, save_every=0,
        output=str(tmp_path), circuit_layers=1, tt_rank=2, n_factors=2))
    metrics = train(config)
    assert (tmp_path / "qtha" / "qtha_model.safetensors").is_file()
    assert not (tmp_path / "adapter_config.json").exists()
    assert metrics["peft_bytes"] is None and metrics["compact_path"] == "qtha/"
    card = (tmp_path / "README.md").read_text()
    assert "no LoRA form" in card and "--lora-modules" not in card
    assert f"{metrics['trainable_parameters']:,}" in card

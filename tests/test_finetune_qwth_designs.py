"""QWTH's designs: expectation-value readout, one circuit per adapted layer,
QuanTA's non-zero start, and separate learning rates — each checked against a reference
and exported exactly to a PEFT LoRA."""

from __future__ import annotations

import copy
import json

import pennylane as qml
import pytest
import torch
from qtune.finetune.qwth import (
    QWTHConfig,
    export_peft,
    get_qwth_model,
    load_compact,
    qwth_parameter_count,
    save_compact,
)
from qtune.finetune.qwth.circuit import (
    BroadcastCircuits,
    CircuitRunner,
    QuantumWeights,
    _apply_circuit,
    expval_matrix,
)
from qtune.finetune.qwth.cores import circuit_unitaries
from test_finetune_qwth import perturb

from qtune.errors import QtuneError

#: Each design as the QWTH settings that make it (the study's method table uses the same).
DESIGNS = {
    "expval": dict(readout="expval"),
    "layer": dict(circuit_scope="layer", device="default.qubit", n_qubits=4),
    "nonzero": dict(init="nonzero"),
    "lr-groups": dict(lr_scale_fusion=10.0, lr_scale_quantum=30.0),
    "cores": dict(core_circuit=True),
}


def design_config(design: str, **overrides) -> QWTHConfig:
    values = {"n_qubits": 6, "circuit_layers": 2, **DESIGNS[design], **overrides}
    return QWTHConfig(**values)


@pytest.fixture()
def input_ids():
    return torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(3))


# -- the circuits against PennyLane references ----------------------------------------------
def test_expval_readout_and_its_adjoint_gradient_match_pennylane_expectation_values():
    n_qubits = 4
    weights = QuantumWeights(n_qubits, 3, device="lightning.qubit", seed=5,
                             readout="expval").double()
    upstream = torch.randn(weights.size, generator=torch.Generator().manual_seed(0),
                           dtype=torch.float64)
    values = weights()
    (values * upstream).sum().backward()

    observables = [qml.Z(i) for i in range(n_qubits)] + [
        qml.Z(i) @ qml.Z(j) for i in range(n_qubits) for j in range(i + 1, n_qubits)]

    @qml.qnode(qml.device("default.qubit", wires=n_qubits), interface="torch",
               diff_method="backprop")
    def reference(theta):
        _apply_circuit(theta, n_qubits)
        return [qml.expval(o) for o in observables]

    theta = weights.theta.detach().clone().requires_grad_(True)
    expected = torch.stack(reference(theta))
    (expected * upstream).sum().backward()
    assert weights.size == len(observables) == 10
    torch.testing.assert_close(values.detach(), expected.detach(), rtol=0, atol=1e-8)
    assert weights.theta.grad.abs().max() > 1e-3
    torch.testing.assert_close(weights.theta.grad, theta.grad, rtol=1e-6, atol=1e-8)


def test_expval_matrix_puts_wire_zero_on_the_most_significant_bit():
    m = expval_matrix(2)  # rows <Z0>, <Z1>, <Z0 Z1>; columns |00>, |01>, |10>, |11>
    assert m.tolist() == [[1, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1]]


def test_broadcast_circuits_equal_each_circuit_run_alone():
    theta = torch.rand(5, 2, 3, 3, generator=torch.Generator().manual_seed(2),
                       dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(5, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    batched = BroadcastCircuits(3).probabilities(theta)
    (batched * upstream).sum().backward()
    alone = CircuitRunner(3, "lightning.qubit")
    for index in range(5):
        single = theta[index].detach().clone().requires_grad_(True)
        probs = alone.probabilities(single)
        (probs * upstream[index]).sum().backward()
        torch.testing.assert_close(batched[index].detach(), probs.detach(), rtol=0, atol=1e-10)
        torch.testing.assert_close(theta.grad[index], single.grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("n_qubits", [1, 2, 3, 5])
def test_circuit_cores_are_blocks_of_the_circuit_unitary_pennylane_computes(n_qubits):
    angles = torch.rand(3, 2, n_qubits, generator=torch.Generator().manual_seed(n_qubits),
                        dtype=torch.float64)
    ring = range(n_qubits) if n_qubits > 2 else range(n_qubits - 1)

    def circuit(layers):
        for layer in layers:
            for wire in range(n_qubits):
                qml.RY(layer[wire], wires=wire)
            for wire in ring:
                qml.CZ(wires=[wire, (wire + 1) % n_qubits])

    ours = circuit_unitaries(angles)
    for index in range(3):
        reference = torch.as_tensor(qml.matrix(circuit, wire_order=range(n_qubits))(
            angles[index]))
        torch.testing.assert_close(ours[index], reference.real, rtol=0, atol=1e-12)
    assert torch.allclose(ours @ ours.transpose(1, 2), torch.eye(2**n_qubits, dtype=torch.float64))


def test_circuit_cores_replace_the_middle_core_and_train(tiny_llama):
    model = get_qwth_model(tiny_llama, design_config("cores"))
    layer = next(iter(model.adapted.values()))
    factor = layer.qwth_A  # 8 x 64: cores (2,2,2) x (4,4,4), the middle one (4, 2, 4, 4)
    assert factor.circuit_index == 1 and len(factor.cores) == 2
    assert factor.core_angles.shape == (2, 4)  # 2 circuit layers, 4 qubits cover 8 x 16
    built = model._batched_cores([factor])[1][0]
    assert built.shape == (4, 2, 4, 4) and built.std().item() == pytest.approx(0.5, rel=0.5)
    groups = {g.get("name"): g for g in model.parameter_groups(1e-3)}
    assert len(groups) == 1  # multiples at 1: one group
    built.sum().backward()
    assert factor.core_angles.grad.abs().max() > 0 and factor.core_scale.grad is not None


# -- every design trains, exports exactly and round-trips ------------------------------------
@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_every_design_exports_exactly_and_reloads(tiny_llama, input_ids, tmp_path, design):
    from peft import PeftModel

    reference, fresh = copy.deepcopy(tiny_llama), copy.deepcopy(tiny_llama)
    model = get_qwth_model(tiny_llama, design_config(design, seed=3))
    perturb(model)
    export_peft(model, tmp_path / "peft", "tiny-llama")
    lora = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    rank = 16 if design == "nonzero" else 8
    assert (lora["r"], lora["lora_alpha"]) == (rank, 2 * rank)  # alpha / r stays 2
    peft_model = PeftModel.from_pretrained(reference, tmp_path / "peft").eval()
    save_compact(model, tmp_path / "compact")
    loaded = load_compact(fresh, tmp_path / "compact")
    with torch.no_grad():
        ours = model(input_ids=input_ids).logits
        theirs = peft_model(input_ids=input_ids).logits
        again = loaded(input_ids=input_ids).logits
        with peft_model.disable_adapter():
            base = peft_model(input_ids=input_ids).logits
    assert (ours - base).abs().max() > 1e-2, "the adapter should have changed the logits"
    assert (ours - theirs).abs().max() <= 1e-3
    torch.testing.assert_close(again, ours, rtol=0, atol=1e-6)
    assert model.num_trainable_parameters() == qwth_parameter_count(
        model.layer_shapes().values(), model.config)


def test_nonzero_start_is_the_base_model_at_step_zero_and_trains_every_core(tiny_llama,
                                                                            input_ids):
    with torch.no_grad():
        before = tiny_llama(input_ids=input_ids).logits
    model = get_qwth_model(tiny_llama, design_config("nonzero"))
    assert all(layer.qwth_B.cores[-1].abs().max() > 0 for layer in model.adapted.values())
    logits = model(input_ids=input_ids).logits
    torch.testing.assert_close(logits.detach(), before, rtol=0, atol=1e-6)
    logits.sum().backward()
    untouched = [n for n, p in model.named_parameters() if p.requires_grad
                 and (p.grad is None or p.grad.abs().max() == 0)]
    assert untouched == []  # with B = 0 only the last cores of B would get a gradient


def test_per_layer_circuits_give_each_layer_its_own_values(tiny_llama):
    model = get_qwth_model(tiny_llama, design_config("layer"))
    assert model.circuit.theta.shape == (len(model.adapted), 2, 4, 3)
    q = model.quantum_values()
    assert q.shape == (len(model.adapted) * 16,)
    first_bonds = [plan.q_index[0] // 16 for plan in model._plans]
    # Layer l's bonds read only circuit l (rows of q_index follow the plan's layers).
    for plan, circuits in zip(model._plans, first_bonds, strict=True):
        names = list(model.adapted)
        expected = torch.tensor([names.index(name) for name in plan.names])
        assert (circuits == expected[:, None]).all()


def test_separate_learning_rates_group_cores_fusion_and_quantum(tiny_llama):
    untouched = copy.deepcopy(tiny_llama)
    model = get_qwth_model(tiny_llama, design_config("lr-groups"))
    groups = {g["name"]: g for g in model.parameter_groups(1e-3)}
    assert {name: g["lr"] for name, g in groups.items()} == pytest.approx(
        {"cores": 1e-3, "fusion": 1e-2, "quantum": 3e-2})
    assert [p.numel() for p in groups["quantum"]["params"]] == [3 * 6 * 2]
    assert len(groups["fusion"]["params"]) == len(model.adapted)
    plain = get_qwth_model(untouched, design_config("expval"))
    assert len(plain.parameter_groups(1e-3)) == 1  # the order of existing checkpoints


@pytest.mark.parametrize(("settings", "message"), [
    (dict(readout="amplitudes"), "readout 'amplitudes' is not one of probs, expval"),
    (dict(circuit_scope="layer"), "default.qubit"),
    (dict(init="nonzero", r=320), "export.s rank 640"),
    (dict(quantum="vector", readout="expval"), "quantum 'vector'"),
    (dict(lr_scale_quantum=0), "lr_scale_quantum"),
    (dict(core_circuit=True, n_factors=2), "needs n_factors >= 3"),
])
def test_bad_design_settings_say_what_to_change(settings, message):
    with pytest.raises(QtuneError, match=message):
        QWTHConfig(**settings).validate()

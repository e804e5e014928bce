"""QTHA — Origin Quantum's per-token quantum tensor hybrid adapter, trained and evaluated
in process (it has no LoRA form, so vLLM cannot serve it as one). See docs/method.md."""

#: qubits = rank: the simulated state has 2^r amplitudes per token, which bounds r.
MAX_QTHA_RANK = 12


def check_qtha_rank(r: int) -> None:
    """Refuse ranks QTHA cannot simulate (cheap: the run's config calls it before loading)."""
    from qtune.errors import QtuneError

    if not 1 <= r <= MAX_QTHA_RANK:
        raise QtuneError(f"qtha runs a circuit of r = {r} qubits per token; use r <= "
                         f"{MAX_QTHA_RANK} (the state has 2^r amplitudes per token)")

"""QTHA — the seed paper's per-token quantum tensor hybrid adapter, trained and evaluated
in process (it has no LoRA form, so vLLM cannot serve it as one). See docs/method.md."""

#: qubits = rank: the simulated state has 2^r amplitudes per token, which bounds r.
MAX_QTHA_RANK = 12

"""The classical branch of QWTH: LoRA factors stored as tensor-train matrices (MPOs).

A matrix M of shape (rows, cols) with rows = m_1...m_K and cols = n_1...n_K is kept as K
cores G_k of shape (R_{k-1}, m_k, n_k, R_k), R_0 = R_K = 1:

    M[(i_1..i_K), (j_1..j_K)] = G_1[:, i_1, j_1, :] D_1 G_2[:, i_2, j_2, :] D_2 ... G_K[:, i_K, j_K, :]

where D_k = diag(w_k) is the quantum weighting of internal bond k (see ``layer.py``).
``tt_matrix_tensorly`` builds one matrix with tensorly (pytorch backend), the reference;
``tt_matrices_batched`` builds a stack of same-shaped matrices with one einsum per core,
which is what the model uses because it is several times faster for many layers.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from qtune.errors import QtuneError


def _divisors(n: int) -> list[int]:
    return [d for d in range(2, n + 1) if n % d == 0]


@lru_cache(maxsize=256)
def _best_split(n: int, k: int, smallest: int) -> tuple[int, ...] | None:
    """Factors >= smallest (non-decreasing) of n into exactly k parts with the least sum."""
    if k == 1:
        return (n,) if n >= smallest else None
    best: tuple[int, ...] | None = None
    for d in _divisors(n):
        if d < smallest or d ** k > n:
            continue
        rest = _best_split(n // d, k - 1, d)
        if rest is not None and (best is None or d + sum(rest) < sum(best)):
            best = (d, *rest)
    return best


def balanced_factors(n: int, k: int) -> tuple[int, ...]:
    """Split n into exactly k factors >= 2, as balanced as possible (least sum, which
    also keeps the cores small), ascending: 576 -> (8, 8, 9), 192 -> (4, 6, 8).

    k = 1 gives (n,). Raises QtuneError when n has fewer than k prime factors (a prime
    cannot be split at all)."""
    if n < 1 or k < 1:
        raise QtuneError(f"cannot factor {n} into {k} factors")
    if k == 1:
        return (n,)
    split = _best_split(n, k, 2)
    if split is None:
        raise QtuneError(f"{n} cannot be split into {k} factors >= 2 (too few prime factors)")
    return split


def max_factor_count(n: int) -> int:
    """How many factors >= 2 n can be split into (its number of prime factors)."""
    count, p = 0, 2
    while p * p <= n:
        while n % p == 0:
            n //= p
            count += 1
        p += 1
    return count + (1 if n > 1 else 0)


def tt_matrix_shape(rows: int, cols: int, n_factors: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Row and column factors with the same number of cores for both: n_factors, or fewer
    when a dimension has too few prime factors (the caller warns)."""
    k = max(1, min(n_factors, max_factor_count(rows), max_factor_count(cols)))
    return balanced_factors(rows, k), balanced_factors(cols, k)


def core_shapes(
    row_factors: tuple[int, ...], col_factors: tuple[int, ...], tt_rank: int
) -> list[tuple[int, int, int, int]]:
    """Shapes (R_{k-1}, m_k, n_k, R_k) of the cores, R_0 = R_K = 1."""
    k = len(row_factors)
    ranks = [1] + [tt_rank] * (k - 1) + [1]
    return [(ranks[i], row_factors[i], col_factors[i], ranks[i + 1]) for i in range(k)]


def tt_parameter_count(rows: int, cols: int, n_factors: int, tt_rank: int) -> int:
    row_factors, col_factors = tt_matrix_shape(rows, cols, n_factors)
    return sum(math.prod(shape) for shape in core_shapes(row_factors, col_factors, tt_rank))


def _weighted(cores: list[torch.Tensor], bond_weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """Scale the last axis of core k by the weights of bond k (k < K)."""
    if len(bond_weights) != len(cores) - 1:
        raise ValueError(f"{len(cores)} cores need {len(cores) - 1} bond weights")
    return [core * weight for core, weight in zip(cores[:-1], bond_weights, strict=True)] + [cores[-1]]


def tt_matrix_tensorly(
    cores: list[torch.Tensor], bond_weights: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """One TT-matrix (optionally bond-weighted) to a dense matrix with tensorly."""
    import tensorly as tl
    from tensorly.tt_matrix import tt_matrix_to_matrix

    if tl.get_backend() != "pytorch":
        tl.set_backend("pytorch")
    if bond_weights is not None:
        cores = _weighted(cores, bond_weights)
    return tt_matrix_to_matrix(cores)


def tt_matrices_batched(
    cores: list[torch.Tensor], bond_weights: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """A batch of G same-shaped TT-matrices to dense matrices (G, rows, cols).

    cores[k]: (G, R_{k-1}, m_k, n_k, R_k); bond_weights[k]: (G, R_k) for k < K.
    Same index order as tensorly's tt_matrix_to_matrix (row-major over the factors)."""
    if bond_weights is not None:
        if len(bond_weights) != len(cores) - 1:
            raise ValueError(f"{len(cores)} cores need {len(cores) - 1} bond weights")
        cores = [c * w[:, None, None, None, :] for c, w in zip(cores[:-1], bond_weights, strict=True)] + [
            cores[-1]
        ]
    result = cores[0][:, 0]  # (G, m_1, n_1, R_1)
    for core in cores[1:]:
        batch, rows, cols, _ = result.shape
        _, _, m, n, rank = core.shape
        result = torch.einsum("gijr,grmns->gimjns", result, core)
        result = result.reshape(batch, rows * m, cols * n, rank)
    return result[..., 0]

"""Statistics behind the rollout gates: Wilson bound, PSI, chi-square. Pure numpy/scipy.

Example::

    >>> round(wilson_lower_bound(81, 263), 4)
    0.2553
    >>> round(psi([0.5, 0.5], [0.6, 0.4]), 4)
    0.0405
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special, stats

# Share given to an empty bin so PSI stays finite (a common choice in credit-risk practice).
PSI_EPSILON = 1e-4


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (two-sided).

    Unlike the normal approximation it stays inside [0, 1] and is wide for small ``n``,
    so a handful of lucky samples gives a low lower bound.

    >>> tuple(round(v, 4) for v in wilson_interval(0, 10))
    (0.0, 0.2775)
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} outside [0, n={n}]")
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_lower_bound(successes: int, n: int, confidence: float = 0.95) -> float:
    """Lower end of :func:`wilson_interval` (0.0 when ``n`` is 0)."""
    return wilson_interval(successes, n, confidence)[0]


def shares(counts: Sequence[float] | np.ndarray, epsilon: float = PSI_EPSILON) -> np.ndarray:
    """Counts (or fractions) -> shares summing to 1, empty bins floored at ``epsilon``."""
    arr = np.asarray(counts, dtype=float)
    total = arr.sum()
    if total <= 0:
        raise ValueError("cannot take shares of an all-zero histogram")
    out = np.maximum(arr / total, epsilon)
    return out / out.sum()


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Population stability index ``sum((a - e) * ln(a / e))`` of two histograms.

    Either argument may be counts or fractions (both are normalised). Rules of thumb:
    < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 large shift.
    """
    e, a = shares(expected), shares(actual)
    if e.shape != a.shape:
        raise ValueError(f"histograms differ in bins: {e.shape} vs {a.shape}")
    return float(np.sum((a - e) * np.log(a / e)))


def psi_per_feature(reference_fractions: Sequence[Sequence[float]],
                    bin_counts: Sequence[Sequence[float]]) -> list[float | None]:
    """PSI of each feature's live bin counts against its reference fractions.

    A feature with no live rows gets ``None``.
    """
    if len(reference_fractions) != len(bin_counts):
        raise ValueError(f"{len(bin_counts)} live features vs {len(reference_fractions)} in the reference")
    return [psi(ref, live) if sum(live) > 0 else None for ref, live in zip(reference_fractions, bin_counts)]


def bin_counts(x: np.ndarray, edges: Sequence[Sequence[float]]) -> list[list[int]]:
    """Count rows of ``x`` (rows x features, flattened) per feature bin with ``numpy.digitize``.

    ``edges`` holds F lists of interior edges (manifest ``reference.inputs.edges``), so each
    feature has ``len(edges[f]) + 1`` bins.
    """
    flat = np.asarray(x, dtype=float).reshape(len(x), -1)
    if flat.shape[1] != len(edges):
        raise ValueError(f"inputs have {flat.shape[1]} features, reference has {len(edges)}")
    return [
        np.bincount(np.digitize(flat[:, f], edges[f]), minlength=len(edges[f]) + 1).tolist()
        for f in range(flat.shape[1])
    ]


def chi_square_two_sample(counts_a: Sequence[float], counts_b: Sequence[float]) -> tuple[float, float]:
    """Chi-square test that two categorical samples share one distribution.

    Returns ``(statistic, p_value)``; categories empty in both samples are dropped, and
    fewer than two remaining categories give ``(0.0, 1.0)`` (nothing to distinguish).
    """
    table = np.asarray([counts_a, counts_b], dtype=float)
    if table.shape[0] != 2 or table.ndim != 2:
        raise ValueError("expected two count vectors of equal length")
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    stat, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    return float(stat), float(p_value)


def merge_sparse_bins(reference_fractions: Sequence[float] | np.ndarray, rows: float,
                      min_expected: float) -> list[list[int]]:
    """Groups of adjacent bins such that each group expects >= ``min_expected`` of ``rows``.

    Pearson's chi-square is only close to its chi-square distribution when every cell
    expects a few rows; sparse reference bins (ties, tails) are pooled with their right
    neighbour, a short tail with the last full group. The grouping depends on the
    reference and the row count only, never on the live counts, so the test stays valid.

    >>> merge_sparse_bins([0.02, 0.48, 0.48, 0.02], 100, 5)
    [[0, 1], [2, 3]]
    """
    groups: list[list[int]] = []
    current: list[int] = []
    expected = 0.0
    for b, share in enumerate(np.asarray(reference_fractions, dtype=float)):
        current.append(b)
        expected += share * rows
        if expected >= min_expected:
            groups.append(current)
            current, expected = [], 0.0
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    return groups


def chi_square_vs_reference(reference_fractions: Sequence[float], live_counts: Sequence[float],
                            reference_rows: float | None = None, min_expected: float = 5.0) -> tuple[float, int, float]:
    """Chi-square test that live bin counts come from the reference's distribution.

    With ``reference_rows`` (N, the training rows behind the fractions) it is Pearson's
    two-sample test of the 2 x k table (live counts vs reference counts ``N * fractions``),
    ``X2 = sum((N*O - n*R)**2 / (O + R)) / (n*N)``: the reference is a finite sample too,
    and treating it as exact would make the test too eager by about ``1 + n/N``. Without
    it, the goodness-of-fit test against exact fractions. Sparse bins are merged first
    (:func:`merge_sparse_bins`). Returns ``(statistic, degrees_of_freedom, p_value)``;
    fewer than two groups give ``(0.0, 0, 1.0)``.

    >>> stat, dof, p = chi_square_vs_reference([0.5, 0.5], [30, 10])
    >>> stat, dof, round(p, 5)
    (10.0, 1, 0.00157)
    """
    fractions = np.asarray(reference_fractions, dtype=float)
    fractions = fractions / fractions.sum()
    live = np.asarray(live_counts, dtype=float)
    n = live.sum()
    groups = merge_sparse_bins(fractions, n, min_expected)
    if len(groups) < 2 or n <= 0:
        return 0.0, 0, 1.0
    starts = [g[0] for g in groups]
    p, o = np.add.reduceat(fractions, starts), np.add.reduceat(live, starts)
    if reference_rows is None:
        stat = float(np.sum((o - n * p) ** 2 / (n * p)))
    else:
        big_n = float(reference_rows)
        r = big_n * p
        stat = float(np.sum((big_n * o - n * r) ** 2 / (o + r)) / (n * big_n))
    dof = len(groups) - 1
    return stat, dof, float(special.chdtrc(dof, stat))  # chi2.sf, without rv_continuous's overhead

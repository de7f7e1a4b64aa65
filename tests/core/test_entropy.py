"""Tests for nlptool.core.entropy (entropy normalisation, Su Jianlin, https://kexue.fm/archives/8829).

Oracles: hand-computed values, and scipy.optimize.brentq solving H(gamma) = H* row by row with code written here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

from nlptool.core import entropy as entropy_mod
from nlptool.core.entropy import entropy, normalize, reachable_range
from nlptool.core.errors import NlptoolError, RowError

# ---------------------------------------------------------------------------------------------------------------------
# independent per-row oracle


def _h(q: np.ndarray) -> float:
    q = q[q > 0]
    return float(-np.sum(q * np.log(q)))


def _power(p: np.ndarray, g: float) -> np.ndarray:
    out = np.zeros_like(p)
    nz = p > 0
    w = g * np.log(p[nz])
    w -= w.max()
    w = np.exp(w)
    out[nz] = w / w.sum()
    return out


def oracle(p, h_star: float) -> tuple[np.ndarray, float]:
    """brentq on gamma in [0, b], b doubled until H(b) < H*."""
    p = np.asarray(p, dtype=float)

    def f(g: float) -> float:
        return _h(_power(p, g)) - h_star

    b = 1.0
    while f(b) > 0:
        b *= 2.0
    g = brentq(f, 0.0, b, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=1000)
    return _power(p, g), g


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def assert_order_preserved(p: np.ndarray, q: np.ndarray) -> None:
    """p_i == p_j => q_i == q_j, and p_i < p_j => q_i <= q_j (strict unless q underflows)."""
    for row_p, row_q in zip(np.atleast_2d(p), np.atleast_2d(q), strict=True):
        i, j = np.meshgrid(np.arange(row_p.size), np.arange(row_p.size), indexing="ij")
        less = row_p[i] < row_p[j]
        assert np.all(row_q[i][less] <= row_q[j][less])
        eq = row_p[i] == row_p[j]
        assert np.all(row_q[i][eq] == row_q[j][eq])


# ---------------------------------------------------------------------------------------------------------------------
# entropy / reachable_range


def test_entropy_hand_computed():
    assert entropy([0.5, 0.25, 0.25]) == pytest.approx(1.5 * math.log(2), abs=1e-15)
    assert entropy([0.5, 0.25, 0.25]) == pytest.approx(1.0397207708399179, abs=1e-15)
    assert entropy([1.0, 0.0, 0.0]) == 0.0  # 0 log 0 = 0
    assert entropy(np.full(4, 0.25)) == pytest.approx(math.log(4), abs=1e-15)
    out = entropy(np.array([[0.5, 0.5], [1.0, 0.0]]))
    assert out.dtype == np.float64 and out.shape == (2,)
    np.testing.assert_allclose(out, [math.log(2), 0.0], atol=1e-15)
    np.testing.assert_allclose(entropy(np.array([[0.5, 1.0], [0.5, 0.0]]), axis=0), [math.log(2), 0.0], atol=1e-15)
    assert math.isnan(entropy([-0.5, 1.5]))


def test_reachable_range():
    lo, hi = reachable_range(np.array([[0.5, 0.25, 0.25], [0.4, 0.4, 0.2], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]))
    np.testing.assert_allclose(lo, [0.0, math.log(2), 0.0, math.log(2)], atol=0)
    np.testing.assert_allclose(hi, [math.log(3), math.log(3), 0.0, math.log(2)], atol=0)
    lo1, hi1 = reachable_range([0.4, 0.4, 0.2, 0.0])
    assert np.ndim(lo1) == 0 and lo1 == pytest.approx(math.log(2)) and hi1 == pytest.approx(math.log(3))
    lo_l, hi_l = reachable_range(np.array([[1.0, 1.0, -np.inf, 0.0]]), logits=True)
    assert lo_l[0] == pytest.approx(math.log(2)) and hi_l[0] == pytest.approx(math.log(3))
    with pytest.raises(RowError) as ei:
        reachable_range(np.array([[0.5, 0.5], [0.0, 0.0]]))
    assert ei.value.row == 1


# ---------------------------------------------------------------------------------------------------------------------
# hand-computed case and the oracle


def test_hand_computed_gamma_two():
    p = np.array([0.5, 0.25, 0.25])
    # p**2 normalised: [0.25, 0.0625, 0.0625] / 0.375 = [2/3, 1/6, 1/6]
    h2 = (2 / 3) * math.log(3 / 2) + 2 * (1 / 6) * math.log(6)
    assert h2 == pytest.approx(0.8675632284814612, abs=1e-15)
    q, g = normalize(p, h2)
    assert isinstance(g, float)
    assert g == pytest.approx(2.0, abs=1e-8)
    np.testing.assert_allclose(q, [2 / 3, 1 / 6, 1 / 6], atol=1e-12)
    # the other direction: p is [2/3, 1/6, 1/6] ** 0.5 normalised
    q, g = normalize([2 / 3, 1 / 6, 1 / 6], 1.5 * math.log(2))
    assert g == pytest.approx(0.5, abs=1e-8)
    np.testing.assert_allclose(q, p, atol=1e-12)


@pytest.mark.parametrize("k, alpha", [(2, 1.0), (5, 0.5), (50, 0.1), (1000, 0.05)])
def test_matches_brentq_oracle(k, alpha):
    rng = np.random.default_rng(k)
    p = rng.dirichlet(np.full(k, alpha), size=12)
    lo, hi = reachable_range(p)
    h_star = lo + (hi - lo) * rng.uniform(0.02, 0.98, size=len(p))
    q, g = normalize(p, h_star, renormalize=True)
    for i in range(len(p)):
        q_ref, g_ref = oracle(p[i] / p[i].sum(), h_star[i])
        assert g[i] == pytest.approx(g_ref, rel=1e-8)
        np.testing.assert_allclose(q[i], q_ref, atol=1e-10)
    np.testing.assert_allclose(entropy(q), h_star, atol=1e-9)


def test_target_ratio_and_per_row_targets():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.full(6, 0.7), size=5)
    ratio = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    q1, g1 = normalize(p, target_ratio=ratio, renormalize=True)
    q2, g2 = normalize(p, ratio * math.log(6), renormalize=True)
    np.testing.assert_array_equal(q1, q2)
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_allclose(entropy(q1), ratio * math.log(6), atol=1e-9)
    q3, _ = normalize(p, target_ratio=0.5, renormalize=True)
    np.testing.assert_allclose(entropy(q3), 0.5 * math.log(6), atol=1e-9)


def test_target_equal_to_current_entropy_gives_gamma_one():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.full(8, 0.5), size=20)
    p /= p.sum(axis=1, keepdims=True)
    q, g = normalize(p, entropy(p))
    np.testing.assert_allclose(g, 1.0, atol=1e-9)
    np.testing.assert_allclose(q, p, atol=1e-12)


def test_sharpen_and_flatten_direction():
    p = np.array([0.5, 0.3, 0.2])
    h = entropy(p)
    _, g_sharp = normalize(p, h - 0.2)
    _, g_flat = normalize(p, h + 0.05)
    assert g_sharp > 1 > g_flat > 0


def test_su_newton_step_is_first_solver_step():
    """Su's rule gamma = 1 + (H* - H) / (H^2 - sum p log^2 p) is the solver's first Newton step from gamma = 1."""
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.full(10, 0.5), size=200)
    p /= p.sum(axis=1, keepdims=True)
    lo, hi = reachable_range(p)
    h_star = lo + (hi - lo) * rng.uniform(0.05, 0.95, size=len(p))
    h = entropy(p)
    su = 1 + (h_star - h) / (h**2 - np.sum(p * np.log(p) ** 2, axis=1))
    prep = entropy_mod._prepare(p, logits=False, check_sum=True, renormalize=False, sum_tol=1e-6)
    trace: list = []
    g, _ = entropy_mod._solve_gamma(prep.logr, h_star, tol=1e-9, max_iter=100, rows=np.arange(len(p)), trace=trace)
    rows, first = trace[0]
    assert rows.size == len(p)  # nobody converged at gamma = 1
    newton = su[rows] > 0
    assert newton.sum() > 100 and (~newton).sum() > 0
    np.testing.assert_allclose(first[newton], su[rows][newton], rtol=1e-12)
    np.testing.assert_array_equal(first[~newton], 0.5)  # Newton left the bracket (0, 1): bisection
    np.testing.assert_allclose(entropy(_power_rows(p, g)), h_star, atol=1e-9)


def _power_rows(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.array([_power(row, gi) for row, gi in zip(p, g, strict=True)])


# ---------------------------------------------------------------------------------------------------------------------
# edge cases


def test_zeros_stay_zero_and_maximum_is_uniform_over_support():
    p = np.array([0.6, 0.0, 0.3, 0.0, 0.1])
    q, g = normalize(p, 0.5)
    assert 0 < g < np.inf
    assert q[1] == 0.0 and q[3] == 0.0
    assert entropy(q) == pytest.approx(0.5, abs=1e-9)
    q_ref, g_ref = oracle(p, 0.5)
    np.testing.assert_allclose(q, q_ref, atol=1e-12)
    q, g = normalize(p, math.log(3))
    assert g == 0.0
    np.testing.assert_array_equal(q, [1 / 3, 0.0, 1 / 3, 0.0, 1 / 3])
    q, g = normalize(p, math.log(3) - 0.5e-9)  # within tol of the maximum
    assert g == 0.0
    q, g = normalize(p, math.log(3) - 1e-6)  # just inside: small finite gamma
    assert 0 < g < 0.1 and entropy(q) == pytest.approx(math.log(3) - 1e-6, abs=1e-9)
    assert q[1] == 0.0 and q[3] == 0.0


def test_unique_max_target_zero_is_one_hot():
    q, g = normalize([0.2, 0.5, 0.3], 0.0)
    assert g == np.inf
    np.testing.assert_array_equal(q, [0.0, 1.0, 0.0])


def test_ties_in_the_maximum():
    p = np.array([0.35, 0.1, 0.35, 0.2])
    lo = math.log(2)
    q, g = normalize(p, lo)
    assert g == np.inf
    np.testing.assert_array_equal(q, [0.5, 0.0, 0.5, 0.0])
    q, g = normalize(p, lo + 0.5e-9)  # within tol of the minimum
    assert g == np.inf
    q, g = normalize(p, lo + 1e-6)  # just inside: large finite gamma
    assert 1 < g < np.inf and entropy(q) == pytest.approx(lo + 1e-6, abs=1e-9)
    assert q[0] == q[2]
    with pytest.raises(RowError) as ei:
        normalize(p, 0.0)
    assert ei.value.row == 0 and "clip=True" in str(ei.value) and "0.6931471806" in str(ei.value)
    q, g = normalize(p, 0.0, clip=True)
    assert g == np.inf
    np.testing.assert_array_equal(q, [0.5, 0.0, 0.5, 0.0])


def test_uniform_rows_are_returned_unchanged():
    p = np.array([[0.25, 0.25, 0.25, 0.25], [0.5, 0.0, 0.5, 0.0]])
    q, g = normalize(p, [math.log(4), math.log(2)])
    np.testing.assert_array_equal(q, p)
    np.testing.assert_array_equal(g, [1.0, 1.0])
    q, g = normalize(p, [math.log(4) + 0.5e-9, math.log(2) - 0.5e-9])
    np.testing.assert_array_equal(g, [1.0, 1.0])
    with pytest.raises(RowError) as ei:
        normalize(p, [math.log(4), 0.3])
    assert ei.value.row == 1 and "[0.6931471806, 0.6931471806]" in str(ei.value)
    q, g = normalize(p, [0.1, 5.0], clip=True)
    np.testing.assert_array_equal(q, p)
    np.testing.assert_array_equal(g, [1.0, 1.0])
    q, g = normalize(p, target_ratio=1.0, clip=True)  # row 1 cannot reach log(4): clamped to log(2)
    np.testing.assert_array_equal(q, p)
    np.testing.assert_array_equal(g, [1.0, 1.0])


def test_single_nonzero_entry_and_single_class():
    q, g = normalize([0.0, 1.0, 0.0], 0.0)
    np.testing.assert_array_equal(q, [0.0, 1.0, 0.0])
    assert g == 1.0
    q, g = normalize([0.0, 1.0, 0.0], 0.7, clip=True)
    np.testing.assert_array_equal(q, [0.0, 1.0, 0.0])
    assert g == 1.0
    q, g = normalize([1.0], target_ratio=0.7)  # k = 1: log(1) = 0
    np.testing.assert_array_equal(q, [1.0])
    assert g == 1.0
    with pytest.raises(RowError):
        normalize([0.0, 1.0, 0.0], 0.7)


def test_clip_clamps_both_ends():
    p = np.array([[0.6, 0.3, 0.1, 0.0], [0.6, 0.3, 0.1, 0.0]])
    q, g = normalize(p, [5.0, -0.0], clip=True)
    np.testing.assert_array_equal(g, [0.0, np.inf])
    np.testing.assert_array_equal(q, [[1 / 3, 1 / 3, 1 / 3, 0.0], [1.0, 0.0, 0.0, 0.0]])
    q, g = normalize(p[0], np.inf, clip=True)
    assert g == 0.0
    with pytest.raises(RowError) as ei:
        normalize(p, [0.5, 1.2])
    msg = str(ei.value)
    assert ei.value.row == 1 and "1.2" in msg and "[0, 1.098612289]" in msg and "clip=True" in msg


def test_mixed_batch_matches_row_by_row():
    p = np.array(
        [
            [0.5, 0.25, 0.25, 0.0],
            [0.25, 0.25, 0.25, 0.25],  # uniform
            [0.4, 0.4, 0.2, 0.0],  # ties; target at lo
            [0.0, 0.0, 1.0, 0.0],  # single non-zero
            [0.7, 0.1, 0.1, 0.1],  # target at hi
            [0.1, 0.2, 0.3, 0.4],
        ]
    )
    t = np.array([0.6, math.log(4), math.log(2), 0.0, math.log(4), 1.0])
    q, g = normalize(p, t)
    for i in range(len(p)):
        qi, gi = normalize(p[i], t[i])
        np.testing.assert_array_equal(q[i], qi)
        assert g[i] == gi
    np.testing.assert_array_equal(g[1:5], [1.0, np.inf, 1.0, 0.0])
    np.testing.assert_allclose(entropy(q), t, atol=1e-9)


def test_empty_batch():
    q, g = normalize(np.zeros((0, 3)), 0.5)
    assert q.shape == (0, 3) and g.shape == (0,)


def test_input_is_not_modified():
    p = np.array([[0.5, 0.3, 0.2], [2.0, 1.0, 1.0]])
    before = p.copy()
    normalize(p, 0.5, renormalize=True)
    np.testing.assert_array_equal(p, before)


# ---------------------------------------------------------------------------------------------------------------------
# hard cases: the safeguard must converge


@pytest.mark.parametrize("frac", [1e-9, 1e-6, 1e-3, 0.5, 1 - 1e-3, 1 - 1e-6, 1 - 1e-9])
def test_converges_on_hard_cases(frac):
    rng = np.random.default_rng(4)
    rows = [
        softmax(rng.normal(size=1000) * 30.0),  # very peaked, k = 1000
        rng.dirichlet(np.full(1000, 0.05)),  # k = 1000, many tiny entries
        np.array([0.5 + 1e-12, 0.5 - 1e-12]),  # k = 2, near tie: gamma ~ 1e13 near the low end
        np.array([1 - 1e-12, 1e-12]),  # k = 2, extremely peaked
        np.array([0.9, 0.1]),  # k = 2
        np.r_[0.999, np.full(19, 0.001 / 19)],
        np.r_[1.0 - 1e-250 * 9, np.full(9, 1e-250)],  # log p down to -575
        np.r_[0.5, 0.5 - 1e-9, np.full(8, 1e-9 / 8)],
    ]
    k = max(len(r) for r in rows)
    p = np.zeros((len(rows), k))
    for i, r in enumerate(rows):
        p[i, : len(r)] = r / r.sum()
    lo, hi = reachable_range(p)
    t = lo + (hi - lo) * frac
    tol = 1e-9
    q, g = normalize(p, t, tol=tol, renormalize=True)
    assert np.all(np.isfinite(q)) and not np.any(np.isnan(g))
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(np.abs(entropy(q) - t) <= tol + 1e-12)
    assert_order_preserved(p, q)


def test_max_iter_exhausted_raises():
    p = np.array([[0.6, 0.3, 0.1], [0.5, 0.3, 0.2]])
    with pytest.raises(NlptoolError, match="max_iter=1"):
        normalize(p, 0.5, max_iter=1)


# ---------------------------------------------------------------------------------------------------------------------
# logits


def test_logits_equal_softmax_path():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(30, 7)) * 3
    x[0, 3] = -np.inf
    x[1, :] = [2.0, 2.0, 0.0, -1.0, 1.0, -np.inf, 0.5]
    q1, g1 = normalize(x, target_ratio=0.4, logits=True, clip=True)
    q2, g2 = normalize(softmax(x), target_ratio=0.4, clip=True)
    np.testing.assert_allclose(q1, q2, atol=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-9)
    assert q1[0, 3] == 0.0 and q1[1, 5] == 0.0 and q1[1, 0] == q1[1, 1]
    q, g = normalize(np.array([0.0, -1000.0]), 0.3, logits=True, clip=True)  # softmax underflows to one-hot
    np.testing.assert_array_equal(q, [1.0, 0.0])
    assert g == 1.0


def test_logits_errors():
    with pytest.raises(RowError) as ei:
        normalize(np.array([[0.0, 1.0], [np.nan, 0.0]]), 0.1, logits=True)
    assert ei.value.row == 1 and "nan" in str(ei.value)
    with pytest.raises(RowError) as ei:
        normalize(np.array([[0.0, np.inf]]), 0.1, logits=True)
    assert ei.value.row == 0
    with pytest.raises(RowError, match="all logits are -inf"):
        normalize(np.array([[0.0, 1.0], [-np.inf, -np.inf]]), 0.1, logits=True)


# ---------------------------------------------------------------------------------------------------------------------
# validation errors


@pytest.mark.parametrize(
    "bad, row, text",
    [
        ([0.5, np.nan, 0.5], 2, "nan"),
        ([0.5, np.inf, 0.5], 2, "inf"),
        ([0.6, -0.1, 0.5], 2, "negative"),
        ([0.0, 0.0, 0.0], 2, "all entries are zero"),
        ([0.5, 0.2, 0.2], 2, "renormalize=True"),
    ],
)
def test_bad_rows_name_the_row(bad, row, text):
    p = np.array([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5], bad, [0.5, 0.25, 0.25]])
    with pytest.raises(RowError) as ei:
        normalize(p, 0.5)
    assert ei.value.row == row and text in str(ei.value)
    assert isinstance(ei.value, NlptoolError)


def test_first_bad_row_is_reported():
    p = np.array([[0.5, 0.25, 0.25], [0.5, 0.2, 0.2], [0.5, np.nan, 0.5]])
    with pytest.raises(RowError) as ei:
        normalize(p, 0.5)
    assert ei.value.row == 1 and "sums to 0.9" in str(ei.value)


def test_renormalize():
    p = np.array([[2.0, 1.0, 1.0], [0.3, 0.3, 0.4]])
    q, g = normalize(p, 0.9, renormalize=True)
    q_ref, g_ref = normalize(p / p.sum(axis=1, keepdims=True), 0.9)
    np.testing.assert_allclose(q, q_ref, atol=1e-15)
    np.testing.assert_allclose(g, g_ref, rtol=1e-12)
    q, g = normalize(np.array([1e308, 1e308, 5e307]), 0.9, renormalize=True)  # sum overflows
    np.testing.assert_allclose(q, oracle(np.array([0.4, 0.4, 0.2]), 0.9)[0], atol=1e-12)
    with pytest.raises(RowError) as ei:
        normalize(np.array([[0.5, 0.5], [0.0, 0.0]]), 0.5, renormalize=True)
    assert ei.value.row == 1
    q, _ = normalize([0.5, 0.3, 0.2 + 1e-7], 0.9)  # within sum_tol
    assert entropy(q) == pytest.approx(0.9, abs=1e-9)
    with pytest.raises(RowError):
        normalize([0.5, 0.3, 0.2 + 1e-7], 0.9, sum_tol=1e-8)


def test_argument_errors():
    p = np.array([0.5, 0.3, 0.2])
    with pytest.raises(NlptoolError, match="exactly one"):
        normalize(p)
    with pytest.raises(NlptoolError, match="exactly one"):
        normalize(p, 0.5, target_ratio=0.5)
    with pytest.raises(NlptoolError, match=">= 0") as ei:
        normalize(p, -0.1)
    assert not isinstance(ei.value, RowError)
    with pytest.raises(NlptoolError, match=">= 0"):
        normalize(p, float("nan"))
    with pytest.raises(NlptoolError, match=">= 0"):
        normalize(p, target_ratio=-1.0)
    with pytest.raises(RowError) as ei:
        normalize(np.array([p, p, p]), [0.5, 0.5, np.nan])
    assert ei.value.row == 2
    with pytest.raises(NlptoolError, match="shape"):
        normalize(np.array([p, p]), [0.5, 0.5, 0.5])
    with pytest.raises(NlptoolError, match="1-D"):
        normalize(np.ones((2, 2, 2)) / 2, 0.5)
    with pytest.raises(NlptoolError, match="no classes"):
        normalize(np.zeros((2, 0)), 0.5)
    with pytest.raises(NlptoolError, match="tol"):
        normalize(p, 0.5, tol=0.0)
    with pytest.raises(NlptoolError, match="max_iter"):
        normalize(p, 0.5, max_iter=0)
    with pytest.raises(NlptoolError, match="numeric"):
        normalize(["a", "b"], 0.5)
    with pytest.raises(RowError):
        normalize(p, np.inf)  # out of range without clip


# ---------------------------------------------------------------------------------------------------------------------
# property tests


@st.composite
def dirichlet_rows(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(1, 8))
    k = draw(st.integers(2, 40))
    alpha = draw(st.sampled_from([0.05, 0.2, 0.5, 1.0, 5.0]))
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, alpha), size=n)
    if draw(st.booleans()):  # add exact zeros
        p[rng.random(p.shape) < 0.2] = 0.0
        p[:, 0] += p.sum(axis=1) == 0
    p /= p.sum(axis=1, keepdims=True)
    frac = rng.uniform(0.0, 1.0, size=n)
    return p, frac


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dirichlet_rows())
def test_property_reaches_target_and_preserves_order(case):
    p, frac = case
    lo, hi = reachable_range(p)
    t = lo + (hi - lo) * frac
    q, g = normalize(p, t, renormalize=True)
    assert np.all(np.abs(entropy(q) - t) <= 1e-9)
    assert np.all(g >= 0) and not np.any(np.isnan(g))
    assert np.all(q[p == 0] == 0)
    assert_order_preserved(p, q)
    # argsort preserved wherever the powered values are normal floats (not underflowed)
    for row_p, row_q in zip(p, q, strict=True):
        keep = row_q > 1e-300
        assert np.array_equal(np.argsort(row_p[keep], kind="stable"), np.argsort(row_q[keep], kind="stable"))


@settings(max_examples=60, deadline=None)
@given(dirichlet_rows())
def test_property_matches_oracle(case):
    p, frac = case
    lo, hi = reachable_range(p)
    t = lo + (hi - lo) * (0.05 + 0.9 * frac)
    q, g = normalize(p, t, renormalize=True)
    for i in range(len(p)):
        if lo[i] == hi[i]:
            assert g[i] == 1.0
            continue
        q_ref, g_ref = oracle(p[i], t[i])
        np.testing.assert_allclose(q[i], q_ref, atol=1e-9)
        assert g[i] == pytest.approx(g_ref, rel=1e-6)

"""Tests for nlptool.core.multitask: gradient combination (Su, kexue.fm/archives/8870, 8896, 8907).

Oracles: the hand-computed table of /work/shared/research/multitask.md, closed forms (two-task MGDA, one-auxiliary
main-aux), scipy's NNLS and SLSQP, a Frank-Wolfe solver and random simplex points written here, PCGrad by explicit
vector projections, and autograd of the generalised mean.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize, nnls

from nlptool.core.errors import NlptoolError
from nlptool.core.multitask import (
    LOSS_WEIGHTS,
    MAX_EXACT_TASKS,
    METHODS,
    combine,
    diagnostics,
    gram_matrix,
    loss_norm_weights,
    min_norm_simplex,
    nonneg_least_squares_gram,
    pcgrad_weights,
    weights_from_gram,
)


def _t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _random_grads(t: int, p: int, seed: int, *, conflict: bool = True) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(t, p, dtype=torch.float64, generator=gen) / math.sqrt(p)
    if conflict:  # a shared component of random sign and random norms: realistic mixes of agreement and conflict
        g = g + 0.5 * torch.randn(t, 1, dtype=torch.float64, generator=gen) * torch.randn(
            p, dtype=torch.float64, generator=gen
        ) / math.sqrt(p)
        g = g * torch.exp(torch.randn(t, 1, dtype=torch.float64, generator=gen))
    return g


RANDOM_SETS = [(t, p, s) for t in (2, 3, 4, 5, 8) for p in (3, 10, 50) for s in range(6)]


# ---------------------------------------------------------------------------------------------------------------
# the hand-checkable table

TABLE = [
    # gradients, MGDA alpha, MGDA u, normalised sum, plain sum
    (((1, 0), (-1, 1)), (0.6, 0.4), (0.2, 0.4), (0.2928932188, 0.7071067812), (0, 1)),
    (((1, 0), (2, 0)), (1, 0), (1, 0), (2, 0), (3, 0)),
    (((1, 0), (-2, 0)), (2 / 3, 1 / 3), (0, 0), (0, 0), (-1, 0)),
    (((3, 0), (0, 1)), (0.1, 0.9), (0.3, 0.9), (1, 1), (3, 1)),
    (
        ((3, 0, 0), (0, 1, 0), (0, 0, 2)),
        (0.0816326531, 0.7346938776, 0.1836734694),
        (3 * 0.0816326531, 0.7346938776, 2 * 0.1836734694),
        (1, 1, 1),
        (3, 1, 2),
    ),
    (((1, 0), (-1, 0.1), (-1, -0.1)), (0.5, 0.25, 0.25), (0, 0), None, None),
]


@pytest.mark.parametrize("rows, alpha, u, normsum, plainsum", TABLE)
def test_hand_table(rows, alpha, u, normsum, plainsum):
    g = _t(*rows)
    d, w = combine(g, "mgda")
    np.testing.assert_allclose(w.numpy(), alpha, atol=1e-10)
    np.testing.assert_allclose(d.numpy(), u, atol=1e-10)
    if normsum is not None:
        d, _ = combine(g, "gradnorm-sum")
        np.testing.assert_allclose(d.numpy(), normsum, atol=1e-10)
    if plainsum is not None:
        d, w = combine(g, "sum")
        np.testing.assert_allclose(d.numpy(), plainsum, atol=0)
        np.testing.assert_array_equal(w.numpy(), np.ones(len(rows)))


def test_hand_orthogonal_alpha_proportional_to_inverse_squared_norms():
    norms = np.array([3.0, 1.0, 2.0])
    expected = (1 / norms**2) / (1 / norms**2).sum()
    _, w = combine(torch.diag(torch.tensor(norms)), "mgda")
    np.testing.assert_allclose(w.numpy(), expected, atol=1e-14)


def test_libmtl_clamp_defect_absent():
    # LibMTL clamps alpha to [0.001, 0.999] and returns u = (1.001, 0) here.
    d, w = combine(_t((1, 0), (2, 0)), "mgda")
    assert d.tolist() == [1.0, 0.0]
    assert w.tolist() == [1.0, 0.0]


def test_hand_pcgrad_and_main_aux():
    g = _t((1, 0), (-1, 1))
    d, w = combine(g, "pcgrad")
    np.testing.assert_allclose(d.numpy(), (0.5, 1.5), atol=1e-15)
    np.testing.assert_allclose(w.numpy(), (2.0, 1.5), atol=1e-15)  # g1 + g2 + 1·g1 + 0.5·g2
    d, w = combine(g, "main-aux", main=0)
    np.testing.assert_allclose(w.numpy(), (1.0, 0.5), atol=1e-15)
    np.testing.assert_allclose(d.numpy(), (0.5, 0.5), atol=1e-15)


def test_hand_loss_weights():
    np.testing.assert_allclose(loss_norm_weights("realtime", losses=[0.5, 4]), (2.0, 0.25))
    np.testing.assert_allclose(
        loss_norm_weights("initial", initial_losses=[math.log(3), math.log(9)]), (1 / math.log(3), 1 / math.log(9))
    )
    np.testing.assert_allclose(loss_norm_weights("prior", prior_losses=[0.5, 0.25]), (2.0, 4.0))
    # generalised mean: gamma = 1 is the arithmetic mean (1/n each), gamma = 0 the geometric mean G / (n L_i)
    np.testing.assert_allclose(loss_norm_weights("mean", losses=[0.5, 4], gamma=1), (0.5, 0.5))
    np.testing.assert_allclose(
        loss_norm_weights("mean", losses=[0.5, 4], gamma=0), (math.sqrt(2) / 1, math.sqrt(2) / 8)
    )
    # gamma = 2: L = sqrt((0.25 + 16) / 2); w_i = L_i / (2 L)
    big = math.sqrt(8.125)
    np.testing.assert_allclose(loss_norm_weights("mean", losses=[0.5, 4], gamma=2), (0.25 / big, 2 / big))
    # through combine: the direction is the weighted sum
    d, w = combine(_t((1, 0), (0, 1)), "loss-norm", losses=[0.5, 4])
    np.testing.assert_allclose(d.numpy(), (2.0, 0.25))
    d, w = combine(_t((1, 0), (0, 1)), "loss-norm", loss_weights="prior", prior_losses=[0.5, 0.25])
    np.testing.assert_allclose(d.numpy(), (2.0, 4.0))


@pytest.mark.parametrize("gamma", [-7.0, -2.0, -0.5, 0.5, 1.0, 1.5, 3.0, 20.0])
def test_generalised_mean_weights_are_its_gradient(gamma):
    losses = torch.tensor([0.3, 1.7, 2.2, 0.05], dtype=torch.float64, requires_grad=True)
    mean = (losses**gamma).mean() ** (1 / gamma)
    (grad,) = torch.autograd.grad(mean, losses)
    np.testing.assert_allclose(loss_norm_weights("mean", losses=losses.detach(), gamma=gamma), grad.numpy(), rtol=1e-12)


def test_generalised_mean_moves_weight_to_max_and_min():
    losses = [0.3, 1.7, 2.2]
    hi = loss_norm_weights("mean", losses=losses, gamma=200.0)
    lo = loss_norm_weights("mean", losses=losses, gamma=-200.0)
    assert np.all(np.isfinite(hi)) and np.all(np.isfinite(lo))
    assert np.argmax(hi) == 2 and hi[2] > 0.99
    assert np.argmax(lo) == 0 and lo[0] > 0.99


def test_zero_loss_weights():
    np.testing.assert_array_equal(loss_norm_weights("realtime", losses=[0.0, 2.0]), (0.0, 0.5))
    np.testing.assert_allclose(loss_norm_weights("mean", losses=[0.0, 2.0], gamma=1), (0.5, 0.5))
    np.testing.assert_allclose(loss_norm_weights("mean", losses=[0.0, 2.0], gamma=2), (0.0, 1 / math.sqrt(2)))
    assert np.all(np.isfinite(loss_norm_weights("mean", losses=[0.0, 2.0], gamma=0.5)))
    np.testing.assert_array_equal(loss_norm_weights("mean", losses=[0.0, 2.0], gamma=0), (0.0, 0.0))
    np.testing.assert_array_equal(loss_norm_weights("mean", losses=[0.0, 0.0], gamma=2), (0.0, 0.0))


# ---------------------------------------------------------------------------------------------------------------
# MGDA: exactness


def _fw(gram: np.ndarray, iters: int) -> np.ndarray:
    """Frank-Wolfe with exact line search (Sener & Koltun, Algorithm 2), written here as a reference."""
    t = gram.shape[0]
    a = np.full(t, 1.0 / t)
    for _ in range(iters):
        k = int(np.argmin(gram @ a))
        e = np.zeros(t)
        e[k] = 1.0
        v1v1, v1v2, v2v2 = a @ gram @ a, a @ gram @ e, gram[k, k]
        if v1v2 >= v1v1:
            gam = 0.0
        elif v1v2 >= v2v2:
            gam = 1.0
        else:
            gam = (v1v1 - v1v2) / (v1v1 + v2v2 - 2 * v1v2)
        a = (1 - gam) * a + gam * e
    return a


@pytest.mark.parametrize("t, p, seed", RANDOM_SETS)
def test_mgda_kkt(t, p, seed):
    g = _random_grads(t, p, seed)
    u, w = combine(g, "mgda")
    alpha = w.numpy()
    assert np.all(alpha >= 0) and abs(alpha.sum() - 1) < 1e-12
    inner = (g @ u).numpy()
    usq = float(u @ u)
    assert np.all(inner >= usq - 1e-9), (inner, usq)
    support = alpha > 0
    np.testing.assert_allclose(inner[support], usq, atol=1e-9)


@pytest.mark.parametrize("t, p, seed", RANDOM_SETS)
def test_mgda_not_beaten_by_simplex_samples_or_frank_wolfe(t, p, seed):
    g = _random_grads(t, p, seed)
    m = gram_matrix(g).numpy()
    _, w = combine(g, "mgda")
    ours = float(w.numpy() @ m @ w.numpy())
    rng = np.random.default_rng(seed)
    samples = rng.dirichlet(np.full(t, 0.3), size=4000)
    samples = np.vstack([samples, np.eye(t)])
    assert ours <= np.einsum("bi,ij,bj->b", samples, m, samples).min() * (1 + 1e-12) + 1e-15
    fw = _fw(m, 1000)
    assert ours <= fw @ m @ fw * (1 + 1e-12) + 1e-15


@pytest.mark.parametrize("t, p, seed", [(3, 10, 0), (5, 50, 1), (8, 50, 2), (8, 4, 3)])
def test_mgda_matches_slsqp(t, p, seed):
    g = _random_grads(t, p, seed)
    m = gram_matrix(g).numpy()
    res = minimize(
        lambda a: a @ m @ a,
        np.full(t, 1 / t),
        jac=lambda a: 2 * m @ a,
        method="SLSQP",
        bounds=[(0, 1)] * t,
        constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1}],
        options={"ftol": 1e-16, "maxiter": 1000},
    )
    alpha = min_norm_simplex(m)
    assert alpha @ m @ alpha <= res.fun + 1e-12


@pytest.mark.parametrize("seed", range(20))
def test_mgda_two_task_closed_form(seed):
    g = _random_grads(2, 7, seed)
    g1, g2 = g[0], g[1]
    a1 = float(torch.clamp((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0, 1))
    _, w = combine(g, "mgda")
    np.testing.assert_allclose(w.numpy(), (a1, 1 - a1), atol=1e-12)


def test_mgda_degenerate_duplicate_and_collinear_gradients():
    # duplicates: the alpha is not unique, the direction is; KKT holds
    g = _t((1, 0), (1, 0), (-1, 1))
    u, w = combine(g, "mgda")
    np.testing.assert_allclose(u.numpy(), (0.2, 0.4), atol=1e-12)
    assert abs(float(w.sum()) - 1) < 1e-12
    # three collinear gradients in one dimension, zero in the hull
    u, _ = combine(_t((1.0,), (-3.0,), (2.0,)), "mgda")
    assert abs(float(u)) < 1e-12


def test_mgda_normalize():
    g = _t((3, 0), (0, 1))
    d, w = combine(g, "mgda", normalize="l2")
    np.testing.assert_allclose(w.numpy(), (1 / 6, 0.5), atol=1e-14)
    np.testing.assert_allclose(d.numpy(), (0.5, 0.5), atol=1e-14)
    d, w = combine(g, "mgda", normalize="loss", losses=[3.0, 1.0])
    np.testing.assert_allclose(d.numpy(), (0.5, 0.5), atol=1e-14)
    # l2: the min-norm point of the unit vectors, so the KKT conditions hold for the normalised gradients
    g = _random_grads(5, 20, 3)
    u, w = combine(g, "mgda", normalize="l2")
    unit = g / g.norm(dim=1, keepdim=True)
    inner = (unit @ u).numpy()
    assert np.all(inner >= float(u @ u) - 1e-9)


@pytest.mark.parametrize("t", [2, 5, 8])
def test_mgda_scale_of_gradients(t):
    # exactness does not depend on the overall scale of the gradients
    g = _random_grads(t, 10, 7)
    _, w1 = combine(g, "mgda")
    _, w2 = combine(g * 1e-6, "mgda")
    _, w3 = combine(g * 1e6, "mgda")
    np.testing.assert_allclose(w1.numpy(), w2.numpy(), atol=1e-9)
    np.testing.assert_allclose(w1.numpy(), w3.numpy(), atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# main-aux


@pytest.mark.parametrize("t, p, seed", RANDOM_SETS)
def test_main_aux_first_order_and_nnls(t, p, seed):
    g = _random_grads(t, p, seed)
    main = seed % t
    u, w = combine(g, "main-aux", main=main)
    assert float(w[main]) == 1.0
    aux = [i for i in range(t) if i != main]
    inner = (g @ u).numpy()
    assert np.all(inner[aux] >= -1e-9)
    # scipy's NNLS on the vectors: min ||A lam - b|| with A = aux gradients as columns, b = -g_main
    lam, _ = nnls(g[aux].numpy().T, -g[main].numpy())
    ref = g[main].numpy() + lam @ g[aux].numpy()
    ours = u.numpy()
    assert ours @ ours <= ref @ ref + 1e-12
    np.testing.assert_allclose(ours, ref, atol=1e-7)


@pytest.mark.parametrize("seed", range(20))
def test_main_aux_one_auxiliary_closed_form(seed):
    g = _random_grads(2, 6, seed)
    lam = max(-float(g[0] @ g[1]), 0.0) / float(g[1] @ g[1])
    _, w = combine(g, "main-aux", main=0)
    np.testing.assert_allclose(w.numpy(), (1.0, lam), atol=1e-14)
    _, w = combine(g, "main-aux", main=1)
    lam = max(-float(g[0] @ g[1]), 0.0) / float(g[0] @ g[0])
    np.testing.assert_allclose(w.numpy(), (lam, 1.0), atol=1e-14)


# ---------------------------------------------------------------------------------------------------------------
# PCGrad


def _pcgrad_oracle(g: torch.Tensor, orders) -> torch.Tensor:
    out = torch.zeros(g.shape[1], dtype=torch.float64)
    for i, order in enumerate(orders):
        gi = g[i].clone()
        for j in order:
            d = gi @ g[j]
            if d < 0:
                gi = gi - d / (g[j] @ g[j]) * g[j]
        out += gi
    return out


@pytest.mark.parametrize("t, p, seed", [(2, 5, 0), (3, 10, 1), (4, 10, 2), (5, 50, 3), (8, 50, 4)])
def test_pcgrad_matches_projection_oracle(t, p, seed):
    g = _random_grads(t, p, seed)
    rng = np.random.default_rng(seed + 100)
    orders = [[int(j) for j in rng.permutation([j for j in range(t) if j != i])] for i in range(t)]
    u, w = combine(g, "pcgrad", orders=orders)
    np.testing.assert_allclose(u.numpy(), _pcgrad_oracle(g, orders).numpy(), atol=1e-12)
    assert np.all(w.numpy() >= 1.0)


def test_pcgrad_seed_is_reproducible_and_matters():
    g = _random_grads(5, 10, 11)
    a = combine(g, "pcgrad", seed=3)[1]
    assert torch.equal(a, combine(g, "pcgrad", seed=3)[1])
    assert any(not torch.equal(a, combine(g, "pcgrad", seed=s)[1]) for s in range(10))


@pytest.mark.parametrize("seed", range(20))
def test_pcgrad_two_tasks_leaves_no_conflict(seed):
    g = _random_grads(2, 5, seed)
    u, w = combine(g, "pcgrad", seed=seed)
    c = w.numpy()
    # projected rows: g1_pc = g1 + (w2 - 1) g2 on the conflict, never conflicting with g2
    g1pc = g[0] + (c[1] - 1) * g[1]
    g2pc = g[1] + (c[0] - 1) * g[0]
    assert float(g1pc @ g[1]) >= -1e-12 and float(g2pc @ g[0]) >= -1e-12
    assert float(g[0] @ u) >= -1e-12 and float(g[1] @ u) >= -1e-12


# ---------------------------------------------------------------------------------------------------------------
# properties shared by the methods


def _kwargs(method: str, t: int) -> dict:
    if method == "loss-norm":
        return {"losses": np.linspace(0.5, 2.0, t)}
    if method == "main-aux":
        return {"main": 0}
    return {}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("t, seed", [(2, 0), (3, 1), (5, 2), (8, 3)])
def test_permutation_equivariance(method, t, seed):
    g = _random_grads(t, 12, seed)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(t)
    inv = np.argsort(perm)
    kw = _kwargs(method, t)
    kw_p = dict(kw)
    if method == "loss-norm":
        kw_p["losses"] = kw["losses"][perm]
    if method == "main-aux":
        kw_p["main"] = int(inv[0])
    if method == "pcgrad":
        orders = [[int(j) for j in rng.permutation([j for j in range(t) if j != i])] for i in range(t)]
        kw["orders"] = orders
        kw_p["orders"] = [[int(inv[j]) for j in orders[perm[k]]] for k in range(t)]
    u, w = combine(g, method, **kw)
    u_p, w_p = combine(g[perm], method, **kw_p)
    np.testing.assert_allclose(w_p.numpy(), w.numpy()[perm], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(u_p.numpy(), u.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("t, seed", [(2, 0), (3, 1), (5, 2)])
def test_gradnorm_sum_scale_invariant(t, seed):
    g = _random_grads(t, 9, seed)
    u, _ = combine(g, "gradnorm-sum")
    g2 = g.clone()
    g2[seed % t] *= 37.5
    u2, _ = combine(g2, "gradnorm-sum")
    np.testing.assert_allclose(u2.numpy(), u.numpy(), atol=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_gradnorm_sum_two_tasks_never_conflicts(seed):
    g = _random_grads(2, 5, seed)
    u, _ = combine(g, "gradnorm-sum")
    assert np.all((g @ u).numpy() >= -1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_weights_from_gram_agrees_with_combine(method):
    g = _random_grads(4, 30, 5)
    kw = _kwargs(method, 4)
    u, w = combine(g, method, **kw)
    m = (g @ g.T).numpy()
    w2 = weights_from_gram(m, method, **kw)
    np.testing.assert_allclose(w2, w.numpy(), atol=1e-12)
    w3 = weights_from_gram(torch.from_numpy(m), method, **kw)
    np.testing.assert_allclose(w3, w.numpy(), atol=1e-12)
    np.testing.assert_allclose(u.numpy(), w.numpy() @ g.numpy(), atol=1e-12)


def test_float32_gradients_keep_dtype():
    g = _random_grads(3, 10, 0).float()
    u, w = combine(g, "mgda")
    assert u.dtype == torch.float32 and w.dtype == torch.float64
    assert u.shape == (10,) and w.shape == (3,)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 6).flatmap(
        lambda t: st.tuples(
            st.just(t),
            st.lists(st.floats(-10, 10, allow_nan=False, allow_infinity=False), min_size=t * 3, max_size=t * 3),
        )
    )
)
def test_mgda_kkt_hypothesis(case):
    t, flat = case
    g = torch.tensor(flat, dtype=torch.float64).reshape(t, 3)
    u, w = combine(g, "mgda")
    assert torch.isfinite(w).all()
    scale = max(float(g.norm(dim=1).max()) ** 2, 1.0)
    inner = (g @ u).numpy()
    usq = float(u @ u)
    live = (g.norm(dim=1) > 0).numpy()
    assert np.all(inner[live] >= usq - 1e-9 * scale)
    support = w.numpy() > 0
    np.testing.assert_allclose(inner[support], usq, atol=1e-9 * scale)


# ---------------------------------------------------------------------------------------------------------------
# zero gradients


def test_zero_gradient_gradnorm_sum():
    g = _t((0, 0), (3, 4))
    u, w = combine(g, "gradnorm-sum")
    assert w.tolist() == [0.0, 0.2]
    np.testing.assert_allclose(u.numpy(), (0.6, 0.8))


def test_zero_gradient_mgda_drops_the_task():
    g = _t((0, 0), (1, 0), (-1, 1))
    u, w = combine(g, "mgda")
    np.testing.assert_allclose(w.numpy(), (0.0, 0.6, 0.4), atol=1e-12)
    np.testing.assert_allclose(u.numpy(), (0.2, 0.4), atol=1e-12)
    # the strict min-norm point of the full hull is 0
    np.testing.assert_allclose(min_norm_simplex(gram_matrix(g)), (1, 0, 0), atol=1e-12)
    # normalize='l2' with a zero gradient: no 0/0
    u, w = combine(g, "mgda", normalize="l2")
    assert torch.isfinite(w).all() and w[0] == 0


def test_all_zero_gradients():
    g = torch.zeros(3, 4, dtype=torch.float64)
    for method in METHODS:
        u, w = combine(g, method, **_kwargs(method, 3))
        assert torch.isfinite(w).all(), method
        assert torch.all(u == 0), method
    assert combine(g, "mgda")[1].tolist() == [0.0, 0.0, 0.0]
    assert combine(g, "gradnorm-sum")[1].tolist() == [0.0, 0.0, 0.0]


def test_zero_gradient_pcgrad_and_main_aux():
    g = _t((1, 0), (0, 0), (-1, 1))
    u, w = combine(g, "pcgrad", seed=0)
    assert torch.isfinite(w).all()
    np.testing.assert_allclose(u.numpy(), _pcgrad_oracle(g[[0, 2]], [[1], [0]]).numpy(), atol=1e-15)
    u, w = combine(g, "main-aux", main=0)
    np.testing.assert_allclose(w.numpy(), (1.0, 0.0, 0.5), atol=1e-15)
    u, w = combine(_t((0, 0), (1, 0)), "main-aux", main=0)
    assert w.tolist() == [1.0, 0.0] and u.tolist() == [0.0, 0.0]


def test_diagnostics():
    g = _t((1, 0), (-1, 1), (0, 0))
    u, w = combine(g, "mgda")
    d = diagnostics(gram_matrix(g), w)
    np.testing.assert_allclose(d.grad_norms, (1, math.sqrt(2), 0))
    np.testing.assert_allclose(d.cosines, [[1, -1 / math.sqrt(2), 0], [-1 / math.sqrt(2), 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(d.inner, (0.2, 0.2, 0), atol=1e-12)
    np.testing.assert_allclose(d.min_alignment, 0.2 / math.sqrt(2), atol=1e-12)
    np.testing.assert_allclose(d.direction_norm, math.sqrt(0.2), atol=1e-12)
    assert set(d.to_dict()) == {"grad_norms", "cosines", "inner", "min_alignment", "direction_norm"}
    assert math.isnan(diagnostics(np.zeros((2, 2)), [1.0, 1.0]).min_alignment)


# ---------------------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: combine(torch.ones(4, dtype=torch.float64), "sum"), "2-D"),
        (lambda: combine([[1.0, 0.0]], "sum"), "torch.Tensor"),
        (lambda: combine(torch.ones(2, 3, dtype=torch.long), "sum"), "floating"),
        (lambda: combine(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "sum"), "NaN"),
        (lambda: combine(_t((1, 0), (0, 1)), "magic"), "unknown multi-task method 'magic'"),
        (
            lambda: combine(_t((1, 0), (0, 1)), "loss-norm", losses=[1.0, 2.0, 3.0]),
            r"losses must hold one value per task \(2\)",
        ),
        (lambda: combine(_t((1, 0), (0, 1)), "loss-norm"), "needs losses"),
        (lambda: combine(_t((1, 0), (0, 1)), "loss-norm", loss_weights="initial"), "needs initial_losses"),
        (
            lambda: combine(_t((1, 0), (0, 1)), "loss-norm", loss_weights="initial", initial_losses=[1.0]),
            "initial_losses must hold",
        ),
        (lambda: combine(_t((1, 0), (0, 1)), "loss-norm", loss_weights="bogus", losses=[1, 2]), "unknown loss_weights"),
        (lambda: combine(_t((1, 0), (0, 1)), "loss-norm", loss_weights="mean", losses=[1, 2]), "finite gamma"),
        (lambda: combine(_t((1, 0), (0, 1)), "loss-norm", losses=[-1.0, 2.0]), ">= 0"),
        (lambda: combine(_t((1, 0), (0, 1)), "main-aux"), "needs main="),
        (lambda: combine(_t((1, 0), (0, 1)), "main-aux", main=2), r"main=2 is out of range for 2 tasks \(0..1\)"),
        (lambda: combine(_t((1, 0), (0, 1)), "main-aux", main=-1), "out of range"),
        (
            lambda: combine(
                _t(
                    (1, 0),
                ),
                "mgda",
            ),
            "at least 2 tasks",
        ),
        (
            lambda: combine(
                _t(
                    (1, 0),
                ),
                "pcgrad",
            ),
            "at least 2 tasks",
        ),
        (
            lambda: combine(
                _t(
                    (1, 0),
                ),
                "main-aux",
                main=0,
            ),
            "at least 2 tasks",
        ),
        (lambda: combine(_t((1, 0), (0, 1)), "mgda", normalize="max"), "unknown normalize"),
        (lambda: combine(_t((1, 0), (0, 1)), "sum", normalize="l2"), "mgda' only"),
        (lambda: combine(_t((1, 0), (0, 1)), "mgda", normalize="loss"), "needs losses"),
        (lambda: combine(_t((1, 0), (0, 1)), "mgda", normalize="loss", losses=[0.0, 1.0]), "positive losses"),
        (lambda: combine(_t((1, 0), (0, 1)), "pcgrad", orders=[[1]]), "one order per task"),
        (lambda: combine(_t((1, 0), (0, 1)), "pcgrad", orders=[[0], [0]]), "permutation of the other tasks"),
        (lambda: weights_from_gram(np.array([[1.0, 2.0], [0.0, 1.0]]), "sum"), "not symmetric"),
        (lambda: weights_from_gram(np.ones((2, 3)), "sum"), "square"),
        (lambda: weights_from_gram(-np.eye(2), "sum"), "negative diagonal"),
        (lambda: weights_from_gram(np.eye(MAX_EXACT_TASKS + 1), "mgda", normalize="max"), "unknown normalize"),
        (lambda: nonneg_least_squares_gram(np.eye(3), main=None), "needs main="),
        (lambda: diagnostics(np.eye(2), [1.0]), "weights must hold"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(NlptoolError, match=match):
        call()


def test_loss_weight_kinds_listed():
    assert set(LOSS_WEIGHTS) == {"initial", "prior", "realtime", "mean"}
    assert pcgrad_weights(np.eye(2)).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("t, p, seed", RANDOM_SETS)
def test_mgda_active_set_agrees_with_enumeration(t, p, seed):
    from nlptool.core.multitask import _min_norm_enumerate, _min_norm_wolfe, _simplex_kkt_ok

    m = gram_matrix(_random_grads(t, p, seed)).numpy()
    m = m / np.diag(m).max()
    a_enum = _min_norm_enumerate(m)
    a_wolfe = _min_norm_wolfe(m)
    assert a_wolfe is not None
    assert _simplex_kkt_ok(m, a_enum, 1e-12) and _simplex_kkt_ok(m, a_wolfe, 1e-12)
    np.testing.assert_allclose(a_wolfe @ m @ a_wolfe, a_enum @ m @ a_enum, rtol=1e-10, atol=1e-12)


def test_mgda_many_tasks_through_the_active_set():
    g = _random_grads(20, 40, 0)
    u, w = combine(g, "mgda")
    inner = (g @ u).numpy()
    usq = float(u @ u)
    assert np.all(inner >= usq - 1e-9)
    np.testing.assert_allclose(inner[w.numpy() > 0], usq, atol=1e-9)


@pytest.mark.parametrize("t, p, seed", RANDOM_SETS)
def test_main_aux_active_set_agrees_with_enumeration(t, p, seed):
    from nlptool.core.multitask import _nnls_active_set, _nnls_enumerate, _nnls_kkt_ok

    m = gram_matrix(_random_grads(t, p, seed)).numpy()
    m = m / np.diag(m).max()
    main = seed % t
    aux = np.array([i for i in range(t) if i != main])
    w_enum = _nnls_enumerate(m, main, aux)
    w_as = _nnls_active_set(m, main, aux)
    assert w_as is not None
    assert _nnls_kkt_ok(m, w_enum, aux, 1e-12) and _nnls_kkt_ok(m, w_as, aux, 1e-12)
    np.testing.assert_allclose(w_as @ m @ w_as, w_enum @ m @ w_enum, rtol=1e-10, atol=1e-12)


def test_main_aux_many_tasks_and_degenerate():
    g = _random_grads(20, 40, 1)
    u, w = combine(g, "main-aux", main=3)
    inner = (g @ u).numpy()
    aux = [i for i in range(20) if i != 3]
    assert np.all(inner[aux] >= -1e-9)
    lam, _ = nnls(g[aux].numpy().T, -g[3].numpy())
    np.testing.assert_allclose(u.numpy(), g[3].numpy() + lam @ g[aux].numpy(), atol=1e-7)
    # duplicated auxiliaries and P < T: the direction is unique, lambda is not
    g = _t((1, 0), (-1, 1), (-1, 1), (-1, -1))
    u, w = combine(g, "main-aux", main=0)
    assert np.all((g @ u).numpy()[1:] >= -1e-12)
    np.testing.assert_allclose(u.numpy(), (0, 0), atol=1e-12)

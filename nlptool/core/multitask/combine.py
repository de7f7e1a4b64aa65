r"""Gradient combination for multi-task learning: one update direction from T per-task gradients.

Every method turns the per-task gradients ``g₁ … g_T`` of the *shared* parameters θ (flattened, one row each of a
``(T, P)`` tensor) into one direction ``u = Σᵢ wᵢ gᵢ`` and returns ``(u, w)``. Apart from ``loss-norm`` (which needs
only the losses) every method depends on the gradients only through the Gram matrix ``Mᵢⱼ = ⟨gᵢ, gⱼ⟩``, so each is
also available as :func:`weights_from_gram`: a trainer can accumulate ``M`` in float64 parameter by parameter
without ever holding the ``(T, P)`` matrix, get ``w``, and form ``Σ wᵢ gᵢ`` per parameter. :func:`combine` itself
goes through :func:`weights_from_gram`, so both entry points give the same weights.

Methods (``method=``):

``sum``
    ``w = 1``: the plain summed loss.
``loss-norm``
    Su's part 1, weights on the losses (``L = Σ wᵢ Lᵢ``, ``sg`` = stop-gradient), chosen by ``loss_weights=``:
    ``initial`` ``wᵢ = 1 / Lᵢ⁽⁰⁾`` (the losses at step 0, ``initial_losses``; a K-class cross-entropy starts near
    ``log K``); ``prior`` ``wᵢ = 1 / Lᵢ⁽ᵖʳⁱᵒʳ⁾`` (the loss of predicting the label prior: the label entropy, or
    ``E‖y − μ‖²`` for regression; ``prior_losses``); ``realtime`` ``wᵢ = 1 / sg(Lᵢ)`` (``Σ ∇Lᵢ / Lᵢ = ∇ Σ log Lᵢ``,
    the gradient of n·log of the geometric mean: scale invariant); ``mean`` the gradient of the generalised mean
    ``L(γ) = ((1/n) Σ Lᵢ^γ)^(1/γ)``, i.e. ``wᵢ = ∂L(γ)/∂Lᵢ = (1/n) Lᵢ^(γ−1) L(γ)^(1−γ)`` (``γ = 1``: ``1/n`` each,
    the arithmetic mean; ``γ = 0``, the limit: ``G / (n Lᵢ)`` with ``G`` the geometric mean, parallel to
    ``realtime``; ``γ → ±∞`` moves the weight onto the largest / smallest loss). A loss of exactly 0 gets weight 0 (a
    non-negative loss at 0 is at its minimum; ``1/0 · 0`` would be NaN); a negative loss is an error.
``gradnorm-sum``
    ``wᵢ = 1 / ‖gᵢ‖``, ``u = Σ gᵢ / ‖gᵢ‖``: Su's gradient normalisation (part 1), invariant to scaling *and* shifting
    each loss; his choice for RoFormerV2's 92 tasks. GradNorm (Chen et al. 2018) approximates it on the last shared
    layer. With two tasks ``u`` never conflicts (``⟨gᵢ, u⟩ ≥ 0``); with three or more it can.
``mgda``
    Sener & Koltun's multiple-gradient descent (Su's part 2): the min-norm point of the convex hull of the gradients,
    ``α* = argmin_{α ∈ simplex} ½‖Σ αᵢ gᵢ‖² = ½ αᵀMα``, ``u = Σ α*ᵢ gᵢ``. It is the dual of
    ``max_u minᵢ ⟨gᵢ, u⟩ − ½‖u‖²``; at the optimum ``⟨gᵢ, u⟩ ≥ ‖u‖²`` for every i, with equality where ``α*ᵢ > 0``
    (KKT), so a small step ``−ηu`` lowers every loss unless ``u = 0`` (Pareto-stationary). Solved *exactly* in
    float64 (:func:`min_norm_simplex`: Wolfe's active-set min-norm-point algorithm, accepted only when the KKT
    conditions hold to 1e-12, else every support enumerated; no Frank-Wolfe, no clamping of
    α to [0.001, 0.999] as LibMTL's two-task solver does). ``normalize=`` rescales the gradients first, as Sener &
    Koltun's ``gradient_normalizers``: ``none``; ``l2`` ``ĝᵢ = gᵢ / ‖gᵢ‖``; ``loss`` ``ĝᵢ = gᵢ / Lᵢ``. The returned
    direction is the min-norm point of the *rescaled* hull, ``u = Σ α*ᵢ ĝᵢ``, so ``w = α* / scale`` and the KKT
    guarantee holds for the ĝᵢ (hence no task conflicts with u). Note: their training script instead back-propagates
    ``Σ α*ᵢ Lᵢ`` (α* applied to the unscaled gᵢ), which loses that guarantee; ``min_norm_simplex`` gives α* for anyone
    who wants that.
``pcgrad``
    Yu et al. 2020 (Algorithm 1): for each task i, ``gᵢᴾᶜ ← gᵢ``; for j ≠ i in a random order, if ``⟨gᵢᴾᶜ, gⱼ⟩ < 0``
    then ``gᵢᴾᶜ ← gᵢᴾᶜ − ⟨gᵢᴾᶜ, gⱼ⟩ / ‖gⱼ‖² · gⱼ`` (projected against the *original* gⱼ); ``u = Σᵢ gᵢᴾᶜ``. Every
    projection subtracts a multiple of an original gradient, so each ``gᵢᴾᶜ = Σₖ Cᵢₖ gₖ`` and ``u`` *is* a weighted
    sum of the original gradients after all: ``w = Cᵀ1`` (column sums). The coefficients are tracked on the Gram
    matrix (``⟨gᵢᴾᶜ, gⱼ⟩ = (C M)ᵢⱼ``); every added coefficient is positive, so ``wᵢ ≥ 1``. The order of task i is
    ``orders[i]`` (a permutation of the other tasks) or, by default, drawn from ``numpy.random.default_rng(seed)``,
    one permutation per task in task order. With two tasks the order does not matter and no conflict is left
    (``⟨g₁ᴾᶜ, g₂⟩ ≥ 0`` and vice versa).
``main-aux``
    Su's part 3, a main task (index ``main``) whose auxiliaries must not get worse to first order:
    ``max_u ⟨u, g_main⟩ − ½‖u‖²`` s.t. ``⟨u, gᵢ⟩ ≥ 0`` for the auxiliaries; dual: the non-negative least squares
    ``λ* = argmin_{λ ≥ 0} ½‖g_main + Σ λᵢ gᵢ‖²``, ``u = g_main + Σ λ*ᵢ gᵢ``, so ``w_main = 1``, ``wᵢ = λ*ᵢ``. Solved
    exactly on the Gram matrix (:func:`nonneg_least_squares_gram`). One auxiliary: ``λ = relu(−⟨g₀, g₁⟩) / ‖g₁‖²``,
    PCGrad's projection of the main gradient. Uses: a regulariser without a coefficient; noisy data as the main task
    with clean data as the auxiliary.

Zero gradients (e.g. a NER batch without entities): a task whose gradient is exactly zero (``Mᵢᵢ = 0``) cannot move
to first order in any direction. ``gradnorm-sum`` gives it weight 0 (not ``0/0``); ``pcgrad`` never projects onto it
(it conflicts with nothing); ``main-aux`` gives such an auxiliary λ = 0, and a zero main gradient gives ``u = 0``. For
``mgda`` the strict min-norm point of a hull that contains 0 is ``u = 0`` (α = the zero task's unit vector), which
would stop training for the step; instead the zero tasks are left out of the hull (weight 0) and the min-norm point
of the remaining gradients is returned: it still satisfies ``⟨gᵢ, u⟩ ≥ 0`` for every task, the zero ones with
equality. If every gradient is zero, ``w = 0`` and ``u = 0``. No method produces NaN weights from zero gradients.

Diagnostics for a trainer's log (:func:`diagnostics`) come from the Gram matrix and the weights alone:
``⟨gᵢ, u⟩ = (M w)ᵢ``, ``‖u‖² = wᵀ M w``.

References:
    Su Jianlin, 多任务学习漫谈 (一) 以损失之名 https://kexue.fm/archives/8870, (二) 行梯度之事
    https://kexue.fm/archives/8896, (三) 分主次之序 https://kexue.fm/archives/8907 (2022).
    O. Sener and V. Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018, arXiv:1810.04650.
    T. Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020, arXiv:2001.06782.
    P. Wolfe, "Finding the nearest point in a polytope", Math. Programming 11 (1976) (the min-norm-point problem).

Neighbours: :mod:`nlptool.core.train` runs the training loop; the multi-task trainer computes per-task gradients,
the Gram matrix and calls :func:`weights_from_gram`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nlptool.core.errors import NlptoolError

__all__ = [
    "METHODS",
    "LOSS_WEIGHTS",
    "NORMALIZE",
    "MAX_EXACT_TASKS",
    "combine",
    "weights_from_gram",
    "gram_matrix",
    "loss_norm_weights",
    "min_norm_simplex",
    "nonneg_least_squares_gram",
    "pcgrad_weights",
    "diagnostics",
    "Diagnostics",
]

#: The gradient-combination methods.
METHODS = ("sum", "loss-norm", "gradnorm-sum", "mgda", "pcgrad", "main-aux")
#: The loss-weight kinds of ``loss-norm`` (Su, part 1).
LOSS_WEIGHTS = ("initial", "prior", "realtime", "mean")
#: The gradient rescalings of ``mgda`` (Sener & Koltun's ``gradient_normalizers``).
NORMALIZE = ("none", "l2", "loss")
#: The exact enumeration of supports (2^T − 1 small systems: main-aux, and MGDA's fallback) refuses more tasks.
MAX_EXACT_TASKS = 14


# ----------------------------------------------------------------------------------------------------------------
# input checks


def _check_gram(gram: Any) -> np.ndarray:
    if isinstance(gram, torch.Tensor):
        gram = gram.detach().to("cpu", torch.float64).numpy()
    m = np.asarray(gram, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise NlptoolError(f"the Gram matrix must be square (T, T), got shape {tuple(m.shape)}")
    if m.shape[0] < 1:
        raise NlptoolError("the Gram matrix is empty: at least one task is needed")
    if not np.all(np.isfinite(m)):
        raise NlptoolError("the Gram matrix has NaN or infinite entries: check the per-task gradients")
    if float(np.abs(m - m.T).max()) > 1e-10 * max(1.0, float(np.abs(m).max())):
        raise NlptoolError("the Gram matrix is not symmetric: pass M[i, j] = <g_i, g_j>")
    if np.any(np.diag(m) < 0):
        raise NlptoolError("the Gram matrix has a negative diagonal entry: M[i, i] = ||g_i||^2 must be >= 0")
    return (m + m.T) / 2.0


def _check_vector(values: Any, t: int, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] != t:
        raise NlptoolError(f"{name} must hold one value per task ({t}), got shape {tuple(v.shape)}")
    if not np.all(np.isfinite(v)):
        raise NlptoolError(f"{name} has NaN or infinite values: {v.tolist()}")
    return v


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise NlptoolError(f"unknown multi-task method {method!r}: choose one of {', '.join(METHODS)}")


# ----------------------------------------------------------------------------------------------------------------
# part 1: weights on the losses


def loss_norm_weights(
    kind: str,
    *,
    losses: Any = None,
    initial_losses: Any = None,
    prior_losses: Any = None,
    gamma: float | None = None,
) -> np.ndarray:
    r"""Su's part-1 loss weights ``wᵢ`` (the gradient of the combined loss with respect to each ``Lᵢ``).

    ``initial``: ``1 / Lᵢ⁽⁰⁾``; ``prior``: ``1 / Lᵢ⁽ᵖʳⁱᵒʳ⁾``; ``realtime``: ``1 / sg(Lᵢ)``; ``mean``:
    ``∂L(γ)/∂Lᵢ = (1/n) Lᵢ^(γ−1) L(γ)^(1−γ)`` for ``L(γ) = ((1/n) Σ Lᵢ^γ)^(1/γ)`` (``γ = 0`` is the geometric-mean
    limit, ``G / (n Lᵢ)``). A loss of exactly 0 gets weight 0 where the derivative is infinite or undefined
    (``realtime``, ``initial``, ``prior``, ``mean`` with γ < 1; with γ ≤ 0 the mean itself is then 0 and every weight
    is 0); ``mean`` with γ ≥ 1 keeps its finite derivative (1/n at γ = 1). Negative losses are rejected.

    Args:
        kind: one of :data:`LOSS_WEIGHTS`.
        losses: the current losses (``realtime``, ``mean``), shape (T,).
        initial_losses: the losses at step 0 (``initial``).
        prior_losses: the losses of predicting the label prior (``prior``).
        gamma: the exponent of ``mean`` (any real number).

    Returns:
        float64 array (T,).

    Reference: Su Jianlin, 多任务学习漫谈 (一) 以损失之名, https://kexue.fm/archives/8870.
    """
    if kind not in LOSS_WEIGHTS:
        raise NlptoolError(f"unknown loss_weights kind {kind!r}: choose one of {', '.join(LOSS_WEIGHTS)}")
    source = {"initial": ("initial_losses", initial_losses), "prior": ("prior_losses", prior_losses)}.get(
        kind, ("losses", losses)
    )
    name, values = source
    if values is None:
        raise NlptoolError(f"loss_weights={kind!r} needs {name} (one value per task)")
    v = np.asarray(values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else values, float)
    if v.ndim != 1 or v.shape[0] < 1:
        raise NlptoolError(f"{name} must be a 1-D sequence with one value per task, got shape {tuple(v.shape)}")
    v = _check_vector(v, v.shape[0], name)
    if np.any(v < 0):
        raise NlptoolError(f"{name} must be >= 0 (a loss), got {v.tolist()}")
    pos = v > 0
    w = np.zeros_like(v)
    if kind != "mean":
        w[pos] = 1.0 / v[pos]
        return w
    if gamma is None or not math.isfinite(float(gamma)):
        raise NlptoolError("loss_weights='mean' needs a finite gamma (1: arithmetic mean, 0: geometric mean)")
    g = float(gamma)
    n = v.shape[0]
    if not np.any(pos):
        return w
    if g > 0:
        # L(γ)^(1−γ) from the scaled losses to keep large γ finite: L(γ) = s·((1/n) Σ (Lᵢ/s)^γ)^(1/γ)
        s = v.max()
        r = v / s
        mean_pow = float(np.mean(r**g))
        big_over_s = mean_pow ** (1.0 / g)
        with np.errstate(divide="ignore"):
            rp = r ** (g - 1.0)  # at Lᵢ = 0: 0 for γ > 1, 1 for γ = 1 (the true derivatives), inf for γ < 1
        rp[~np.isfinite(rp)] = 0.0  # 0 < γ < 1: the derivative at Lᵢ = 0 is infinite; the zero-loss rule gives 0
        return (1.0 / n) * rp * big_over_s ** (1.0 - g)
    if np.any(~pos):
        # γ ≤ 0: L(γ) = 0 as soon as one loss is 0 (the geometric mean / a negative power mean vanishes); the combined
        # loss is then flat in the positive losses to first order. Give the zero tasks and the others weight 0.
        return w
    if g == 0:
        geo = math.exp(float(np.mean(np.log(v))))
        return geo / (n * v)
    s = v.min()
    r = v / s
    mean_pow = float(np.mean(r**g))
    big_over_s = mean_pow ** (1.0 / g)
    return (1.0 / n) * r ** (g - 1.0) * big_over_s ** (1.0 - g)


# ----------------------------------------------------------------------------------------------------------------
# exact small QPs by enumeration of supports


def _supports(t: int, k: int) -> np.ndarray:
    return np.array(list(itertools.combinations(range(t), k)), dtype=np.int64).reshape(-1, k)


def _quad(m: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``wᵀ M w`` for a batch of weight vectors (rows of ``w``)."""
    return np.einsum("bi,ij,bj->b", w, m, w)


def min_norm_simplex(gram: Any) -> np.ndarray:
    r"""The exact min-norm point of the convex hull of T vectors, from their Gram matrix.

    ``α* = argmin_{α ≥ 0, Σα = 1} αᵀ M α``, solved in float64 on ``M / maxᵢ Mᵢᵢ`` in two stages:

    1. Wolfe's min-norm-point algorithm (an active-set method; :func:`_min_norm_wolfe`): a support S is grown by the
       most violated task ``argminⱼ (Mα)ⱼ`` and the minimiser on the affine hull of S solves the KKT system
       ``[M_SS 1; 1ᵀ 0] [α_S; −ν] = [0; 1]``; when that minimiser leaves the simplex the step is cut at the boundary
       and the task that hit 0 leaves S. Finite in exact arithmetic; a handful of small solves in practice.
    2. Its answer is accepted only if it satisfies the optimality conditions to 1e-12 (relative to maxᵢ Mᵢᵢ):
       ``α ≥ 0``, ``Σα = 1``, ``(Mα)ᵢ ≥ αᵀMα`` for every i and ``= αᵀMα`` on the support. Otherwise (a singular
       system, roundoff in a degenerate set) every support is enumerated (:func:`_min_norm_enumerate`): each
       support's affine minimiser by pseudo-inverse, the feasible candidates evaluated exactly, the smallest kept.
       That is exact too: by Carathéodory some optimum has an affinely independent support, whose KKT system is
       non-singular and solved exactly, and no feasible candidate can beat the optimum. It costs 2^T − 1 systems
       (T = 8: 255) and is refused beyond :data:`MAX_EXACT_TASKS` tasks.

    No Frank-Wolfe (slow: after 1,000 iterations a 3-task case can still be off in the third decimal) and no clamp of
    α to [0.001, 0.999] (LibMTL's two-task solver). Two tasks agree with the closed form
    ``α₁ = clip(⟨g₂ − g₁, g₂⟩ / ‖g₁ − g₂‖², 0, 1)``. Zero rows (``Mᵢᵢ = 0``) are not excluded here (the min-norm
    point is then 0); :func:`weights_from_gram` leaves them out.

    Args:
        gram: (T, T) symmetric positive semi-definite matrix ``Mᵢⱼ = ⟨gᵢ, gⱼ⟩`` (float64 is used).

    Returns:
        α*, float64 array (T,), on the simplex (exact zeros off the support).

    Reference: O. Sener and V. Koltun, NeurIPS 2018 (MGDA); Su Jianlin, https://kexue.fm/archives/8896; P. Wolfe,
    Math. Programming 11 (1976) 128–149.
    """
    return _min_norm_simplex(_check_gram(gram))


def _min_norm_simplex(m: np.ndarray) -> np.ndarray:
    t = m.shape[0]
    if t == 1:
        return np.ones(1)
    scale = float(np.max(np.diag(m)))
    if scale == 0.0:
        return np.full(t, 1.0 / t)
    ms = m / scale
    alpha = _min_norm_wolfe(ms)
    if alpha is not None and _simplex_kkt_ok(ms, alpha, 1e-12):
        return alpha
    if t > MAX_EXACT_TASKS:
        raise NlptoolError(
            f"the exact MGDA solver's fallback enumerates supports and takes at most {MAX_EXACT_TASKS} tasks, got {t}"
            " (the active-set solve did not verify)"
        )
    return _min_norm_enumerate(ms)


def _simplex_kkt_ok(m: np.ndarray, alpha: np.ndarray, tol: float) -> bool:
    """``α`` on the simplex with ``(Mα)ᵢ ≥ αᵀMα − tol`` everywhere and ``|(Mα)ᵢ − αᵀMα| ≤ tol`` on the support."""
    if np.any(alpha < 0) or abs(alpha.sum() - 1.0) > 1e-12:
        return False
    inner = m @ alpha
    usq = float(alpha @ inner)
    sup = alpha > 0
    return bool(np.all(inner >= usq - tol) and np.all(np.abs(inner[sup] - usq) <= tol))


def _min_norm_wolfe(m: np.ndarray, tol: float = 1e-13) -> np.ndarray | None:
    """Wolfe's min-norm-point algorithm on a Gram matrix (scaled to max diagonal 1); None if it breaks down."""
    t = m.shape[0]
    first = int(np.argmin(np.diag(m)))
    support = [first]
    lam = np.zeros(t)
    lam[first] = 1.0
    for _major in range(10 * t + 10):
        inner = m @ lam
        usq = float(lam @ inner)
        j = int(np.argmin(inner))
        if inner[j] >= usq - tol:
            return lam
        if j in support:
            return None
        support.append(j)
        for _minor in range(t + 1):
            idx = np.array(support)
            k = idx.size
            kkt = np.zeros((k + 1, k + 1))
            kkt[:k, :k] = m[np.ix_(idx, idx)]
            kkt[:k, k] = 1.0
            kkt[k, :k] = 1.0
            rhs = np.zeros(k + 1)
            rhs[k] = 1.0
            try:
                sol = np.linalg.solve(kkt, rhs)[:k]
            except np.linalg.LinAlgError:
                return None
            if not np.all(np.isfinite(sol)):
                return None
            if np.all(sol > 0):
                lam = np.zeros(t)
                lam[idx] = sol / sol.sum()
                break
            cur = lam[idx]
            neg = sol <= 0
            ratio = np.full(k, np.inf)
            ratio[neg] = cur[neg] / np.maximum(cur[neg] - sol[neg], 1e-300)
            theta = float(np.min(ratio))
            new = cur + theta * (sol - cur)
            new[ratio <= theta] = 0.0  # the task(s) that reached the boundary leave the support
            keep = new > 0
            if not np.any(keep) or np.all(keep):
                return None
            support = idx[keep].tolist()
            lam = np.zeros(t)
            lam[idx[keep]] = new[keep] / new[keep].sum()
        else:
            return None
    return None


def _min_norm_enumerate(ms: np.ndarray) -> np.ndarray:
    """Every support's affine minimiser (pseudo-inverse), feasible ones evaluated exactly, the smallest kept."""
    t = ms.shape[0]
    best_val = math.inf
    best = None
    for k in range(1, t + 1):
        sup = _supports(t, k)
        b = sup.shape[0]
        kkt = np.zeros((b, k + 1, k + 1))
        kkt[:, :k, :k] = ms[sup[:, :, None], sup[:, None, :]]
        kkt[:, :k, k] = 1.0
        kkt[:, k, :k] = 1.0
        rhs = np.zeros((b, k + 1))
        rhs[:, k] = 1.0
        sol = np.einsum("bij,bj->bi", np.linalg.pinv(kkt, hermitian=True), rhs)[:, :k]
        ok = np.all(sol >= -1e-12, axis=1) & (np.abs(sol.sum(axis=1) - 1.0) < 1e-9)
        if not np.any(ok):
            continue
        sol = np.clip(sol[ok], 0.0, None)
        sol /= sol.sum(axis=1, keepdims=True)
        full = np.zeros((sol.shape[0], t))
        np.put_along_axis(full, sup[ok], sol, axis=1)
        vals = _quad(ms, full)
        i = int(np.argmin(vals))
        if vals[i] < best_val * (1.0 - 1e-12) - 1e-300:
            best_val, best = float(vals[i]), full[i]
    assert best is not None  # every vertex (k = 1) is feasible
    return _polish_simplex(ms, best)


def _polish_simplex(m: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Re-solve the KKT system on the chosen support by least squares (one refinement step) and keep it if no worse."""
    s = np.flatnonzero(alpha > 0)
    k = s.size
    if k < 2:
        return alpha
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = m[np.ix_(s, s)]
    kkt[:k, k] = 1.0
    kkt[k, :k] = 1.0
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    x = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    x = x + np.linalg.lstsq(kkt, rhs - kkt @ x, rcond=None)[0]
    a = x[:k]
    if np.any(a < 0):
        return alpha
    cand = np.zeros_like(alpha)
    cand[s] = a / a.sum()
    return cand if cand @ m @ cand <= alpha @ m @ alpha else alpha


def nonneg_least_squares_gram(gram: Any, main: int) -> np.ndarray:
    r"""Exact ``λ* = argmin_{λ ≥ 0} ½‖g_main + Σ_{i ≠ main} λᵢ gᵢ‖²`` from the Gram matrix (Su's part 3).

    The objective is ``½ λᵀ M_AA λ + λᵀ M_A,main + const`` over the auxiliaries A (those with a nonzero gradient; a
    zero auxiliary gets λ = 0). Optimality (KKT): ``⟨gᵢ, u⟩ = (M w)ᵢ ≥ 0`` for every auxiliary, ``= 0`` where
    ``λᵢ > 0``. Solved on ``M / maxᵢ Mᵢᵢ`` by Lawson and Hanson's active-set NNLS on the normal equations
    (``M_SS λ_S = −M_S,main`` on the positive set S, grown by the most negative ``⟨gᵢ, u⟩``, cut back at the
    boundary), accepted if the KKT conditions hold to 1e-12; otherwise every support S ⊆ A is enumerated (each
    stationary point by pseudo-inverse, non-negative candidates evaluated exactly, the smallest objective kept; exact
    for the same reason as in :func:`min_norm_simplex`; refused beyond :data:`MAX_EXACT_TASKS` tasks). One
    auxiliary gives ``λ = relu(−⟨g₀, g₁⟩) / ‖g₁‖²`` (PCGrad's projection of the main gradient).

    Args:
        gram: (T, T) Gram matrix.
        main: index of the main task.

    Returns:
        float64 array (T,): 1 at ``main``, λ* elsewhere (the weights of ``u = g_main + Σ λᵢ gᵢ``).

    Reference: Su Jianlin, 多任务学习漫谈 (三) 分主次之序, https://kexue.fm/archives/8907; C. L. Lawson and
    R. J. Hanson, *Solving Least Squares Problems* (1974), ch. 23.
    """
    m = _check_gram(gram)
    t = m.shape[0]
    main = _check_main(main, t)
    w = np.zeros(t)
    w[main] = 1.0
    aux = np.array([i for i in range(t) if i != main and m[i, i] > 0], dtype=np.int64)
    scale = float(np.max(np.diag(m)))
    if aux.size == 0 or scale == 0.0:
        return w
    ms = m / scale
    cand = _nnls_active_set(ms, main, aux)
    if cand is not None and _nnls_kkt_ok(ms, cand, aux, 1e-12):
        return cand
    if t > MAX_EXACT_TASKS:
        raise NlptoolError(
            f"the exact main-aux solver's fallback enumerates supports and takes at most {MAX_EXACT_TASKS} tasks,"
            f" got {t} (the active-set solve did not verify)"
        )
    return _nnls_enumerate(ms, main, aux)


def _nnls_kkt_ok(m: np.ndarray, w: np.ndarray, aux: np.ndarray, tol: float) -> bool:
    if np.any(w < 0):
        return False
    inner = (m @ w)[aux]
    return bool(np.all(inner >= -tol) and np.all(np.abs(inner[w[aux] > 0]) <= tol))


def _nnls_active_set(m: np.ndarray, main: int, aux: np.ndarray, tol: float = 1e-13) -> np.ndarray | None:
    """Lawson-Hanson NNLS on the Gram matrix (scaled to max diagonal 1); None if it breaks down."""
    t = m.shape[0]
    w = np.zeros(t)
    w[main] = 1.0
    positive: list[int] = []
    for _outer in range(3 * aux.size + 3):
        inner = m @ w
        free = np.array([i for i in aux if i not in positive], dtype=np.int64)
        if free.size == 0:
            return w
        j = int(free[np.argmin(inner[free])])
        if inner[j] >= -tol:
            return w
        positive.append(j)
        for _inner in range(aux.size + 1):
            idx = np.array(positive)
            k = idx.size
            try:
                z = np.linalg.solve(m[np.ix_(idx, idx)], -m[idx, main])
            except np.linalg.LinAlgError:
                return None
            if not np.all(np.isfinite(z)):
                return None
            if np.all(z > 0):
                w[idx] = z
                break
            cur = w[idx]
            ratio = np.full(k, np.inf)
            neg = z <= 0
            ratio[neg] = cur[neg] / np.maximum(cur[neg] - z[neg], 1e-300)
            theta = float(np.min(ratio))
            new = cur + theta * (z - cur)
            new[ratio <= theta] = 0.0
            keep = new > 0
            w[idx] = np.where(keep, new, 0.0)
            positive = idx[keep].tolist()
        else:
            return None
    return None


def _nnls_enumerate(ms: np.ndarray, main: int, aux: np.ndarray) -> np.ndarray:
    t = ms.shape[0]
    best = np.zeros(t)
    best[main] = 1.0
    best_val = float(ms[main, main])
    for k in range(1, aux.size + 1):
        sup = aux[_supports(aux.size, k)]
        a = ms[sup[:, :, None], sup[:, None, :]]
        rhs = -ms[sup, main]
        lam = np.einsum("bij,bj->bi", np.linalg.pinv(a, hermitian=True), rhs)
        ok = np.all(lam >= -1e-12, axis=1)
        if not np.any(ok):
            continue
        full = np.zeros((int(ok.sum()), t))
        full[:, main] = 1.0
        np.put_along_axis(full, sup[ok], np.clip(lam[ok], 0.0, None), axis=1)
        vals = _quad(ms, full)
        i = int(np.argmin(vals))
        if vals[i] < best_val * (1.0 - 1e-12) - 1e-300:
            best_val, best = float(vals[i]), full[i]
    return best


def _check_main(main: Any, t: int) -> int:
    if main is None:
        raise NlptoolError("method 'main-aux' needs main= (the index of the main task)")
    if isinstance(main, bool) or not isinstance(main, (int, np.integer)):
        raise NlptoolError(f"main must be a task index (int), got {main!r}")
    if not 0 <= int(main) < t:
        raise NlptoolError(f"main={main} is out of range for {t} tasks (0..{t - 1})")
    return int(main)


# ----------------------------------------------------------------------------------------------------------------
# PCGrad on the Gram matrix


def _pcgrad_orders(t: int, seed: int, orders: Sequence[Sequence[int]] | None) -> list[list[int]]:
    if orders is None:
        rng = np.random.default_rng(seed)
        out = []
        for i in range(t):
            others = np.array([j for j in range(t) if j != i], dtype=np.int64)
            out.append(others[rng.permutation(others.size)].tolist())
        return out
    if len(orders) != t:
        raise NlptoolError(f"orders must give one order per task ({t}), got {len(orders)}")
    out = []
    for i, order in enumerate(orders):
        o = [int(j) for j in order]
        if sorted(o) != [j for j in range(t) if j != i]:
            raise NlptoolError(
                f"orders[{i}] must be a permutation of the other tasks {[j for j in range(t) if j != i]}, got {o}"
            )
        out.append(o)
    return out


def pcgrad_weights(gram: Any, *, seed: int = 0, orders: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    r"""PCGrad (Yu et al. 2020) as weights on the original gradients, from the Gram matrix.

    Tracks ``gᵢᴾᶜ = Σₖ Cᵢₖ gₖ``: start ``Cᵢ = eᵢ``; for j in task i's order, ``d = (C M)ᵢⱼ = ⟨gᵢᴾᶜ, gⱼ⟩``; if
    ``d < 0`` (and ``gⱼ ≠ 0``), ``Cᵢⱼ −= d / Mⱼⱼ``. Returns ``w = Σᵢ Cᵢ`` so that ``Σᵢ gᵢᴾᶜ = Σₖ wₖ gₖ``.

    Args:
        gram: (T, T) Gram matrix.
        seed: seeds ``numpy.random.default_rng`` for the orders (one permutation of the other tasks per task, drawn
            in task order) when ``orders`` is not given.
        orders: explicit orders, ``orders[i]`` a permutation of ``{0..T-1} \ {i}``.

    Returns:
        float64 array (T,), every entry ≥ 1.

    Reference: T. Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020, Algorithm 1.
    """
    m = _check_gram(gram)
    t = m.shape[0]
    ords = _pcgrad_orders(t, seed, orders)
    coef = np.eye(t)
    for i in range(t):
        for j in ords[i]:
            if m[j, j] <= 0:
                continue
            d = float(coef[i] @ m[:, j])
            if d < 0:
                coef[i, j] -= d / m[j, j]
    return coef.sum(axis=0)


# ----------------------------------------------------------------------------------------------------------------
# entry points


def gram_matrix(grads: torch.Tensor) -> torch.Tensor:
    """``M = G Gᵀ`` in float64 for a (T, P) gradient matrix (``Mᵢⱼ = ⟨gᵢ, gⱼ⟩``)."""
    g = _check_grads(grads)
    g64 = g.detach().to(torch.float64)
    return g64 @ g64.T


def _check_grads(grads: Any) -> torch.Tensor:
    if not isinstance(grads, torch.Tensor):
        raise NlptoolError(f"grads must be a torch.Tensor of shape (T, P), got {type(grads).__name__}")
    if grads.ndim != 2:
        raise NlptoolError(
            f"grads must be 2-D (T tasks, P flattened shared parameters), got shape {tuple(grads.shape)}; "
            "stack the per-task gradients with torch.stack([g.flatten() for g in ...])"
        )
    if not grads.is_floating_point():
        raise NlptoolError(f"grads must be a floating-point tensor, got {grads.dtype}")
    if grads.shape[0] < 1:
        raise NlptoolError("grads has no rows: at least one task is needed")
    return grads  # NaN / inf show up in the Gram matrix, which is checked


def weights_from_gram(
    gram: Any,
    method: str,
    *,
    losses: Any = None,
    main: int | None = None,
    seed: int = 0,
    normalize: str = "none",
    loss_weights: str = "realtime",
    initial_losses: Any = None,
    prior_losses: Any = None,
    gamma: float | None = None,
    orders: Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    r"""Per-task weights ``w`` (float64, shape (T,)) with ``u = Σ wᵢ gᵢ``, from the Gram matrix ``Mᵢⱼ = ⟨gᵢ, gⱼ⟩``.

    Every method in :data:`METHODS` is available (see the module docstring for the formulas): ``sum`` (1),
    ``loss-norm`` (the losses only), ``gradnorm-sum`` (``1/√Mᵢᵢ``), ``mgda`` (:func:`min_norm_simplex`, after
    ``normalize``), ``pcgrad`` (:func:`pcgrad_weights`), ``main-aux`` (:func:`nonneg_least_squares_gram`).

    Args:
        gram: (T, T) symmetric PSD matrix (numpy or torch; used in float64).
        method: one of :data:`METHODS`.
        losses: current per-task losses (``loss-norm`` realtime/mean, ``mgda`` with ``normalize='loss'``).
        main: main-task index for ``main-aux``.
        seed: PCGrad's random order.
        normalize: ``mgda`` rescaling, one of :data:`NORMALIZE`.
        loss_weights: ``loss-norm`` kind, one of :data:`LOSS_WEIGHTS`.
        initial_losses: ``loss-norm`` with ``initial``.
        prior_losses: ``loss-norm`` with ``prior``.
        gamma: ``loss-norm`` with ``mean``.
        orders: explicit PCGrad orders (overrides ``seed``).

    Returns:
        float64 numpy array (T,).

    Raises:
        NlptoolError: unknown method / kind, a malformed Gram matrix, missing or mismatched losses, ``main`` out of
            range, fewer than two tasks for ``mgda``, ``pcgrad`` or ``main-aux``.
    """
    _check_method(method)
    m = _check_gram(gram)
    t = m.shape[0]
    if losses is not None:
        losses = _check_vector(losses, t, "losses")
    if method in ("mgda", "pcgrad", "main-aux") and t < 2:
        raise NlptoolError(f"method {method!r} combines at least 2 tasks, got {t}")
    if method != "mgda" and normalize != "none":
        if normalize not in NORMALIZE:
            raise NlptoolError(f"unknown normalize {normalize!r}: choose one of {', '.join(NORMALIZE)}")
        raise NlptoolError(f"normalize={normalize!r} applies to method 'mgda' only, not {method!r}")
    diag = np.diag(m)
    if method == "sum":
        return np.ones(t)
    if method == "loss-norm":
        for name, values in (("initial_losses", initial_losses), ("prior_losses", prior_losses)):
            if values is not None:
                _check_vector(values, t, name)
        return loss_norm_weights(
            loss_weights, losses=losses, initial_losses=initial_losses, prior_losses=prior_losses, gamma=gamma
        )
    if method == "gradnorm-sum":
        w = np.zeros(t)
        nz = diag > 0
        w[nz] = 1.0 / np.sqrt(diag[nz])
        return w
    if method == "pcgrad":
        return pcgrad_weights(m, seed=seed, orders=orders)
    if method == "main-aux":
        return nonneg_least_squares_gram(m, main)
    # mgda
    if normalize not in NORMALIZE:
        raise NlptoolError(f"unknown normalize {normalize!r}: choose one of {', '.join(NORMALIZE)}")
    if normalize == "none":
        scale = np.ones(t)
    elif normalize == "l2":
        scale = np.sqrt(diag)
    else:
        if losses is None:
            raise NlptoolError("mgda with normalize='loss' needs losses (one per task)")
        if np.any(losses <= 0):
            raise NlptoolError(f"mgda with normalize='loss' needs positive losses, got {losses.tolist()}")
        scale = losses.copy()
    live = np.flatnonzero(diag > 0)
    w = np.zeros(t)
    if live.size == 0:
        return w
    s = scale[live]
    ms = m[np.ix_(live, live)] / np.outer(s, s)
    alpha = _min_norm_simplex(ms)
    w[live] = alpha / s
    return w


def combine(
    grads: torch.Tensor,
    method: str,
    *,
    losses: Any = None,
    main: int | None = None,
    seed: int = 0,
    normalize: str = "none",
    loss_weights: str = "realtime",
    initial_losses: Any = None,
    prior_losses: Any = None,
    gamma: float | None = None,
    orders: Sequence[Sequence[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Combine per-task gradients into one update direction: ``u = Σᵢ wᵢ gᵢ``.

    Computes the float64 Gram matrix ``M = G Gᵀ`` and the weights with :func:`weights_from_gram` (same arguments),
    then ``u = wᵀ G`` in the dtype of ``grads``. For ``pcgrad`` the weights are the exact coefficients of the summed
    projected gradients on the original ones (:func:`pcgrad_weights`), so ``u`` equals Yu et al.'s ``Σᵢ gᵢᴾᶜ``.

    Args:
        grads: (T, P) floating tensor, row i the flattened gradient of task i on the shared parameters.
        method: one of :data:`METHODS`.
        losses, main, seed, normalize, loss_weights, initial_losses, prior_losses, gamma, orders: as in
            :func:`weights_from_gram`.

    Returns:
        ``(direction, weights)``: ``direction`` (P,) in the dtype and device of ``grads``; ``weights`` (T,) float64
        on the CPU.

    Reference: Su Jianlin, 多任务学习漫谈 (一)–(三), https://kexue.fm/archives/8870, 8896, 8907.
    """
    g = _check_grads(grads)
    g64 = g.detach().to(torch.float64)
    gram = (g64 @ g64.T).cpu().numpy()
    w = weights_from_gram(
        gram,
        method,
        losses=losses,
        main=main,
        seed=seed,
        normalize=normalize,
        loss_weights=loss_weights,
        initial_losses=initial_losses,
        prior_losses=prior_losses,
        gamma=gamma,
        orders=orders,
    )
    w_t = torch.from_numpy(w)
    direction = (w_t.to(g.device) @ g64).to(g.dtype)
    return direction, w_t


# ----------------------------------------------------------------------------------------------------------------
# diagnostics


@dataclass(frozen=True)
class Diagnostics:
    """What a trainer logs about one combination step (all from the Gram matrix and the weights).

    Attributes:
        grad_norms: ‖gᵢ‖ per task.
        cosines: (T, T) pairwise ``Mᵢⱼ / √(Mᵢᵢ Mⱼⱼ)`` (0 where either gradient is zero; 1 on the diagonal of nonzero
            gradients).
        inner: ⟨gᵢ, u⟩ = (M w)ᵢ per task (< 0: the step raises task i's loss to first order).
        min_alignment: minᵢ ⟨gᵢ, u⟩ / ‖gᵢ‖ over the nonzero gradients (NaN if all are zero).
        direction_norm: ‖u‖ = √(wᵀ M w).
    """

    grad_norms: list[float]
    cosines: list[list[float]]
    inner: list[float]
    min_alignment: float
    direction_norm: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "grad_norms": self.grad_norms,
            "cosines": self.cosines,
            "inner": self.inner,
            "min_alignment": self.min_alignment,
            "direction_norm": self.direction_norm,
        }


def diagnostics(gram: Any, weights: Any) -> Diagnostics:
    r"""Per-task norms, pairwise cosines, ``minᵢ ⟨gᵢ, u⟩ / ‖gᵢ‖`` and ``‖u‖`` for ``u = Σ wᵢ gᵢ``.

    Uses ``⟨gᵢ, u⟩ = (M w)ᵢ`` and ``‖u‖² = wᵀ M w`` (clamped at 0 against roundoff), so no gradient is needed.

    Args:
        gram: (T, T) Gram matrix.
        weights: (T,) weights.

    Returns:
        :class:`Diagnostics` (plain floats and lists, ready for JSON).
    """
    m = _check_gram(gram)
    t = m.shape[0]
    w = _check_vector(weights, t, "weights")
    norms = np.sqrt(np.diag(m))
    denom = np.outer(norms, norms)
    cos = np.zeros_like(m)
    nz = denom > 0
    cos[nz] = m[nz] / denom[nz]
    cos = np.clip(cos, -1.0, 1.0)
    inner = m @ w
    live = norms > 0
    min_align = float(np.min(inner[live] / norms[live])) if np.any(live) else float("nan")
    unorm = math.sqrt(max(float(w @ m @ w), 0.0))
    return Diagnostics(
        grad_norms=norms.tolist(),
        cosines=cos.tolist(),
        inner=inner.tolist(),
        min_alignment=min_align,
        direction_norm=unorm,
    )

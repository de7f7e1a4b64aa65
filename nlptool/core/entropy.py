"""Entropy normalisation: sharpen or flatten a distribution to a chosen entropy with one power.

Given a distribution ``p`` over ``k`` classes and a target entropy ``H*`` (in nats), find ``gamma >= 0`` such that

    p~_i = p_i ** gamma / sum_j p_j ** gamma          (computed in the log domain:
    log p~ = gamma * log p - logsumexp(gamma * log p) over the non-zero support)

has Shannon entropy ``H(p~) = -sum_i p~_i log p~_i = H*``. The power keeps the order of the classes (``gamma > 0`` is
a monotone map), ``gamma = 1`` returns ``p`` itself, ``gamma > 1`` sharpens and ``gamma < 1`` flattens. With ``q = p~``
the entropy is a decreasing function of ``gamma``:

    dH/dgamma = -gamma * Var_q(log p)

so it falls monotonically from ``log(nnz)`` (``gamma -> 0``, uniform over the ``nnz`` non-zero entries) to
``log(#ties)`` (``gamma -> inf``, uniform over the entries equal to the row maximum). Su's one-step rule is the Newton
step from ``gamma = 1`` on the current ``p``:

    gamma <- 1 + (H* - H(p)) / (H(p)**2 - sum_i p_i (log p_i)**2)

:func:`normalize` iterates that idea to convergence: a safeguarded Newton solver per row, kept inside a bracket
``[gamma_lo, gamma_hi]`` and falling back to bisection (or doubling while ``gamma_hi`` is still infinite), run on the
whole batch at once in float64. It stops when ``|H(p~) - H*| <= tol`` for every row.

Edge cases (per row; ``lo = log(#ties in the max)``, ``hi = log(nnz)``, see :func:`reachable_range`):

* Zeros stay exactly zero (``0 ** gamma = 0`` for every ``gamma``, including ``gamma = 0``).
* A target outside ``[lo, hi]`` by more than ``tol`` is an error (:class:`RowError`), unless ``clip=True``, which
  clamps it into ``[lo, hi]``.
* Uniform row (all non-zero entries equal, so ``lo == hi``; this includes a row with one non-zero entry, where
  ``lo = hi = 0``): every power gives the same row, so it is returned unchanged with ``gamma = 1.0``.
* Otherwise a target within ``tol`` of ``lo`` returns the limit ``gamma -> inf``: the uniform distribution over the
  tied maxima (one-hot on the argmax when the max is unique, e.g. ``H* = 0``) and ``gamma = inf``.
* A target within ``tol`` of ``hi`` returns the uniform distribution over the support and ``gamma = 0.0``.
  (Should both ends be within ``tol``, the nearer one wins.)
* Any other target is solved for a finite ``gamma > 0``; a target equal to the row's current entropy gives
  ``gamma = 1`` and the row itself (normalised to sum 1).

Ties are exact: entries equal to the row maximum (for logits, logits equal to the row maximum).

Reference:
    Su Jianlin, "概率分布的熵归一化" (Entropy normalisation of probability distributions), 2021,
    https://kexue.fm/archives/8829
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nlptool.core.errors import NlptoolError, RowError, plain

__all__ = ["entropy", "normalize", "normalize_rows", "reachable_range"]

# Largest power the solver tries: gamma * log(p / max p) stays finite for every positive float64 p, and
# gamma * _OFF (below) too.
_GAMMA_MAX = 1e150


def entropy(probs: Any, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats, ``H(p) = -sum_i p_i log p_i`` with ``0 log 0 = 0``.

    No validation: rows are not required to sum to 1; a negative or NaN entry gives NaN.

    Args:
        probs: array-like of probabilities (any shape).
        axis: the axis that holds the classes.

    Returns:
        float64 array of entropies with ``axis`` removed (a 0-d array for a 1-D input).
    """
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = p * np.log(p)
    terms = np.where(p == 0.0, 0.0, terms)
    return -np.sum(terms, axis=axis)


def reachable_range(probs: Any, *, logits: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The entropies that a power ``p ** gamma`` (renormalised) can reach, per row.

    ``lo = log(t)`` with ``t`` the number of entries exactly equal to the row maximum (the limit ``gamma -> inf``)
    and ``hi = log(nnz)`` with ``nnz`` the number of non-zero entries (``gamma = 0``). The row sum is not checked.

    Args:
        probs: 1-D (one row) or 2-D ``(n, k)`` array of non-negative values (or logits with ``logits=True``).
        logits: the rows are logits; the range is that of ``softmax(row)``.

    Returns:
        ``(lo, hi)``: float64 arrays of shape ``(n,)`` (float64 scalars for a 1-D input).

    Raises:
        RowError: a row with NaN/inf, a negative entry, or no positive entry.
    """
    x, single = _as_batch(probs)
    prep = _prepare(x, logits=logits, check_sum=False, renormalize=False, sum_tol=0.0)
    lo, hi = np.log(prep.nties), np.log(prep.nnz)
    if single:
        return lo[0], hi[0]
    return lo, hi


def normalize(
    probs: Any,
    target: Any = None,
    *,
    target_ratio: Any = None,
    logits: bool = False,
    tol: float = 1e-9,
    max_iter: int = 100,
    clip: bool = False,
    renormalize: bool = False,
    sum_tol: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:
    """Raise each row to the power ``gamma`` (and renormalise) so that its entropy equals the target.

    ``p~ = p ** gamma / sum(p ** gamma)`` with ``H(p~) = H*``, solved per row by safeguarded Newton on ``gamma``
    (``dH/dgamma = -gamma Var_{p~}(log p)``, first step from ``gamma = 1`` is Su's rule
    ``1 + (H* - H) / (H**2 - sum p log(p)**2)``), bisection whenever Newton leaves the bracket or stalls. See the module
    docstring for the edge-case rules (zeros, ties, uniform rows, targets at the ends of the range).

    Args:
        probs: 1-D (one row) or 2-D ``(n, k)`` array of probabilities (or logits with ``logits=True``).
        target: target entropy in nats, a float or one value per row. Exactly one of ``target``/``target_ratio``.
        target_ratio: target as a fraction of the maximum entropy: ``H* = target_ratio * log(k)``, with ``k`` the
            row length (number of classes); a float or one value per row.
        logits: the rows are logits; ``p = softmax(row)`` (stable). ``-inf`` logits are allowed (probability 0);
            entries whose softmax underflows to 0 are zeros. ``renormalize``/``sum_tol`` do not apply.
        tol: convergence tolerance on ``|H(p~) - H*|`` in nats, and the slack allowed outside the reachable range.
        max_iter: maximum solver iterations (each one evaluates the entropy of all unfinished rows once).
        clip: clamp out-of-range targets into the row's reachable range ``[lo, hi]`` instead of raising.
        renormalize: divide each row by its sum first (otherwise a row must sum to 1 within ``sum_tol``).
        sum_tol: allowed ``|sum(row) - 1|`` when ``renormalize`` is false.

    Returns:
        ``(probs, gamma)``: float64 normalised probabilities of the input's shape, and ``gamma`` per row (shape
        ``(n,)``; a float64 scalar for a 1-D input). ``gamma`` is ``inf`` for rows sent to their tied maxima and ``0``
        for rows sent to uniform over their support.

    Raises:
        RowError: a bad row (NaN/inf, negative, all zero, sum not 1), a target outside the row's reachable range
            (without ``clip``), a negative/NaN per-row target, or a row that did not converge in ``max_iter``.
        NlptoolError: bad arguments (both or neither target given, negative/NaN scalar target, wrong shapes).

    Reference:
        Su Jianlin, "概率分布的熵归一化", 2021, https://kexue.fm/archives/8829
    """
    if not (tol > 0 and np.isfinite(tol)):
        raise NlptoolError(f"tol must be a positive number, got {plain(tol)!r}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise NlptoolError(f"max_iter must be a positive integer, got {plain(max_iter)!r}")
    if not (sum_tol >= 0):
        raise NlptoolError(f"sum_tol must be >= 0, got {plain(sum_tol)!r}")
    x, single = _as_batch(probs)
    n, k = x.shape
    h_star, given, ratio = _targets(target, target_ratio, n, k)
    prep = _prepare(x, logits=logits, check_sum=True, renormalize=renormalize, sum_tol=sum_tol)
    lo, hi = np.log(prep.nties), np.log(prep.nnz)

    outside = (h_star < lo - tol) | (h_star > hi + tol)
    if outside.any() and not clip:
        i = int(np.argmax(outside))
        asked = f"target entropy {h_star[i]:.10g} nats"
        if ratio:
            asked += f" (target_ratio={given[i]:.10g} x log({k}))"
        raise RowError(
            f"{asked} is outside the reachable range [{lo[i]:.10g}, {hi[i]:.10g}] nats of this row "
            f"(from log({prep.nties[i]}) for {prep.nties[i]} tied maximum entr{'y' if prep.nties[i] == 1 else 'ies'} "
            f"up to log({prep.nnz[i]}) for {prep.nnz[i]} non-zero entr{'y' if prep.nnz[i] == 1 else 'ies'}); "
            "pass clip=True to clamp the target into the range, or choose a target inside it",
            row=i,
        )
    h_star = np.clip(h_star, lo, hi)

    gamma = np.ones(n)
    uniform = prep.nties == prep.nnz
    near_lo = ~uniform & (h_star - lo <= tol) & (h_star - lo <= hi - h_star)
    near_hi = ~uniform & ~near_lo & (hi - h_star <= tol)
    solve = ~(uniform | near_lo | near_hi)
    if solve.all():  # the common case: no copies
        gamma, out = _solve_gamma(prep.logr, h_star, tol=tol, max_iter=int(max_iter), rows=np.arange(n))
    else:
        out = np.zeros_like(prep.p)
        out[uniform] = prep.p[uniform]
        out[near_lo] = (prep.logr[near_lo] == 0.0) / prep.nties[near_lo, None]
        gamma[near_lo] = np.inf
        out[near_hi] = (prep.logr[near_hi] > _OFF) / prep.nnz[near_hi, None]
        gamma[near_hi] = 0.0
        if solve.any():
            rows = np.flatnonzero(solve)
            gamma[rows], out[rows] = _solve_gamma(
                prep.logr[rows], h_star[rows], tol=tol, max_iter=int(max_iter), rows=rows
            )
    if single:
        return out[0], gamma[0]
    return out, gamma


def normalize_rows(rows: Any, target: Any = None, **kwargs: Any) -> tuple[list[np.ndarray], np.ndarray]:
    """:func:`normalize` for rows of different lengths (a list of 1-D sequences): rows of one length are solved as
    one batch, in the order they first appear.

    Args:
        rows: the rows (probabilities, or logits with ``logits=True``); each may have its own number of classes.
        target: one target entropy for every row (a per-row target needs :func:`normalize` on a rectangular batch).
        kwargs: the other arguments of :func:`normalize` (``target_ratio`` scales with each row's own length).

    Returns:
        ``(probs, gamma)``: the normalised rows as a list of float64 arrays in input order, and ``gamma`` per row.

    Raises:
        RowError: as :func:`normalize`, with ``row`` the index into ``rows``.
    """
    by_len: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_len.setdefault(len(row), []).append(i)
    out: list[np.ndarray] = [np.empty(0)] * len(rows)
    gammas = np.empty(len(rows))
    for idx in by_len.values():
        try:
            p, g = normalize(np.asarray([rows[i] for i in idx], dtype=np.float64), target, **kwargs)
        except RowError as exc:
            raise RowError(exc.message, row=idx[exc.row], field=exc.field) from None
        for j, i in enumerate(idx):
            out[i] = p[j]
        gammas[idx] = g
    return out, gammas


# Stand-in for log(0) in ``logr``: finite, so that 0 * _OFF = 0 in the moment sums, and so negative that
# exp(gamma * _OFF) is exactly 0 for every gamma the solver uses (gamma >= _GAMMA_MIN).
_OFF = -1e150
_GAMMA_MIN = 1e-100


class _Prepared:
    """Validated rows.

    ``p``: the probabilities; ``logr = log(p / max p)`` (exactly 0 on the tied maxima, strictly negative elsewhere on
    the support, ``_OFF`` off the support); ``nnz``/``nties``: number of non-zero entries and of tied maxima.
    """

    __slots__ = ("logr", "nnz", "nties", "p")

    def __init__(self, p: np.ndarray, logr: np.ndarray):
        self.p = p
        self.logr = logr
        # einsum row sums are several times faster than .sum(axis=1) for short rows
        self.nnz = np.einsum("ij->i", logr > _OFF, dtype=np.float64, casting="safe").astype(np.int64)
        self.nties = np.einsum("ij->i", logr == 0.0, dtype=np.float64, casting="safe").astype(np.int64)


def _as_batch(probs: Any) -> tuple[np.ndarray, bool]:
    try:
        x = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise NlptoolError(f"probs must be a numeric 1-D or 2-D array: {exc}") from exc
    if x.ndim not in (1, 2):
        raise NlptoolError(f"probs must be 1-D (one row) or 2-D (rows x classes), got shape {x.shape}")
    if x.shape[-1] == 0:
        raise NlptoolError(f"probs has no classes (shape {x.shape}); each row needs at least one entry")
    return (x[None, :], True) if x.ndim == 1 else (x, False)


def _first_cell(x: np.ndarray, i: int, cells: np.ndarray) -> tuple[int, float]:
    j = int(np.argmax(cells))
    return j, float(x[i, j])


def _prepare(x: np.ndarray, *, logits: bool, check_sum: bool, renormalize: bool, sum_tol: float) -> _Prepared:
    """Validate the rows and return probabilities and log-ratios to the row max (no loop over rows)."""
    if logits:
        bad_cells = np.isnan(x) | (x == np.inf)
        bad = bad_cells.any(axis=1)
        m = x.max(axis=1, keepdims=True)
        empty = ~bad & (m[:, 0] == -np.inf)
        if bad.any() or empty.any():
            i = int(np.argmax(bad | empty))
            if bad[i]:
                j, v = _first_cell(x, i, bad_cells[i])
                raise RowError(
                    f"logit {plain(v)!r} at column {j}; logits must be finite (or -inf for an impossible class)", row=i
                )
            raise RowError("all logits are -inf; at least one class must be possible", row=i)
        shifted = x - m  # 0 at the max, -inf for impossible classes
        p = np.exp(shifted - np.log(np.einsum("ij->i", np.exp(shifted)))[:, None])
        logr = np.where(p > 0, shifted, _OFF)  # a class whose softmax underflows to 0 is a zero
        return _Prepared(p, logr)

    s = np.einsum("ij->i", x)
    nonfinite = ~np.isfinite(s)  # NaN/inf in the row, or finite values whose sum overflows
    if nonfinite.any():
        sub = np.flatnonzero(nonfinite)
        nonfinite[sub[np.isfinite(x[sub]).all(axis=1)]] = False
    with np.errstate(invalid="ignore"):
        negative = (x < 0).any(axis=1)
    zero = s == 0.0
    bad = nonfinite | negative | zero
    if check_sum and not renormalize:
        bad |= ~(np.abs(s - 1.0) <= sum_tol)
    if bad.any():
        i = int(np.argmax(bad))
        row = x[i]
        if nonfinite[i]:
            j, v = _first_cell(x, i, ~np.isfinite(row))
            raise RowError(
                f"value {plain(v)!r} at column {j}; probabilities must be finite numbers in [0, 1] "
                "(repair or drop the row)",
                row=i,
            )
        if negative[i]:
            j, v = _first_cell(x, i, row < 0)
            raise RowError(
                f"negative probability {plain(v)!r} at column {j}; probabilities must be >= 0 "
                "(if these are logits, pass logits=True)",
                row=i,
            )
        if zero[i]:
            raise RowError("all entries are zero; a probability row needs at least one positive entry", row=i)
        raise RowError(
            f"row sums to {s[i]:.10g}, not 1 (|sum - 1| = {abs(s[i] - 1.0):.3g} > sum_tol={sum_tol:g}); "
            "pass renormalize=True to divide each row by its sum (or logits=True if these are logits)",
            row=i,
        )
    pmax = x.max(axis=1, keepdims=True)
    ratio = x / pmax
    if renormalize:
        p = ratio / np.einsum("ij->i", ratio)[:, None]  # via p / max p, so that a sum that overflows still works
    else:
        p = x
    with np.errstate(divide="ignore"):
        logr = np.log(ratio, out=ratio)  # exactly 0 where x == max, strictly negative below it, -inf at zeros
    np.maximum(logr, _OFF, out=logr)
    return _Prepared(p, logr)


def _targets(target: Any, target_ratio: Any, n: int, k: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per-row targets in nats, the values as given, and whether they came from ``target_ratio``."""
    if (target is None) == (target_ratio is None):
        raise NlptoolError(
            "give exactly one of target= (entropy in nats) or target_ratio= (fraction of log(k), k = number of classes)"
        )
    ratio = target is None
    name = "target_ratio" if ratio else "target"
    value = target_ratio if ratio else target
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise NlptoolError(f"{name} must be a number or one number per row: {exc}") from exc
    scalar = arr.ndim == 0
    if scalar:
        arr = np.full(n, float(arr))
    elif arr.shape != (n,):
        raise NlptoolError(f"{name} must be a number or have one value per row (shape ({n},)), got shape {arr.shape}")
    bad = np.isnan(arr) | (arr < 0)
    if bad.any():
        i = int(np.argmax(bad))
        msg = f"{name}={plain(arr[i])!r} is invalid; an entropy target must be a number >= 0"
        if scalar:
            raise NlptoolError(msg)
        raise RowError(msg, row=i)
    if ratio:
        h_star = arr * np.log(k) if k > 1 else np.zeros(n)
    else:
        h_star = arr
    return h_star, arr, ratio


def _powers(logr: np.ndarray, gamma: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``e = (p / max p) ** gamma`` (exactly 0 off the support) and its row sums ``s >= 1``; ``out`` is reused."""
    e = np.multiply(logr, gamma[:, None], out=out)
    np.exp(e, out=e)
    return e, np.einsum("ij->i", e)


def _moments(logr: np.ndarray, gamma: np.ndarray, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entropy of ``q = p ** gamma / sum(p ** gamma)`` and ``Var_q(log p)``, per row (``buf``: scratch like ``logr``).

    With ``s = sum(e) >= 1`` (the max contributes exactly 1) and ``m = E_q[log(p / max p)] <= 0``,
    ``H(q) = log(s) - gamma * m`` is a sum of two non-negative terms, so it is computed without cancellation.
    """
    e, s = _powers(logr, gamma, out=buf)
    mean = np.einsum("ij,ij->i", e, logr) / s
    var = np.maximum(np.einsum("ij,ij,ij->i", e, logr, logr) / s - mean * mean, 0.0)
    return np.log(s) - gamma * mean, var


def _solve_gamma(
    logr: np.ndarray,
    h_star: np.ndarray,
    *,
    tol: float,
    max_iter: int,
    rows: np.ndarray,
    trace: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Safeguarded Newton for ``H(gamma) = h_star`` on every row at once (``lo + tol < h_star < hi - tol``).

    Starts at ``gamma = 1``. Each iteration evaluates the unfinished rows, tightens the bracket (``H`` decreases in
    ``gamma``: ``H > H*`` raises ``gamma_lo``, ``H < H*`` lowers ``gamma_hi``), then takes the Newton step
    ``gamma - (H - H*) / (-gamma Var)`` if it lands strictly inside the bracket and the previous Newton step at least
    halved ``|H - H*|``; otherwise it bisects (geometric mean for wide brackets, doubling while ``gamma_hi = inf``).
    Finished rows keep their ``gamma``; the working arrays are compacted once enough rows have finished.
    ``trace`` (tests) receives ``(row indices, next gamma)`` for the unfinished rows after each update.

    A row finishes when ``|H - H*| <= tol``; its ``gamma`` is then refined by one more Newton step from the values
    already computed, which is kept only if the final evaluation confirms it is at least as close to ``H*`` (so the
    returned ``gamma`` is typically exact to rounding, not just to ``tol``).

    Returns:
        ``(gamma, q)`` with ``q = p ** gamma / sum(p ** gamma)``.
    """
    n = h_star.shape[0]
    target = h_star
    gamma_out = np.empty(n)  # refined gamma of finished rows
    gamma_ok = np.empty(n)  # the gamma that met tol, and its residual, as a fallback for the refinement
    resid_ok = np.empty(n)
    idx = np.arange(n)
    work = logr
    g = np.ones(n)
    g_lo = np.zeros(n)
    g_hi = np.full(n, np.inf)
    prev_f = np.full(n, np.inf)
    prev_newton = np.zeros(n, dtype=bool)
    finished = np.zeros(n, dtype=bool)
    scratch = np.empty(logr.size)  # reused by every evaluation, so the loop does not allocate (n, k) arrays
    for _ in range(max_iter):
        h, var = _moments(work, g, scratch[: work.size].reshape(work.shape))
        f = h - h_star
        new = ~finished & (np.abs(f) <= tol)
        if new.any():
            at, g_new, f_new = idx[new], g[new], f[new]
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                refined = g_new + f_new / (g_new * var[new])
            gamma_out[at] = np.where(np.isfinite(refined) & (refined > 0), refined, g_new)
            gamma_ok[at], resid_ok[at] = g_new, np.abs(f_new)
            finished |= new
        if finished.all():
            return _finish(logr, target, gamma_out, gamma_ok, resid_ok)
        if finished.sum() >= 0.1 * finished.size:
            keep = ~finished
            idx, work, h_star = idx[keep], work[keep], h_star[keep]
            g, g_lo, g_hi, f, var = g[keep], g_lo[keep], g_hi[keep], f[keep], var[keep]
            prev_f, prev_newton, finished = prev_f[keep], prev_newton[keep], finished[keep]
        g_lo = np.where(f > 0, g, g_lo)
        g_hi = np.where(f < 0, g, g_hi)
        slope = -g * var
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            newton = g - f / slope
        stalled = prev_newton & (np.abs(f) > 0.5 * np.abs(prev_f))
        use_newton = (
            (slope < 0)
            & np.isfinite(newton)
            & (newton > g_lo)
            & (newton < g_hi)
            & (newton >= _GAMMA_MIN)
            & (newton <= _GAMMA_MAX)
            & ~stalled
        )
        finite_hi = np.isfinite(g_hi)
        wide = finite_hi & (g_lo > 0) & (g_hi > 4.0 * g_lo)
        with np.errstate(invalid="ignore", over="ignore"):
            bisect = np.where(
                finite_hi,
                np.where(wide, np.sqrt(g_lo) * np.sqrt(g_hi), np.maximum(0.5 * (g_lo + g_hi), _GAMMA_MIN)),
                np.minimum(2.0 * g_lo, _GAMMA_MAX),
            )
        g = np.where(finished, g, np.where(use_newton, newton, bisect))
        if trace is not None:
            trace.append((idx[~finished], g[~finished]))
        prev_f, prev_newton = f, use_newton
    first = int(rows[idx[np.argmax(~finished)]])
    raise RowError(
        f"entropy normalisation did not reach |H - H*| <= tol={tol:g} within max_iter={max_iter} iterations "
        f"({int((~finished).sum())} row(s) unfinished, this is the first); raise max_iter or tol",
        row=first,
    )


def _finish(
    logr: np.ndarray, target: np.ndarray, gamma: np.ndarray, gamma_ok: np.ndarray, resid_ok: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate the refined ``gamma``; rows where it is not at least as close to the target use ``gamma_ok``."""
    e, s = _powers(logr, gamma)
    h = np.log(s) - gamma * (np.einsum("ij,ij->i", e, logr) / s)
    worse = ~(np.abs(h - target) <= resid_ok)
    if worse.any():
        gamma[worse] = gamma_ok[worse]
        e[worse], s[worse] = _powers(logr[worse], gamma[worse])
    return gamma, np.divide(e, s[:, None], out=e)

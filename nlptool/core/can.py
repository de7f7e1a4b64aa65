r"""CAN: classification with alternating normalization.

A classifier's probability rows are split by how sure they are. The *uncertainty* of a row ``p`` is the entropy of its
``k`` largest probabilities, renormalised to sum 1, divided by ``log k``:

.. math::

    q = \operatorname{top}_k(p) / \textstyle\sum \operatorname{top}_k(p), \qquad
    u(p) = -\frac{1}{\log k} \sum_i q_i \log q_i \in [0, 1] \quad (0 \log 0 = 0).

Rows with ``u < threshold`` are *confident* and are returned unchanged. Every other row ``p_j`` is adjusted on its own
against the confident rows ``P_c`` (always the original input rows, never earlier adjusted rows):

.. math::

    Y \leftarrow \begin{bmatrix} P_c \\ p_j \end{bmatrix}; \quad
    \text{repeat } T \text{ times: } \;
    Y \leftarrow Y^{\alpha}; \;
    Y_{:c} \leftarrow \pi_c \, Y_{:c} / \operatorname{mean}_r Y_{rc}; \;
    Y_{r:} \leftarrow Y_{r:} / \textstyle\sum_c Y_{rc}

and the adjusted ``p_j`` is the last row of ``Y``. Here ``alpha`` is a power applied elementwise, ``pi`` the class prior
(uniform by default, normalised to sum 1) and ``T = iterations``. Defaults: ``k=3, threshold=0.9, alpha=1,
iterations=1``.

For ``T = 1`` there is a closed form. With ``S = sum_r P_c[r]^alpha`` (column sums over the ``n_c`` confident rows),
the column mean seen by row ``j`` is ``m_j = (S + p_j^alpha) / (n_c + 1)``, so

.. math::

    \tilde p_j = \operatorname{normalise}\bigl(p_j^{\alpha} \odot \pi / m_j\bigr),

which :func:`calibrate` evaluates for all uncertain rows at once. For ``T > 1`` the confident block differs per
uncertain row; :func:`calibrate` does not build it. After ``t`` rounds the confident row ``r`` equals
``normalise(P_c[r]^(alpha^t) * V_t)`` for one weight vector ``V_t`` per uncertain row (``V_1 = pi / m_1``,
``V_{t+1} = V_t^alpha * pi / m_{t+1}``), so the column sums the next round needs are

.. math::

    \sum_r Y_{rc}^{\alpha} = V_{t,c}^{\alpha} \sum_r \frac{P_{rc}^{\alpha^{t+1}}}{Z_r^{\alpha}}, \qquad
    Z_r = \sum_c P_{rc}^{\alpha^t} V_{t,c},

two matrix products per round over blocks of uncertain and confident rows. Cost for ``T > 1``: ``O(n_u n_c C)``
multiply-adds per extra round done by BLAS, plus ``O(n_u n_c)`` elementwise work (a reciprocal or power); the work
array is a ``(confident block, 256 uncertain rows)`` block of about 4 MB. This factored form needs its factors
(``P^(alpha^t)``, ``V_t``) to stay far above float64 underflow; an uncertain row for which the bound
``min P^(alpha^t) * min V_t`` (or its ``alpha``-th power) falls below ``1e-250``, or whose numbers overflow, is
recomputed by the literal algorithm, batched as a
``(chunk, n_c + 1, C)`` tensor of at most about 256 MB (``O(n_c C T)`` elementwise work per such row). That needs
extreme inputs: roughly confident entries with ``p^(alpha^T) < 1e-250`` (``alpha = 1``: ``p < 1e-250``; ``alpha = 3,
T = 4``: ``p < 1e-3``) or class weights spanning a similar range.
:func:`calibrate_reference` is the plain per-row loop above, kept as the oracle and the benchmark's peer.

Edge-case rules (the same in both functions):

- ``probs`` is 2-D, finite and non-negative; a NaN, infinite or negative entry, an all-zero row, or a row whose sum is
  off 1 by more than ``1e-6`` raises :class:`RowError` naming the first bad row. ``renormalize=True`` divides every row
  by its sum instead of raising for the last case (the returned confident rows are then the renormalised rows).
- ``k`` is clamped to the number of classes ``C``; a ``k`` below 2 after clamping raises :class:`NlptoolError`.
- ``threshold``: a row is confident iff ``u < threshold``. So ``threshold <= 0`` makes every row uncertain and
  ``threshold > 1`` makes every row confident (the output then equals the input).
- Exact zeros are kept: ``0 log 0 = 0`` in the uncertainty and ``0^alpha = 0`` (``alpha`` must be > 0). A class whose
  column in ``Y`` is all zero keeps 0 (``0 / 0 := 0`` in the column division) instead of turning into NaN.
- The prior may contain zeros (those classes get probability 0 in adjusted rows), but every row must put some
  probability on a class with a positive prior, otherwise :class:`RowError` (the row contradicts the prior).
- No confident rows (e.g. ``threshold <= 0``): each uncertain row is adjusted against itself alone, ``Y = [p_j]``. Then
  ``m_j = p_j^alpha`` and the result is the prior restricted to the row's support, ``normalise(pi * [p_j > 0])``: the
  row's own probabilities are lost. This degenerate result is what the algorithm gives; callers that want CAN's effect
  must make sure some rows are confident.
- ``alpha`` so large that an adjusted row underflows to all zeros (e.g. ``0.4^1000``) raises :class:`RowError` for
  that row.

References:
    Menglin Jia, Austin Reiter, Ser-Nam Lim, Yoav Artzi, Claire Cardie, "When in Doubt: Improving Classification
    Performance with Alternating Normalization", Findings of EMNLP 2021. https://arxiv.org/abs/2109.13449
    Su Jianlin, "CAN: a simple post-processing trick that improves classification with prior distributions" (2021),
    https://kexue.fm/archives/8728
"""

from __future__ import annotations

import numbers

import numpy as np

from nlptool.core.errors import InputError, NlptoolError, RowError, plain

__all__ = [
    "calibrate",
    "calibrate_reference",
    "class_index",
    "evaluate",
    "label_counts",
    "parse_prior",
    "topk_uncertainty",
]

#: Allowed deviation of a row sum from 1 before ``renormalize=True`` is required.
SUM_TOLERANCE = 1e-6

# Work-array sizes for iterations > 1. The factored form takes _BLOCK_ROWS uncertain rows at a time and walks the
# confident rows in blocks whose (confident block, uncertain rows) array is about _BLOCK_BYTES, so it stays in cache
# (measured several times faster than one (n_confident, chunk) array of 64 MB). The direct fallback's
# (chunk, n_confident + 1, C) tensor and its temporaries stay within _CHUNK_BYTES.
_BLOCK_ROWS = 256
_BLOCK_BYTES = 4 * 2**20
_CHUNK_BYTES = 256 * 2**20


# --------------------------------------------------------------------------------------------------------------------
# validation


def _as_matrix(probs) -> np.ndarray:
    try:
        arr = np.array(probs, dtype=np.float64)  # always a copy: callers' arrays are never modified
    except (TypeError, ValueError) as exc:
        raise NlptoolError(f"probabilities must be numbers ({exc}); pass a 2-D array of shape (rows, classes)") from exc
    if arr.ndim != 2:
        raise NlptoolError(
            f"probabilities must be a 2-D array of shape (rows, classes), got {arr.ndim}-D; "
            "wrap a single row as [[...]]"
        )
    return arr


def _first_bad_row(arr: np.ndarray, check_sum: bool) -> RowError | None:
    """Return a RowError for the lowest-numbered invalid row, or None when every row is valid."""
    nonfinite = ~np.isfinite(arr).all(axis=1)
    negative = (arr < 0).any(axis=1) & ~nonfinite
    sums = arr.sum(axis=1)
    zero = (sums == 0) & ~nonfinite & ~negative
    bad = nonfinite | negative | zero
    if check_sum:
        off = ~bad & (np.abs(sums - 1.0) > SUM_TOLERANCE)
        bad = bad | off
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    if nonfinite[i]:
        col = int(np.argmax(~np.isfinite(arr[i])))
        value = plain(arr[i, col])
        return RowError(f"probability in class {col} is {value!r}; every entry must be a finite number", row=i)
    if negative[i]:
        col = int(np.argmax(arr[i] < 0))
        return RowError(f"probability in class {col} is negative ({plain(arr[i, col])!r}); entries must be >= 0", row=i)
    if zero[i]:
        return RowError("all probabilities are 0; a row needs some probability mass", row=i)
    return RowError(
        f"probabilities sum to {plain(sums[i])!r}, not 1 (tolerance {SUM_TOLERANCE}); "
        "pass renormalize=True to divide each row by its sum",
        row=i,
    )


def _check_probs(probs, *, renormalize: bool) -> np.ndarray:
    arr = _as_matrix(probs)
    err = _first_bad_row(arr, check_sum=not renormalize)
    if err is not None:
        raise err
    if renormalize and arr.shape[0]:
        arr /= arr.sum(axis=1, keepdims=True)
    return arr


def _check_k(k, n_classes: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise NlptoolError(f"k must be an integer, got {plain(k)!r}")
    k_eff = min(int(k), n_classes)
    if k_eff < 2:
        raise NlptoolError(
            f"k must be at least 2 (got k={k} with {n_classes} classes, clamped to {k_eff}); "
            "the top-k entropy needs 2 or more probabilities per row"
        )
    return k_eff


def _check_prior(prior, n_classes: int) -> np.ndarray:
    if prior is None:
        return np.full(n_classes, 1.0 / n_classes)
    try:
        pi = np.array(prior, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise NlptoolError(f"prior must be numbers ({exc}); pass one non-negative weight per class") from exc
    if pi.ndim != 1:
        raise NlptoolError(f"prior must be 1-D (one weight per class), got {pi.ndim}-D")
    if pi.shape[0] != n_classes:
        raise NlptoolError(
            f"prior has {pi.shape[0]} entries but the probabilities have {n_classes} classes; "
            "give one weight per class, in the same class order"
        )
    if not np.isfinite(pi).all():
        raise NlptoolError(f"prior contains a NaN or infinite value at class {int(np.argmax(~np.isfinite(pi)))}")
    if (pi < 0).any():
        raise NlptoolError(f"prior is negative at class {int(np.argmax(pi < 0))}; class weights must be >= 0")
    total = pi.sum()
    if total <= 0:
        raise NlptoolError("prior is all zeros; give at least one class a positive weight")
    return pi / total


def _check_params(threshold, alpha, iterations) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or np.isnan(threshold):
        raise NlptoolError(f"threshold must be a real number, got {plain(threshold)!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not (np.isfinite(alpha) and alpha > 0):
        raise NlptoolError(f"alpha must be a finite number > 0, got {plain(alpha)!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 1:
        raise NlptoolError(f"iterations must be an integer >= 1, got {plain(iterations)!r}")


def _check_prior_support(arr: np.ndarray, prior: np.ndarray) -> None:
    if (prior > 0).all():
        return
    dead = ~((arr > 0) & (prior > 0)).any(axis=1)
    if dead.any():
        i = int(np.argmax(dead))
        raise RowError(
            "all of this row's probability is on classes whose prior is 0, so it cannot be adjusted; "
            "give those classes a positive prior",
            row=i,
        )


def _prepare(probs, prior, k, threshold, alpha, iterations, renormalize):
    """Validate everything; return (probs copy, prior, uncertainty, uncertain mask)."""
    _check_params(threshold, alpha, iterations)
    arr = _check_probs(probs, renormalize=renormalize)
    n_classes = arr.shape[1]
    k_eff = _check_k(k, n_classes)
    pi = _check_prior(prior, n_classes)
    _check_prior_support(arr, pi)
    unc = _uncertainty(arr, k_eff)
    uncertain = ~(unc < threshold)
    return arr, pi, unc, uncertain


def _finish(out: np.ndarray, uncertain: np.ndarray, unc: np.ndarray, return_mask: bool):
    if uncertain.any():
        sums = out[uncertain].sum(axis=1)
        if not (np.isfinite(sums) & (sums > 0)).all():
            i = int(np.flatnonzero(uncertain)[np.argmax(~(np.isfinite(sums) & (sums > 0)))])
            raise RowError("the adjusted row underflowed to all zeros (alpha too large); use a smaller alpha", row=i)
    if return_mask:
        return out, uncertain, unc
    return out


# --------------------------------------------------------------------------------------------------------------------
# uncertainty


def _uncertainty(arr: np.ndarray, k: int) -> np.ndarray:
    n_classes = arr.shape[1]
    top = arr if k == n_classes else np.partition(arr, n_classes - k, axis=1)[:, n_classes - k :]
    q = top / top.sum(axis=1, keepdims=True)
    logq = np.log(q, out=np.zeros_like(q), where=q > 0)
    ent = -(q * logq).sum(axis=1)
    return np.clip(ent / np.log(k), 0.0, 1.0)


def topk_uncertainty(probs, k: int = 3) -> np.ndarray:
    r"""Normalised entropy of each row's top-k probabilities.

    .. math::

        q = \operatorname{top}_k(p) / \textstyle\sum \operatorname{top}_k(p), \qquad
        u(p) = -\frac{1}{\log k}\sum_i q_i \log q_i \quad (0 \log 0 = 0),

    so ``u = 1`` when the top k are equal and ``u = 0`` when one class holds all of the top-k mass. The value does not
    depend on the row's scale, so rows need not sum to 1 here.

    Args:
        probs: array-like of shape ``(n, C)``, finite and non-negative, no all-zero row.
        k: how many of the largest probabilities to use; clamped to ``C``; below 2 after clamping is an error.

    Returns:
        float64 array of shape ``(n,)`` with values in ``[0, 1]``.

    Raises:
        RowError: a NaN, infinite or negative entry, or an all-zero row.
        NlptoolError: ``probs`` not 2-D, or ``k`` < 2 after clamping.

    Reference: Jia et al., Findings of EMNLP 2021 (CAN); https://kexue.fm/archives/8728.
    """
    arr = _as_matrix(probs)
    k_eff = _check_k(k, arr.shape[1])
    err = _first_bad_row(arr, check_sum=False)
    if err is not None:
        raise err
    if arr.shape[0] == 0:
        return np.zeros(0)
    return _uncertainty(arr, k_eff)


# --------------------------------------------------------------------------------------------------------------------
# calibration


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with ``0 / 0 := 0`` (den is only ever 0 where num is 0)."""
    num, den = np.broadcast_arrays(num, den)
    return np.divide(num, den, out=np.zeros(num.shape), where=den != 0)


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    return _safe_divide(x, x.sum(axis=-1, keepdims=True))


def _adjust_one_round(u: np.ndarray, colsum: np.ndarray, n_conf: int, prior: np.ndarray):
    """One round for the uncertain rows: ``u = y^alpha``, ``colsum`` = confident column sums of ``Y^alpha``.

    Returns (new uncertain rows, column means ``m``). Divides by ``m`` before multiplying by the prior, in the same
    order as the reference (``u / m <= n_conf + 1`` cannot overflow, ``prior / m`` can for subnormal means)."""
    m = (colsum + u) / (n_conf + 1)
    return _normalise_rows(_safe_divide(u, m) * prior), m


def _power(x: np.ndarray, alpha: float) -> np.ndarray:
    return x if alpha == 1 else np.power(x, alpha)


def calibrate(
    probs,
    prior=None,
    k: int = 3,
    threshold: float = 0.9,
    alpha: float = 1.0,
    iterations: int = 1,
    return_mask: bool = False,
    *,
    renormalize: bool = False,
):
    r"""Adjust uncertain prediction rows by alternating normalization (CAN); vectorised.

    Each row with ``topk_uncertainty(p, k) >= threshold`` is replaced by the last row of ``Y`` after ``iterations``
    rounds of ``Y <- Y^alpha``, column division by the column mean, column multiplication by ``prior`` and row
    normalisation, where ``Y`` stacks the (original) confident rows and that one row. For ``iterations=1`` this is the
    closed form ``normalise(p_j^alpha * prior / m_j)`` with ``m_j = (S + p_j^alpha) / (n_c + 1)``; for more rounds the
    confident block is carried as one weight vector per uncertain row and its column sums are two matrix products
    (see the module docstring for the derivation, cost and the edge-case rules). The result equals
    :func:`calibrate_reference` up to floating-point rounding.

    Args:
        probs: array-like ``(n, C)`` of probabilities, rows summing to 1 (within ``1e-6``).
        prior: class prior of length ``C`` (normalised here); ``None`` means uniform.
        k: top-k used by the uncertainty (clamped to ``C``, must end up >= 2).
        threshold: rows with uncertainty ``< threshold`` are confident and returned unchanged.
        alpha: power applied to ``Y`` each round (> 0); ``alpha > 1`` sharpens, ``< 1`` flattens.
        iterations: rounds of alternating normalization (>= 1).
        return_mask: also return the boolean mask of adjusted rows and the per-row uncertainty.
        renormalize: divide each row by its sum instead of rejecting rows that do not sum to 1.

    Returns:
        float64 array ``(n, C)``; with ``return_mask=True`` a tuple ``(probs, adjusted_mask, uncertainty)``.

    Raises:
        RowError: a bad row (NaN/inf/negative entry, all zeros, sum off 1, all mass on zero-prior classes), or an
            adjusted row that underflowed to all zeros because ``alpha`` is too large.
        NlptoolError: bad shape, ``k``, ``prior``, ``alpha``, ``iterations`` or ``threshold``.

    Reference: Jia et al., "When in Doubt: Improving Classification Performance with Alternating Normalization",
    Findings of EMNLP 2021; Su Jianlin, https://kexue.fm/archives/8728.
    """
    arr, pi, unc, uncertain = _prepare(probs, prior, k, threshold, alpha, iterations, renormalize)
    out = arr.copy()
    if uncertain.any():
        conf = arr[~uncertain]
        out[uncertain] = _adjust_uncertain(conf, arr[uncertain], pi, float(alpha), int(iterations))
    return _finish(out, uncertain, unc, return_mask)


def _adjust_uncertain(conf: np.ndarray, unc_rows: np.ndarray, prior: np.ndarray, alpha: float, iterations: int):
    n_conf = conf.shape[0]
    # powers[t] = conf ** (alpha ** t): the confident rows' own factor after t rounds (t = 0 .. iterations).
    powers = [conf]
    for _ in range(iterations):
        powers.append(_power(powers[-1], alpha))

    u = _power(unc_rows, alpha)
    y, m = _adjust_one_round(u, powers[1].sum(axis=0), n_conf, prior)
    if iterations == 1:
        return y
    if n_conf == 0:
        for _ in range(iterations - 1):
            u = _power(y, alpha)
            y, _ = _adjust_one_round(u, np.zeros_like(u), 0, prior)
        return y

    # Smallest positive entry of each powers[t]; bounds the dynamic range of the factored form (see _more_rounds).
    min_pos = [float(a[a > 0].min()) if (a > 0).any() else 1.0 for a in powers]
    chunk = max(1, _BLOCK_ROWS)
    result = np.empty_like(y)
    safe = np.ones(y.shape[0], dtype=bool)
    for s in range(0, y.shape[0], chunk):
        part = slice(s, s + chunk)
        result[part], safe[part] = _more_rounds(y[part], m[part], powers, min_pos, prior, alpha, iterations)
    if not safe.all():
        result[~safe] = _direct_rounds(conf, unc_rows[~safe], prior, alpha, iterations)
    return result


# Every factor of the factored form must stay above this (far from float64 underflow, 2.2e-308) for it to agree with
# the per-row computation to rounding error; rows that come closer are recomputed by _direct_rounds.
_SAFE_TINY = 1e-250


def _more_rounds(y, m, powers, min_pos, prior, alpha, iterations):
    """Rounds 2..iterations for a chunk of uncertain rows ``y`` (B, C), given their round-1 column means ``m``.

    Returns the adjusted rows and a mask of rows whose numbers stayed in a safe range (others must be recomputed).
    """
    with np.errstate(all="ignore"):  # rows that leave the safe range are flagged and recomputed, not warned about
        return _more_rounds_unchecked(y, m, powers, min_pos, prior, alpha, iterations)


def _more_rounds_unchecked(y, m, powers, min_pos, prior, alpha, iterations):
    n_conf = powers[0].shape[0]
    step = max(1, _BLOCK_BYTES // (8 * y.shape[0]))  # confident rows per block
    safe = np.ones(y.shape[0], dtype=bool)
    # Confident row r after round t is normalise(powers[t][r] * v); v is scale-free, so keep max(v) = 1.
    w = _safe_divide(np.broadcast_to(prior, m.shape), m)
    v = w / w.max(axis=1, keepdims=True)
    for t in range(1, iterations):
        # Every positive powers[t][r, c] * v[c] is >= lo, hence so is each row sum z_r (v <= 1, so z_r <= C); with lo
        # and lo^alpha >= _SAFE_TINY no factor below (z^-alpha, powers[t + 1], v^alpha) under- or overflows.
        v_min = np.where(v > 0, v, np.inf).min(axis=1)
        lo = min_pos[t] * v_min
        safe &= (lo >= _SAFE_TINY) & (lo**alpha >= _SAFE_TINY)
        # sum_r (normalise(powers[t][r] * v))^alpha = v^alpha * sum_r powers[t+1][r] / z_r^alpha, summed over blocks
        acc = np.zeros_like(v)
        for r in range(0, n_conf, step):
            z = powers[t][r : r + step] @ v.T  # (block, B): row sums of powers[t] * v before normalisation; >= lo
            if alpha == 1 or alpha == 2:  # fast paths: a reciprocal (and a square) instead of pow
                np.reciprocal(z, out=z)
                if alpha == 2:
                    np.multiply(z, z, out=z)
            else:
                np.power(z, -alpha, out=z)  # <= lo^-alpha <= 1 / _SAFE_TINY; a z of 0 gives inf, flagged below
            acc += z.T @ powers[t + 1][r : r + step]
        colsum = _power(v, alpha) * acc
        u = _power(y, alpha)
        y, m = _adjust_one_round(u, colsum, n_conf, prior)
        v = _power(v, alpha) * _safe_divide(np.broadcast_to(prior, m.shape), m)
        vmax = v.max(axis=1, keepdims=True)
        safe &= np.isfinite(vmax[:, 0]) & (vmax[:, 0] > 0) & np.isfinite(colsum).all(axis=1)
        v = _safe_divide(v, vmax)
    return y, safe


def _direct_rounds(conf, rows, prior, alpha, iterations):
    """The literal algorithm, batched: a (B, n_conf + 1, C) tensor per chunk of uncertain rows.

    Cost ``O(n_u * n_conf * C * iterations)`` elementwise work; used only for rows whose numbers span too wide a range
    for the factored form of :func:`_more_rounds`.
    """
    n_conf, n_classes = conf.shape
    chunk = max(1, _CHUNK_BYTES // (24 * (n_conf + 1) * n_classes))
    out = np.empty_like(rows)
    for s in range(0, rows.shape[0], chunk):
        part = rows[s : s + chunk]
        y = np.empty((part.shape[0], n_conf + 1, n_classes))
        y[:, :n_conf] = conf
        y[:, n_conf] = part
        for _ in range(iterations):
            y = y**alpha
            y = _safe_divide(y, y.mean(axis=1, keepdims=True))
            y *= prior
            y = _normalise_rows(y)
        out[s : s + chunk] = y[:, n_conf]
    return out


def calibrate_reference(
    probs,
    prior=None,
    k: int = 3,
    threshold: float = 0.9,
    alpha: float = 1.0,
    iterations: int = 1,
    return_mask: bool = False,
    *,
    renormalize: bool = False,
):
    r"""CAN as a plain per-row loop: the test oracle and the benchmark's peer. Slow.

    For each uncertain row ``p_j`` it builds ``Y = [P_c; p_j]`` from the original confident rows and runs,
    ``iterations`` times, ``Y <- Y^alpha``, ``Y[:, c] /= mean(Y[:, c])`` (``0 / 0 := 0``), ``Y[:, c] *= prior[c]``,
    ``Y[r] /= sum(Y[r])``; the adjusted row is ``Y[-1]``. Cost ``O(n_u * n_c * C * iterations)`` elementwise numpy
    work plus a Python loop over the ``n_u`` uncertain rows. Same arguments, validation, edge-case rules and return
    value as :func:`calibrate`.

    Reference: Jia et al., Findings of EMNLP 2021; Su Jianlin, https://kexue.fm/archives/8728.
    """
    arr, pi, unc, uncertain = _prepare(probs, prior, k, threshold, alpha, iterations, renormalize)
    out = arr.copy()
    confident_rows = arr[~uncertain]
    for j in np.flatnonzero(uncertain):
        y = np.vstack([confident_rows, arr[j][None, :]])
        for _ in range(iterations):
            y = y**alpha
            y = _safe_divide(y, y.mean(axis=0))
            y = y * pi
            y = _safe_divide(y, y.sum(axis=1, keepdims=True))
        out[j] = y[-1]
    return _finish(out, uncertain, unc, return_mask)


# --------------------------------------------------------------------------------------------------------------------
# priors from the command line and from files


def evaluate(probs, adjusted, mask, gold=None) -> dict:
    """What a calibration changed, as ``nlptool calibrate-can --metrics-out`` reports it.

    Args:
        probs: the ``(n, C)`` probabilities before (as given to :func:`calibrate`).
        adjusted: :func:`calibrate`'s result.
        mask: the boolean mask of adjusted (uncertain) rows (``return_mask=True``).
        gold: optional gold class indices ``(n,)``; adds accuracy before/after over all rows, the confident rows
            (unchanged, so one number) and the uncertain ones (``None`` for an empty group).

    Returns:
        ``rows``, ``uncertain_rows``, ``confident_rows``, ``changed_predictions`` and, with ``gold``,
        ``accuracy_before``, ``accuracy_after``, ``accuracy_confident``, ``accuracy_uncertain_before``,
        ``accuracy_uncertain_after``.
    """
    from nlptool.core.metrics import accuracy

    before = np.asarray(probs).argmax(axis=1)
    after = np.asarray(adjusted).argmax(axis=1)
    mask = np.asarray(mask, dtype=bool)
    n, n_unc = len(before), int(mask.sum())
    out: dict = {
        "rows": n,
        "uncertain_rows": n_unc,
        "confident_rows": n - n_unc,
        "changed_predictions": int((after != before).sum()),
    }
    if gold is None:
        return out
    gold = np.asarray(gold)
    conf = ~mask
    out["accuracy_before"] = accuracy(gold, before)
    out["accuracy_after"] = accuracy(gold, after)
    out["accuracy_confident"] = accuracy(gold[conf], before[conf]) if conf.any() else None
    out["accuracy_uncertain_before"] = accuracy(gold[mask], before[mask]) if mask.any() else None
    out["accuracy_uncertain_after"] = accuracy(gold[mask], after[mask]) if mask.any() else None
    return out


def class_index(
    value: str,
    names: list[str] | None,
    n_classes: int,
    *,
    path: str | None = None,
    line: int | None = None,
    field: str | None = None,
) -> int:
    """The 0-based class of a label: its position in ``names``, else an integer ``0 <= i < n_classes``.

    Raises:
        InputError: for any other label, naming ``path``, ``line`` and ``field``.
    """
    if names is not None and value in names:
        return names.index(value)
    try:
        as_float = float(value)
        as_int = int(as_float)
    except (ValueError, OverflowError):
        as_int = None
    if as_int is not None and as_float == as_int and 0 <= as_int < n_classes:
        return as_int
    known = ", ".join(names) if names else f"0..{n_classes - 1}"
    raise InputError(
        f"label '{value}' is not a class ({known}); name the classes with --labels", path=path, line=line, field=field
    )


def label_counts(path: str, label_col: str, names: list[str] | None, n_classes: int, **read_kwargs) -> np.ndarray:
    """Count the labels in column ``label_col`` of a data file (CSV/TSV/JSONL); one count per class.

    Classes that never occur get a count of 0 (callers may warn: such a prior zeroes the class in adjusted rows).

    Raises:
        InputError: an empty or unknown label (file, line, field); NlptoolError: a file without rows.
    """
    from nlptool.core.io import get_field, read_records

    counts = np.zeros(n_classes)
    with read_records(path, **read_kwargs) as reader:
        for record in reader:
            value = get_field(record, label_col, path)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise InputError("empty label", path=path, line=record.line, field=label_col)
            counts[class_index(str(value).strip(), names, n_classes, path=path, line=record.line, field=label_col)] += 1
    if counts.sum() == 0:
        raise NlptoolError(f"{path} has no rows to count labels in")
    return counts


def parse_prior(spec: str, names: list[str] | None, n_classes: int) -> np.ndarray:
    """The prior (normalised to sum 1) given as ``'0.3,0.3,0.4'`` (class order) or as the path of a counts file.

    A counts file is a JSON/YAML mapping ``label: count`` or list of counts, ``label,count`` lines (an optional
    header line), or one count per line in class order. Labels are class names or indices (:func:`class_index`).

    A file that names labels must give a count for *every* class: a class it leaves out is an error, not a silent
    prior of 0 (which would set that class's probability to 0 in every adjusted row). Write ``label,0`` to mean 0.

    Raises:
        NlptoolError / InputError: unparsable text, wrong length, unknown or missing labels, negative, non-finite or
        all-zero values.
    """
    from pathlib import Path

    if Path(spec).is_file():
        values = _read_counts_file(spec, names, n_classes)
        where = f"prior file {spec}"
    else:
        try:
            values = [float(v) for v in spec.split(",")]
        except ValueError:
            raise NlptoolError(
                f"prior '{spec}' is neither a file nor a comma-separated list of numbers such as 0.3,0.3,0.4"
            ) from None
        where = f"prior '{spec}'"
    vec = np.asarray(values, dtype=np.float64)
    if len(vec) != n_classes:
        raise NlptoolError(f"{where} has {len(vec)} values but the rows hold {n_classes} classes; give one per class")
    if not np.isfinite(vec).all() or (vec < 0).any() or vec.sum() <= 0:
        raise NlptoolError(f"{where}: values must be finite, non-negative and not all zero")
    return vec / vec.sum()


def _read_counts_file(path: str, names: list[str] | None, n_classes: int) -> list[float]:
    import yaml

    from nlptool.core.io import read_text

    text = read_text(path)
    if path.endswith((".json", ".yaml", ".yml")):
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise NlptoolError(f"prior file {path}: invalid JSON/YAML ({first})") from None
        if isinstance(doc, list):
            return [_to_count(v, path, None) for v in doc]
        if isinstance(doc, dict):
            # the line of each key is not known after parsing; name the key instead
            return _counts_from_pairs([(str(k), v, None) for k, v in doc.items()], names, n_classes, path)
        raise NlptoolError(f"prior file {path}: expected a mapping label -> count or a list of counts")
    pairs: list[tuple[str | None, str, int]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        parts = [p.strip() for p in line.replace("\t", ",").split(",") if p.strip()]
        if not parts:
            continue
        if len(parts) == 1:
            pairs.append((None, parts[0], line_no))
        elif len(parts) == 2:
            pairs.append((parts[0], parts[1], line_no))
        else:
            raise InputError("expected 'label,count' or a single count", path=path, line=line_no)
    if pairs and pairs[0][0] is not None and not _is_float(pairs[0][1]):
        pairs = pairs[1:]  # header such as 'label,count'
    if all(p[0] is None for p in pairs):
        return [_to_count(v, path, ln) for _, v, ln in pairs]
    return _counts_from_pairs(pairs, names, n_classes, path)


def _counts_from_pairs(pairs, names: list[str] | None, n_classes: int, path: str) -> list[float]:
    counts = [0.0] * n_classes
    seen = [False] * n_classes
    for label, value, line in pairs:
        if label is None:
            raise InputError("a single count among 'label,count' lines; give every line a label", path=path, line=line)
        idx = class_index(label, names, n_classes, path=path, line=line, field=None if line else label)
        counts[idx] += _to_count(value, path, line, label)
        seen[idx] = True
    missing = [names[i] if names else str(i) for i in range(n_classes) if not seen[i]]
    if missing:
        shown = ", ".join(f"'{m}'" for m in missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise NlptoolError(
            f"prior file {path} gives no count for {len(missing)} class(es): {shown}; add them (a count of 0 is "
            "allowed, but it sets the class's probability to 0 in every adjusted row), or check the label spelling"
        )
    return counts


def _is_float(v) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _to_count(v, path: str, line: int | None, label: str | None = None) -> float:
    if isinstance(v, bool) or not _is_float(v):
        where = "count" if label is None else f"count of '{label}'"
        raise InputError(f"{where}: '{v}' is not a number", path=path, line=line)
    return float(v)

"""Metrics shared by the commands (checked against scikit-learn / scipy in the tests)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from nlptool.core.errors import NlptoolError


def _pair(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise NlptoolError(f"labels and predictions must be 1-D of equal length, got {t.shape} and {p.shape}")
    return t, p


def accuracy(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> float:
    """Fraction of positions where ``y_pred == y_true`` (NaN for empty input)."""
    t, p = _pair(y_true, y_pred)
    return float((t == p).mean()) if len(t) else float("nan")


def confusion_matrix(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray, n_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of rows with gold class ``i`` predicted as ``j`` (integer class ids in [0, n))."""
    t, p = _pair(y_true, y_pred)
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (t.astype(np.int64), p.astype(np.int64)), 1)
    return out


def macro_f1(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray, n_classes: int) -> float:
    """Unweighted mean over classes of F1 = 2·TP / (2·TP + FP + FN); a class absent from both gold and predictions
    scores 0 (scikit-learn's ``zero_division=0``) and still counts in the mean, as with ``labels=range(n)``."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # (TP+FP) + (TP+FN)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def _paired_scores(x: Sequence | np.ndarray, y: Sequence | np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape:
        raise NlptoolError(f"{what} needs two 1-D sequences of equal length, got shapes {a.shape} and {b.shape}")
    if len(a) < 2:
        raise NlptoolError(f"{what} needs at least 2 items, got {len(a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise NlptoolError(f"{what} got NaN or infinite values; drop or fix those items")
    return a, b


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if (a == a[0]).all() or (b == b[0]).all():
        return float("nan")
    am, bm = a - a.mean(), b - b.mean()
    # Rescale before squaring so that large inputs do not overflow; the correlation is scale-free.
    am /= np.abs(am).max()
    bm /= np.abs(bm).max()
    r = np.dot(am / np.linalg.norm(am), bm / np.linalg.norm(bm))
    return float(np.clip(r, -1.0, 1.0))


def _average_ranks(a: Sequence | np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties getting the mean of the ranks they span (as
    ``scipy.stats.rankdata(a, method="average")``), as float64. ``O(n log n)``."""
    a = np.asarray(a)
    n = len(a)
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    starts_mask = np.empty(n, dtype=bool)
    starts_mask[:1] = True
    np.not_equal(s[1:], s[:-1], out=starts_mask[1:])
    starts = np.flatnonzero(starts_mask)
    counts = np.diff(np.append(starts, n))
    # A tie group occupying 0-based positions start .. start+count-1 has 1-based ranks start+1 .. start+count.
    group_rank = starts + (counts + 1) / 2.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, counts)
    return ranks


def pearson(x: Sequence | np.ndarray, y: Sequence | np.ndarray) -> float:
    r"""Pearson correlation :math:`r = \sum (x_i - \bar x)(y_i - \bar y) / \sqrt{\sum (x_i - \bar x)^2
    \sum (y_i - \bar y)^2}`, clipped to [-1, 1] (same value as ``scipy.stats.pearsonr(x, y).statistic``).

    A constant ``x`` or ``y`` (all items equal) has no defined correlation and returns ``nan`` (scipy also returns
    nan, with a warning; this function does not warn).

    Raises:
        NlptoolError: not two 1-D sequences of equal length, fewer than 2 items, or NaN/infinite values.

    See :func:`spearman` for the rank version, the usual STS-benchmark score of sentence embeddings.
    """
    return _pearson(*_paired_scores(x, y, "pearson"))


def spearman(x: Sequence | np.ndarray, y: Sequence | np.ndarray) -> float:
    """Spearman rank correlation: :func:`pearson` of the average ranks of ``x`` and ``y``.

    Equals ``scipy.stats.spearmanr(x, y).statistic`` (ties share the mean of their ranks). The standard evaluation of
    sentence embeddings on STS data (cosine against gold score), used with :mod:`nlptool.core.cosent`. A constant
    input returns ``nan``.

    Raises:
        NlptoolError: not two 1-D sequences of equal length, fewer than 2 items, or NaN/infinite values.
    """
    a, b = _paired_scores(x, y, "spearman")
    return _pearson(_average_ranks(a), _average_ranks(b))


def best_threshold_accuracy(scores: Sequence | np.ndarray, labels: Sequence | np.ndarray) -> tuple[float, float]:
    """Best accuracy of the rule "predict 1 iff ``score >= t``" over all thresholds ``t``, and that ``t``.

    Only thresholds that split the sorted distinct scores differently need to be tried: below the smallest score
    (everything 1; returned as ``t = min(scores)``), the midpoint between each pair of consecutive distinct scores,
    and above the largest (everything 0; returned as the next float after ``max(scores)``). All are finite for
    finite scores. If a midpoint rounds down onto the lower score (adjacent floats), the upper score is used instead,
    so the returned ``t`` always reproduces the returned accuracy. Ties in accuracy go to the smallest threshold.
    ``O(n log n)`` (one sort), vectorised. Used to score a sentence-embedding model's cosines on binary paraphrase
    data, next to :func:`spearman` for graded data.

    Args:
        scores: ``(n,)`` real scores (e.g. cosines).
        labels: ``(n,)`` binary gold labels, 0/1 (or bool).

    Returns:
        ``(accuracy, threshold)`` as Python floats.

    Raises:
        NlptoolError: not two 1-D sequences of equal length, empty, non-finite scores, or labels other than 0/1.
    """
    s, lab = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if s.ndim != 1 or lab.ndim != 1 or s.shape != lab.shape:
        raise NlptoolError(
            f"best_threshold_accuracy needs 1-D scores and labels of equal length, got shapes {s.shape} and {lab.shape}"
        )
    n = len(s)
    if n == 0:
        raise NlptoolError("best_threshold_accuracy needs at least 1 item, got 0")
    if not np.isfinite(s).all():
        raise NlptoolError("best_threshold_accuracy got NaN or infinite scores; drop or fix those items")
    if not np.isin(lab, (0, 1)).all():
        raise NlptoolError("best_threshold_accuracy needs binary labels 0/1; map the classes to 0 and 1 first")
    y = lab.astype(np.int64)
    order = np.argsort(s, kind="mergesort")
    s, y = s[order], y[order]
    # Candidate m = number of lowest items predicted 0: 0, the end of each distinct-score group, i.e. n at the end.
    ends = np.append(np.flatnonzero(s[1:] != s[:-1]) + 1, n)
    m = np.append(0, ends)
    zeros_below = np.append(0, np.cumsum(1 - y)[ends - 1])
    ones_below = np.append(0, np.cumsum(y)[ends - 1])
    correct = zeros_below + (y.sum() - ones_below)
    k = int(np.argmax(correct))
    if m[k] == 0:
        t = s[0]
    elif m[k] == n:
        t = np.nextafter(s[-1], np.inf)
    else:
        lo, hi = s[m[k] - 1], s[m[k]]
        t = lo / 2 + hi / 2
        if not lo < t <= hi:
            t = hi
    return float(correct[k] / n), float(t)


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": gold,
        "predicted": predicted,
        "correct": correct,
    }


def span_prf(gold: Sequence[Iterable[tuple]], pred: Sequence[Iterable[tuple]]) -> dict:
    """Exact-match span precision, recall and F1: micro over all spans, per label, and the macro mean over labels.

    A span is ``(start, end, label)`` (any hashable boundaries); a prediction counts as correct only when the same
    span with the same label is in the gold set of the same example (CoNLL / seqeval's entity-level measure).

    Args:
        gold: per example, its gold spans.
        pred: per example, its predicted spans (duplicates count once).

    Returns:
        ``{"micro": {...}, "per_type": {label: {...}}, "macro": {"precision", "recall", "f1"}}``, each inner dict
        with ``precision``, ``recall``, ``f1``, ``support`` (gold count), ``predicted`` and ``correct``. Labels are
        those in the gold or the predicted spans; macro is their unweighted mean (as in seqeval). An undefined ratio
        (nothing predicted, no gold) is 0.
    """
    if len(gold) != len(pred):
        raise NlptoolError(f"gold has {len(gold)} examples but predictions have {len(pred)}")
    counts: dict[str, list[int]] = {}
    for g_spans, p_spans in zip(gold, pred, strict=True):
        g, p = set(g_spans), set(p_spans)
        for s in g:
            counts.setdefault(s[-1], [0, 0, 0])[2] += 1
        for s in p:
            c = counts.setdefault(s[-1], [0, 0, 0])
            c[1] += 1
            c[0] += s in g
    per_type = {label: _prf(*counts[label]) for label in sorted(counts)}
    total = [sum(c[k] for c in counts.values()) for k in range(3)]
    macro = {
        key: float(np.mean([v[key] for v in per_type.values()])) if per_type else 0.0
        for key in ("precision", "recall", "f1")
    }
    return {"micro": _prf(*total), "per_type": per_type, "macro": macro}


def nested_recall(gold: Sequence[Iterable[tuple]], pred: Sequence[Iterable[tuple]]) -> dict[str, float]:
    """Recall on the gold spans that lie inside another gold span of the same example (nested entities).

    ``(start, end, label)`` span ``a`` is nested when some other gold span ``b`` has ``b.start <= a.start`` and
    ``a.end <= b.end`` (and is not the same span). Returns ``{"nested_gold", "nested_found", "nested_recall"}``.
    """
    total = found = 0
    for g_spans, p_spans in zip(gold, pred, strict=True):
        g, p = set(g_spans), set(p_spans)
        for a in g:
            inner = any(b[:2] != a[:2] and b[0] <= a[0] and a[1] <= b[1] for b in g)
            if inner:
                total += 1
                found += a in p
    return {"nested_gold": total, "nested_found": found, "nested_recall": found / total if total else 0.0}

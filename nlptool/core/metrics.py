"""Metrics shared by the commands (checked against scikit-learn / scipy in the tests)."""

from __future__ import annotations

from collections.abc import Sequence

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

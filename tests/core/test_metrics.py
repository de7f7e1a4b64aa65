import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score
from sklearn.metrics import confusion_matrix as sk_confusion

from nlptool.core.errors import NlptoolError
from nlptool.core.metrics import accuracy, best_threshold_accuracy, confusion_matrix, macro_f1, pearson, spearman


@pytest.mark.parametrize("seed", range(5))
def test_against_sklearn(seed):
    rng = np.random.default_rng(seed)
    n_classes = 5
    y = rng.integers(0, n_classes, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, n_classes, 200))
    assert accuracy(y, p) == pytest.approx(accuracy_score(y, p), abs=1e-15)
    assert (confusion_matrix(y, p, n_classes) == sk_confusion(y, p, labels=range(n_classes))).all()
    expected = f1_score(y, p, average="macro", labels=range(n_classes), zero_division=0)
    assert macro_f1(y, p, n_classes) == pytest.approx(expected, abs=1e-12)


def test_hand_case():
    y, p = [0, 0, 1, 1], [0, 1, 1, 1]
    assert accuracy(y, p) == 0.75
    # class 0: TP 1 FP 0 FN 1 -> F1 2/3 ; class 1: TP 2 FP 1 FN 0 -> F1 4/5
    assert macro_f1(y, p, 2) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_shape_mismatch():
    with pytest.raises(NlptoolError):
        accuracy([0, 1], [0])


# --- spearman / pearson / best_threshold_accuracy --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_correlations_against_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    x = rng.integers(0, 6, n).astype(float)  # many ties
    y = np.round(x + rng.normal(0, 1.5, n), 1)  # ties too
    if seed % 2:
        x = rng.normal(size=n) * 1e3 + 5e3  # continuous, offset and scaled
    for a, b in ((x, y), (y, x), (x, x)):
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            continue
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
        assert pearson(a, b) == pytest.approx(stats.pearsonr(a, b).statistic, abs=1e-12)
    assert spearman(list(x), list(y)) == spearman(x, y)


def test_average_ranks_match_scipy():
    from nlptool.core.metrics import _average_ranks

    rng = np.random.default_rng(0)
    a = rng.integers(0, 7, 50).astype(float)
    assert np.array_equal(_average_ranks(a), stats.rankdata(a, method="average"))


def test_correlation_edge_cases():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert np.isnan(pearson([0.1, 0.1, 0.1], [1, 2, 3]))
    assert np.isnan(spearman([1, 2, 3], [5, 5, 5]))
    with pytest.raises(NlptoolError):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(NlptoolError):
        pearson([1], [1])
    with pytest.raises(NlptoolError):
        pearson([1, float("nan")], [1, 2])


def brute_force_threshold(scores, labels):
    d = np.unique(scores)
    candidates = [d[0] - 1.0, d[-1] + 1.0] + [(a + b) / 2 for a, b in zip(d[:-1], d[1:], strict=True)]
    return max(np.mean((scores >= t).astype(int) == labels) for t in candidates)


@pytest.mark.parametrize("seed", range(8))
def test_best_threshold_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    labels = rng.integers(0, 2, n)
    scores = np.round(labels * 0.3 + rng.normal(0, 0.3, n), 1)  # rounded: ties, some across labels
    acc, t = best_threshold_accuracy(scores, labels)
    assert acc == pytest.approx(brute_force_threshold(scores, labels), abs=1e-15)
    assert np.mean((scores >= t).astype(int) == labels) == acc  # the threshold reproduces the accuracy


def test_best_threshold_hand_cases():
    # sorted: 0.1 (0), 0.35 (1), 0.4 (0), 0.8 (1); t = 0.225 and t = 0.6 both give 3/4, the smaller is returned
    assert best_threshold_accuracy([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == (0.75, pytest.approx(0.225))
    assert best_threshold_accuracy([0.2, 0.9], [0, 1]) == (1.0, pytest.approx(0.55))
    assert best_threshold_accuracy([0.5, 0.7], [1, 1]) == (1.0, 0.5)  # all 1: t = min score
    acc, t = best_threshold_accuracy([0.5, 0.7], [False, False])  # all 0: t just above max score
    assert acc == 1.0 and 0.7 < t < 0.7 + 1e-12
    lo = 1.0
    hi = np.nextafter(lo, 2.0)  # midpoint of adjacent floats rounds onto one of them
    assert best_threshold_accuracy([lo, hi], [0, 1]) == (1.0, hi)
    with pytest.raises(NlptoolError):
        best_threshold_accuracy([0.1, 0.2], [0, 2])
    with pytest.raises(NlptoolError):
        best_threshold_accuracy([0.1, 0.2], [0])
    with pytest.raises(NlptoolError):
        best_threshold_accuracy([], [])

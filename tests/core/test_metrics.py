import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score
from sklearn.metrics import confusion_matrix as sk_confusion

from nlptool.core.errors import NlptoolError
from nlptool.core.metrics import accuracy, confusion_matrix, macro_f1


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

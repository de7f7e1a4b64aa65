"""core.can.evaluate: the numbers calibrate-can reports, on a hand-made case."""

import numpy as np

from nlptool.core.can import calibrate, evaluate


def test_hand_made_case():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.55, 0.45], [0.45, 0.55]])
    adjusted = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.45, 0.55]])
    mask = np.array([False, False, True, True])
    assert evaluate(probs, adjusted, mask) == {
        "rows": 4,
        "uncertain_rows": 2,
        "confident_rows": 2,
        "changed_predictions": 1,
    }
    # predictions before [0, 1, 0, 1], after [0, 1, 1, 1]; gold [0, 0, 1, 0]: right before row 0, after rows 0 and 2
    got = evaluate(probs, adjusted, mask, gold=[0, 0, 1, 0])
    assert got["accuracy_before"] == 0.25
    assert got["accuracy_after"] == 0.5
    assert got["accuracy_confident"] == 0.5
    assert (got["accuracy_uncertain_before"], got["accuracy_uncertain_after"]) == (0.0, 0.5)


def test_empty_groups_are_none():
    probs = np.array([[0.99, 0.01], [0.01, 0.99]])
    adjusted, mask, _ = calibrate(probs, return_mask=True)
    got = evaluate(probs, adjusted, mask, gold=np.array([0, 1]))
    assert not mask.any() and got["accuracy_uncertain_before"] is None and got["accuracy_after"] == 1.0

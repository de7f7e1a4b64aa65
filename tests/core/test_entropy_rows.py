"""core.entropy.normalize_rows: rows of different lengths, each solved as core.entropy.normalize solves it."""

import numpy as np
import pytest

from nlptool.core.entropy import entropy, normalize, normalize_rows
from nlptool.core.errors import RowError


def test_ragged_rows_match_normalize():
    rows = [[0.7, 0.2, 0.1], [0.6, 0.4], [0.5, 0.3, 0.2], [0.9, 0.1]]
    probs, gamma = normalize_rows(rows, target_ratio=0.5)
    assert [len(p) for p in probs] == [3, 2, 3, 2] and gamma.shape == (4,)
    for row, p, g in zip(rows, probs, gamma, strict=True):
        expect_p, expect_g = normalize(np.asarray(row), target_ratio=0.5)
        assert np.allclose(p, expect_p) and g == pytest.approx(expect_g)
        assert entropy(p) == pytest.approx(0.5 * np.log(len(row)), abs=1e-8)


def test_row_error_names_the_input_row():
    with pytest.raises(RowError) as info:
        normalize_rows([[0.7, 0.2, 0.1], [0.6, 0.4], [0.5, 0.6]], 0.3)
    assert info.value.row == 2 and "sum" in info.value.message

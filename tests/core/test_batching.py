"""``nlptool.core.batching``: inference batches by length, count and padded tokens (hand-computed cases)."""

from __future__ import annotations

import pytest

from nlptool.core.batching import length_batches
from nlptool.core.errors import NlptoolError


def test_length_batches():
    lengths = [5, 9, 3, 9, 2]
    # longest first (ties in input order), at most 3 per batch and 20 padded tokens (items x first length)
    assert length_batches(lengths, 3, 20) == [[1, 3], [0, 2, 4]]
    assert length_batches(lengths, 3) == [[1, 3, 0], [2, 4]]  # no token cap
    assert length_batches(lengths, 3, 0) == [[1, 3, 0], [2, 4]]
    assert length_batches(lengths, 2, 100) == [[1, 3], [0, 2], [4]]
    assert length_batches(lengths, 10, 8) == [[1], [3], [0], [2, 4]]  # an item over the cap is a batch of one
    assert length_batches([], 4, 10) == []
    with pytest.raises(NlptoolError, match="batch size"):
        length_batches(lengths, 0)

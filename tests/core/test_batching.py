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


def test_pad_ids():
    from nlptool.core.batching import pad_ids

    ids, mask = pad_ids([[5, 6, 7], [8], []], 0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert str(ids.dtype) == "torch.int64" and str(mask.dtype) == "torch.int64"
    ids, mask = pad_ids([[1, 2]], 9, width=4)
    assert ids.tolist() == [[1, 2, 9, 9]] and mask.tolist() == [[1, 1, 0, 0]]
    assert pad_ids([], 0)[0].shape == (0, 0)
    with pytest.raises(NlptoolError, match="does not fit"):
        pad_ids([[1, 2, 3]], 0, width=2)

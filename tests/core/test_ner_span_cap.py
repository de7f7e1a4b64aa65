"""The span-length cap of NER decoding (``max_span_tokens``): hand-made score tensors through
:func:`nlptool.core.globalpointer.decode_spans`, and the training windows' longest entity."""

from __future__ import annotations

import pytest
import torch

from nlptool.core.globalpointer import MASK_VALUE, GlobalPointerError, decode_spans
from nlptool.core.ner import Window, longest_entity_tokens


def _scores() -> torch.Tensor:
    """(B=2, H=2, L=5, L=5): every upper-triangle span scores 1 + its width / 10; the lower triangle is masked."""
    logits = torch.full((2, 2, 5, 5), MASK_VALUE)
    for i in range(5):
        for j in range(i, 5):
            logits[:, :, i, j] = 1.0 + (j - i + 1) / 10
    logits[1, 1] = -1.0  # one type of the second example predicts nothing
    return logits


def _widths(spans):
    return sorted({j - i + 1 for _, i, j, _ in spans})


def test_decode_ignores_spans_longer_than_the_cap():
    logits = _scores()
    full = decode_spans(logits)
    assert [len(s) for s in full] == [30, 15] and _widths(full[0]) == [1, 2, 3, 4, 5]
    for cap, kept in [(1, 5), (2, 9), (3, 12), (5, 15), (9, 15)]:
        capped = decode_spans(logits, max_span_tokens=cap)
        assert [len(s) for s in capped] == [2 * kept, kept]
        assert max(_widths(capped[0])) == min(cap, 5)
        # the cap only removes spans: the rest are those of the uncapped decoding, in the same order
        assert capped[0] == [s for s in full[0] if s[2] - s[1] + 1 <= cap]
    assert decode_spans(logits, max_span_tokens=0) == decode_spans(logits, max_span_tokens=None) == full
    assert decode_spans(logits, threshold=1.35, max_span_tokens=4) == [
        [(t, i, i + 3, pytest.approx(1.4)) for t in (0, 1) for i in (0, 1)],
        [(0, i, i + 3, pytest.approx(1.4)) for i in (0, 1)],
    ]
    with pytest.raises(GlobalPointerError, match="max_span_tokens"):
        decode_spans(logits, max_span_tokens=-1)


def test_longest_entity_tokens_of_training_windows():
    wins = [
        Window(0, [2, 5, 6, 7, 3], [None, (0, 1), (2, 3), (4, 5), None], spans=[(0, 1, 1), (1, 1, 3)]),
        Window(1, [2, 5, 3], [None, (0, 1), None], spans=[(0, 1, 1)]),
    ]
    assert longest_entity_tokens(wins) == 3
    assert longest_entity_tokens([Window(0, [2, 3], [None, None])]) is None

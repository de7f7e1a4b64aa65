"""Batches for inference: items sorted by length, cut by count and by padded tokens.

Padding is wasted work: a batch runs at the length of its longest item. Sorting by the length that the model sees
(tokens, not characters: on STS-B sentences sorting by characters left 20,161 padding tokens per 47,757 real ones in
batches of 64, sorting by tokens 1,925) and capping the padded size of a batch keeps it small. :func:`pad_ids` is
the one padding helper of the models that batch token ids themselves (NER windows, NSP pairs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nlptool.core.errors import NlptoolError

__all__ = ["length_batches", "pad_ids"]


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


def pad_ids(seqs: Sequence[Sequence[int]], pad_id: int, *, width: int | None = None) -> tuple[Any, Any]:
    """Right-pad id lists to the longest (or ``width``) → ``(ids, attention_mask)``, two ``(B, L)`` long tensors.

    ``ids`` holds each sequence followed by ``pad_id``; ``attention_mask`` is 1 on the sequence, 0 on the padding.
    Also pads other per-token ids (token type ids: ``pad_ids(types, 0)[0]``). A sequence longer than ``width`` is an
    error.

    Example: ``pad_ids([[5, 6, 7], [8]], 0)`` → ids ``[[5, 6, 7], [8, 0, 0]]``, mask ``[[1, 1, 1], [1, 0, 0]]``.
    """
    import itertools

    import numpy as np
    import torch

    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    longest = int(lengths.max()) if len(lengths) else 0
    if width is None:
        width = longest
    elif longest > width:
        raise NlptoolError(f"a sequence of {longest} ids does not fit the width {width}")
    mask = np.arange(width)[None, :] < lengths[:, None]  # row-major order of the True cells = the ids in order
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    ids[mask] = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
    return torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))

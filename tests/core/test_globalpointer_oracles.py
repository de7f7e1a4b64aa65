"""Whole-tensor oracles for nlptool.core.globalpointer: RoPE as a rotation matrix, every GP/EGP score from a slow
per-pair loop (with padding), the loss on a real head's output from the formula, and nested decoding."""

from __future__ import annotations

import math

import pytest
import torch

from nlptool.core.globalpointer import (
    MASK_VALUE,
    EfficientGlobalPointer,
    GlobalPointer,
    decode_spans,
    global_pointer_loss,
    rope,
)


def _rotation_matrix(pos: int, d: int, base: float = 10000.0) -> torch.Tensor:
    """Block-diagonal matrix of 2x2 rotations by pos * base^(-2i/d), built entry by entry."""
    r = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d // 2):
        theta = pos * base ** (-2 * i / d)
        c, s = math.cos(theta), math.sin(theta)
        r[2 * i, 2 * i], r[2 * i, 2 * i + 1] = c, -s
        r[2 * i + 1, 2 * i], r[2 * i + 1, 2 * i + 1] = s, c
    return r


def test_rope_equals_rotation_matrix_at_every_position():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 10, generator=g, dtype=torch.float64)
    y = rope(x)
    for p in range(7):
        expected = x[:, p] @ _rotation_matrix(p, 10).T
        assert torch.allclose(y[:, p], expected, atol=1e-12)
    # R_m^T R_n = R_{n-m}
    r3, r8, r5 = _rotation_matrix(3, 10), _rotation_matrix(8, 10), _rotation_matrix(5, 10)
    assert torch.allclose(r3.T @ r8, r5, atol=1e-12)


def _slow_gp(head: GlobalPointer, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    b, length, _ = hidden.shape
    h, d = head.num_types, head.head_size
    w, c = head.dense.weight, head.dense.bias
    out = torch.full((b, h, length, length), MASK_VALUE, dtype=torch.float64)
    for n in range(b):
        for a in range(h):
            for i in range(length):
                for j in range(length):
                    if j < i or not mask[n, i] or not mask[n, j]:
                        continue
                    proj_i = (w @ hidden[n, i] + c)[a * 2 * d : (a + 1) * 2 * d]
                    proj_j = (w @ hidden[n, j] + c)[a * 2 * d : (a + 1) * 2 * d]
                    q = _rotation_matrix(i, d) @ proj_i[:d]
                    k = _rotation_matrix(j, d) @ proj_j[d:]
                    out[n, a, i, j] = q @ k / math.sqrt(d)
    return out


def _slow_egp(head: EfficientGlobalPointer, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    b, length, _ = hidden.shape
    h, d = head.num_types, head.head_size
    w1, c1 = head.dense.weight, head.dense.bias
    w2, c2 = head.type_dense.weight, head.type_dense.bias
    out = torch.full((b, h, length, length), MASK_VALUE, dtype=torch.float64)
    for n in range(b):
        for a in range(h):
            for i in range(length):
                for j in range(length):
                    if j < i or not mask[n, i] or not mask[n, j]:
                        continue
                    qk_i, qk_j = w1 @ hidden[n, i] + c1, w1 @ hidden[n, j] + c1
                    q = _rotation_matrix(i, d) @ qk_i[:d]
                    k = _rotation_matrix(j, d) @ qk_j[d:]
                    start_term = ((w2 @ qk_i + c2) / 2)[2 * a + 1]
                    end_term = ((w2 @ qk_j + c2) / 2)[2 * a]
                    out[n, a, i, j] = q @ k / math.sqrt(d) + start_term + end_term
    return out


@pytest.mark.parametrize("cls, slow", [(GlobalPointer, _slow_gp), (EfficientGlobalPointer, _slow_egp)])
def test_score_tensor_against_per_pair_loop(cls, slow):
    torch.manual_seed(5)
    head = cls(hidden_size=6, num_types=3, head_size=4).double()
    hidden = torch.randn(2, 5, 6, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        got = head(hidden, mask)
        expected = slow(head, hidden, mask)
    assert torch.allclose(got, expected, atol=1e-10, rtol=0)
    # masking: nothing below the diagonal, nothing touching padding
    assert (got[:, :, torch.ones(5, 5, dtype=torch.bool).tril(-1)] == MASK_VALUE).all()
    assert (got[1, :, 3:, :] == MASK_VALUE).all() and (got[1, :, :, 3:] == MASK_VALUE).all()


def test_loss_on_head_output_equals_formula():
    torch.manual_seed(6)
    head = EfficientGlobalPointer(hidden_size=6, num_types=2, head_size=4).double()
    hidden = torch.randn(2, 4, 6, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    logits = head(hidden, mask)
    labels = torch.zeros_like(logits)
    labels[0, 0, 1, 2] = labels[0, 1, 0, 3] = labels[1, 1, 2, 2] = 1
    total = 0.0
    for n in range(2):
        for a in range(2):
            s, y = logits[n, a].flatten().tolist(), labels[n, a].flatten().tolist()
            neg = sum(math.exp(v) for v, t in zip(s, y, strict=True) if t == 0 and v > MASK_VALUE / 2)
            pos = sum(math.exp(-v) for v, t in zip(s, y, strict=True) if t == 1)
            total += math.log1p(neg) + math.log1p(pos)
    assert global_pointer_loss(logits, labels).item() == pytest.approx(total / 4, abs=1e-10)


def test_decode_nested_spans():
    # "New York University": ORG over tokens 0..2, LOC over 0..1, and a second LOC inside at 1..1
    logits = torch.full((1, 2, 4, 4), -5.0)
    logits[0, 0, 0, 2] = 3.0  # ORG
    logits[0, 1, 0, 1] = 2.0  # LOC, nested in ORG
    logits[0, 1, 1, 1] = 0.5  # LOC, nested in both
    logits[0, 0, 0, 1] = -0.1  # below the threshold
    assert decode_spans(logits) == [[(0, 0, 2, 3.0), (1, 0, 1, 2.0), (1, 1, 1, 0.5)]]


def test_decode_batch_keeps_examples_apart():
    logits = torch.full((3, 2, 3, 3), -1.0)
    logits[0, 1, 0, 2] = 1.5
    logits[2, 0, 1, 1] = 0.75
    logits[2, 1, 0, 0] = 2.5
    assert decode_spans(logits) == [[(1, 0, 2, 1.5)], [], [(1, 0, 0, 2.5), (0, 1, 1, 0.75)]]
    assert decode_spans(logits, threshold=1.0) == [[(1, 0, 2, 1.5)], [], [(1, 0, 0, 2.5)]]


@pytest.mark.parametrize("cls", [GlobalPointer, EfficientGlobalPointer])
def test_training_step_after_scoring_under_inference_mode(cls):
    """RoPE tables and masks are cached per length: a table first built under ``torch.inference_mode`` (a dev
    evaluation during training) must still be usable in a later backward pass."""
    torch.manual_seed(1)
    head = cls(hidden_size=8, num_types=2, head_size=4)
    hidden = torch.randn(2, 7, 8)  # a length no other test uses, so the cache is cold here
    mask = torch.ones(2, 7, dtype=torch.long)
    with torch.inference_mode():
        expected = head(hidden, mask)
    logits = head(hidden, mask)
    assert torch.equal(logits.detach(), expected)
    global_pointer_loss(logits, torch.zeros_like(logits)).backward()
    assert head.dense.weight.grad is not None and torch.isfinite(head.dense.weight.grad).all()


@pytest.mark.parametrize("cls", [GlobalPointer, EfficientGlobalPointer])
def test_512_tokens_and_10_types_fit_on_cpu(cls):
    """The memory bound of the docs: one 512-token window, 10 types, scores + labels + backward on CPU."""
    torch.manual_seed(0)
    head = cls(hidden_size=32, num_types=10, head_size=64)
    hidden = torch.randn(1, 512, 32, requires_grad=True)
    logits = head(hidden, torch.ones(1, 512, dtype=torch.long))
    assert logits.shape == (1, 10, 512, 512)  # 2.6 M scores, 10.5 MB in float32
    labels = torch.zeros(logits.shape, dtype=torch.uint8)
    labels[0, 3, 10, 12] = 1
    loss = global_pointer_loss(logits, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(hidden.grad).all()

"""Tests for nlptool.core.globalpointer (GlobalPointer, Efficient GlobalPointer, MCCE, RoPE)."""

from __future__ import annotations

import math

import pytest
import torch

from nlptool.core.errors import NlptoolError
from nlptool.core.globalpointer import (
    EfficientGlobalPointer,
    GlobalPointer,
    decode_spans,
    global_pointer_loss,
    multilabel_categorical_crossentropy,
    rope,
    span_mask,
)


def _mcce_loop(y_true, y_pred):
    """The formula written out term by term, one row at a time."""
    out = []
    for yt, yp in zip(y_true.tolist(), y_pred.tolist(), strict=True):
        neg = sum(math.exp(s) for y, s in zip(yt, yp, strict=True) if y == 0)
        pos = sum(math.exp(-s) for y, s in zip(yt, yp, strict=True) if y == 1)
        out.append(math.log1p(neg) + math.log1p(pos))
    return torch.tensor(out, dtype=torch.float64)


# --- multilabel categorical cross-entropy -------------------------------------------------------------------------


def test_mcce_hand_computed():
    s = torch.tensor([[2.0, -1.0, 0.5]], dtype=torch.float64)
    y = torch.tensor([[1, 0, 0]], dtype=torch.float64)
    expected = math.log(1 + math.exp(-1) + math.exp(0.5)) + math.log(1 + math.exp(-2))
    got = multilabel_categorical_crossentropy(y, s)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, abs=1e-12)


def test_mcce_matches_loop():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 7, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(6, 7, generator=g) < 0.4).double()
    y[0] = 0  # all negative
    y[1] = 1  # all positive
    got = multilabel_categorical_crossentropy(y, s)
    assert torch.allclose(got, _mcce_loop(y, s), atol=1e-10, rtol=0)
    # all-negative row: only the negative term; all-positive row: only the positive term
    assert got[0].item() == pytest.approx(math.log1p(torch.exp(s[0]).sum().item()), abs=1e-10)
    assert got[1].item() == pytest.approx(math.log1p(torch.exp(-s[1]).sum().item()), abs=1e-10)


def test_mcce_gradient_matches_the_dense_formula():
    """The positive term is computed sparsely; its value and gradient must equal the dense textbook form."""
    g = torch.Generator().manual_seed(3)
    s = (torch.randn(3, 4, 9, generator=g, dtype=torch.float64) * 4).requires_grad_(True)
    y = (torch.rand(3, 4, 9, generator=g) < 0.3).double()
    y[0, 0] = 0  # no positive at all
    y[1, 1] = 1  # every candidate positive
    got = multilabel_categorical_crossentropy(y, s)
    (grad_got,) = torch.autograd.grad(got.sum(), s)
    dense = torch.log1p((torch.exp(s) * (1 - y)).sum(-1)) + torch.log1p((torch.exp(-s) * y).sum(-1))
    (grad_dense,) = torch.autograd.grad(dense.sum(), s)
    assert torch.allclose(got, dense, atol=1e-10, rtol=0)
    assert torch.allclose(grad_got, grad_dense, atol=1e-10, rtol=0)


def test_global_pointer_loss_ignores_the_lower_triangle():
    logits = torch.full((1, 1, 3, 3), -1e12, dtype=torch.float64)
    iu = torch.triu_indices(3, 3)
    logits[0, 0, iu[0], iu[1]] = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 0.0], dtype=torch.float64)
    labels = torch.zeros_like(logits)
    labels[0, 0, 0, 2] = 1  # score 0.5
    expected = math.log1p(math.exp(1.0) + math.exp(-2.0) + math.exp(3.0) + math.exp(-1.0) + 1.0) + math.log1p(
        math.exp(-0.5)
    )
    assert global_pointer_loss(logits, labels).item() == pytest.approx(expected, abs=1e-10)


def test_mcce_batch_shape():
    s = torch.randn(2, 3, 5)
    y = torch.zeros(2, 3, 5)
    assert multilabel_categorical_crossentropy(y, s).shape == (2, 3)


@pytest.mark.parametrize("masked", [-1e12, float("-inf")])
def test_mcce_masked_entries_stable(masked):
    s = torch.tensor([[3.0, masked, -2.0, masked], [masked, masked, masked, 1.0]], dtype=torch.float64)
    s.requires_grad_(True)
    y = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    loss = multilabel_categorical_crossentropy(y, s)
    assert torch.isfinite(loss).all()
    expected = _mcce_loop(y, s.detach().clamp_min(-1e12))
    assert torch.allclose(loss.detach(), expected, atol=1e-10, rtol=0)
    loss.sum().backward()
    assert torch.isfinite(s.grad).all()
    assert s.grad[0, 1].item() == 0.0


def test_mcce_large_scores_no_overflow():
    s = torch.tensor([[1000.0, -1000.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    assert multilabel_categorical_crossentropy(y, s).item() == pytest.approx(2000.0, rel=1e-12)


def test_mcce_shape_mismatch():
    with pytest.raises(NlptoolError):
        multilabel_categorical_crossentropy(torch.zeros(2, 3), torch.zeros(2, 4))


def test_global_pointer_loss_mean_over_example_and_type():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    lower = torch.ones(4, 4, dtype=torch.bool).tril(-1)
    logits = logits.masked_fill(lower, -1e12)  # as the heads give them
    labels = (torch.rand(2, 3, 4, 4, generator=g) < 0.2).double().masked_fill(lower, 0.0)
    expected = _mcce_loop(labels.reshape(6, 16), logits.reshape(6, 16)).mean()
    got = global_pointer_loss(logits, labels)
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected.item(), abs=1e-10)


# --- RoPE --------------------------------------------------------------------------------------------------------


def test_rope_preserves_norm():
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    y = rope(x)
    assert y.shape == x.shape
    assert torch.allclose(x.norm(dim=-1), y.norm(dim=-1), atol=1e-12)
    assert torch.allclose(y[:, 0], x[:, 0])  # position 0 is not rotated


def test_rope_pair_rotation_by_hand():
    x = torch.tensor([[[1.0, 0.0, 0.0, 1.0]]], dtype=torch.float64)
    pos = torch.tensor([3.0], dtype=torch.float64)
    y = rope(x, positions=pos, base=100.0)
    t0, t1 = 3.0, 3.0 * 100.0 ** (-2 / 4)
    expected = torch.tensor([math.cos(t0), math.sin(t0), -math.sin(t1), math.cos(t1)], dtype=torch.float64)
    assert torch.allclose(y[0, 0], expected, atol=1e-12)


def test_rope_relative():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 1, 16, generator=g, dtype=torch.float64)
    k = torch.randn(1, 1, 16, generator=g, dtype=torch.float64)

    def score(i, j):
        qi = rope(q, positions=torch.tensor([float(i)]))
        kj = rope(k, positions=torch.tensor([float(j)]))
        return (qi * kj).sum().item()

    assert score(2, 7) == pytest.approx(score(10, 15), abs=1e-10)
    assert score(0, 3) == pytest.approx(score(40, 43), abs=1e-10)
    assert score(2, 7) != pytest.approx(score(2, 8), abs=1e-6)


def test_rope_odd_dim_errors():
    with pytest.raises((ValueError, NlptoolError)):
        rope(torch.randn(1, 3, 5))
    with pytest.raises(NlptoolError):
        GlobalPointer(8, 2, head_size=5)


# --- span mask and heads -----------------------------------------------------------------------------------------


def test_span_mask():
    am = torch.tensor([[1, 1, 1], [1, 1, 0]])
    m = span_mask(am)
    assert m.shape == (2, 1, 3, 3) and m.dtype == torch.bool
    assert m[0, 0].tolist() == [[True, True, True], [False, True, True], [False, False, True]]
    assert m[1, 0].tolist() == [[True, True, False], [False, True, False], [False, False, False]]


@pytest.mark.parametrize("cls", [GlobalPointer, EfficientGlobalPointer])
def test_heads_shape_and_masking(cls):
    torch.manual_seed(0)
    head = cls(hidden_size=12, num_types=3, head_size=8)
    hidden = torch.randn(2, 5, 12)
    am = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    logits = head(hidden, am)
    assert logits.shape == (2, 3, 5, 5)
    lower = torch.ones(5, 5, dtype=torch.bool).tril(-1)
    assert (logits[:, :, lower] <= -1e11).all()
    assert (logits[1, :, 3:, :] <= -1e11).all()
    assert (logits[1, :, :, 3:] <= -1e11).all()
    valid = span_mask(am).expand_as(logits)
    assert (logits[valid].abs() < 1e6).all()
    # gradient flows through the loss
    labels = torch.zeros_like(logits)
    labels[0, 1, 1, 3] = 1
    global_pointer_loss(logits, labels).backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_global_pointer_score_by_hand():
    torch.manual_seed(3)
    d, h, dim = 4, 2, 6
    head = GlobalPointer(hidden_size=dim, num_types=h, head_size=d).double()
    hidden = torch.randn(1, 4, dim, dtype=torch.float64)
    logits = head(hidden, torch.ones(1, 4))
    i, j, a = 1, 3, 1
    w, b = head.dense.weight, head.dense.bias
    proj_i = (w @ hidden[0, i] + b).view(h, 2 * d)[a]
    proj_j = (w @ hidden[0, j] + b).view(h, 2 * d)[a]
    qi = rope(proj_i[:d].view(1, 1, d), positions=torch.tensor([float(i)]))
    kj = rope(proj_j[d:].view(1, 1, d), positions=torch.tensor([float(j)]))
    expected = (qi * kj).sum() / math.sqrt(d)
    assert logits[0, a, i, j].item() == pytest.approx(expected.item(), abs=1e-10)


def test_efficient_global_pointer_score_by_hand():
    torch.manual_seed(4)
    d, h, dim = 6, 3, 5
    head = EfficientGlobalPointer(hidden_size=dim, num_types=h, head_size=d).double()
    hidden = torch.randn(1, 5, dim, dtype=torch.float64)
    logits = head(hidden, torch.ones(1, 5))
    i, j, a = 1, 4, 2
    w1, c1 = head.dense.weight, head.dense.bias
    w2, c2 = head.type_dense.weight, head.type_dense.bias
    qk_i = w1 @ hidden[0, i] + c1
    qk_j = w1 @ hidden[0, j] + c1
    qi = rope(qk_i[:d].view(1, 1, d), positions=torch.tensor([float(i)]))
    kj = rope(qk_j[d:].view(1, 1, d), positions=torch.tensor([float(j)]))
    b_i = (w2 @ qk_i + c2) / 2
    b_j = (w2 @ qk_j + c2) / 2
    expected = (qi * kj).sum() / math.sqrt(d) + b_i[2 * a + 1] + b_j[2 * a]
    assert logits[0, a, i, j].item() == pytest.approx(expected.item(), abs=1e-10)


def test_efficient_global_pointer_param_count():
    d, h, dim = 8, 5, 16
    head = EfficientGlobalPointer(hidden_size=dim, num_types=h, head_size=d)
    type_params = sum(p.numel() for p in head.type_dense.parameters())
    assert type_params == 2 * d * 2 * h + 2 * h
    assert type_params == h * (4 * d + 2)
    assert sum(p.numel() for p in head.dense.parameters()) == dim * 2 * d + 2 * d
    gp = GlobalPointer(hidden_size=dim, num_types=h, head_size=d)
    assert sum(p.numel() for p in gp.parameters()) == h * 2 * d * (dim + 1)


def test_no_rope_option():
    head = GlobalPointer(hidden_size=4, num_types=1, head_size=3, use_rope=False)
    assert head(torch.randn(1, 2, 4)).shape == (1, 1, 2, 2)


# --- decoding ----------------------------------------------------------------------------------------------------


def test_decode_spans():
    logits = torch.full((2, 2, 3, 3), -1e12)
    logits[0, 0, 0, 1] = 2.5
    logits[0, 1, 0, 2] = 0.7
    logits[0, 1, 1, 1] = 4.0
    logits[0, 0, 2, 2] = -0.3
    logits[1, 0, 1, 2] = 0.2
    spans = decode_spans(logits)
    assert spans[0] == [(1, 1, 1, 4.0), (0, 0, 1, 2.5), (1, 0, 2, pytest.approx(0.7))]
    assert spans[1] == [(0, 1, 2, pytest.approx(0.2))]
    assert all(isinstance(v, int) for v in spans[0][0][:3]) and isinstance(spans[0][0][3], float)
    assert decode_spans(logits, threshold=1.0) == [[(1, 1, 1, 4.0), (0, 0, 1, 2.5)], []]

import math

import pytest
import torch
import torch.nn.functional as F

from nlptool.core.cosent import SoftmaxHead, cosent_loss, cosine_mse_loss, pairwise_cosine, softmax_loss
from nlptool.core.errors import NlptoolError


def loop_cosent(cos, labels, scale=20.0):
    """The post's formula, literally: log(1 + sum over (i, j) with y_i > y_j of exp(scale * (cos_j - cos_i)))."""
    c, y = cos.tolist(), labels.tolist()
    total = 0.0
    for i in range(len(c)):
        for j in range(len(c)):
            if y[i] > y[j]:
                total += math.exp(scale * (c[j] - c[i]))
    return math.log1p(total)


def _labels(kind, n, g):
    if kind == "graded":  # STS-like 0-5 scores with ties
        return torch.randint(0, 6, (n,), generator=g).double()
    if kind == "binary":
        return torch.randint(0, 2, (n,), generator=g)
    if kind == "ties":
        return torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 0.0])[torch.randperm(8, generator=g)][:n]
    return torch.rand(n, generator=g, dtype=torch.float64) * 5  # continuous, no ties


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["graded", "binary", "ties", "continuous"])
def test_matches_double_loop(seed, kind):
    g = torch.Generator().manual_seed(seed)
    n = 8
    cos = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1
    labels = _labels(kind, n, g)
    for scale in (20.0, 1.0, 5.5):
        got = cosent_loss(cos, labels, scale=scale)
        assert got.dtype == torch.float64
        assert got.item() == pytest.approx(loop_cosent(cos, labels, scale), rel=1e-12, abs=1e-12)


def test_hand_computation():
    ordered = cosent_loss(torch.tensor([0.9, 0.1], dtype=torch.float64), torch.tensor([1, 0]))
    assert ordered.item() == pytest.approx(math.log(1 + math.exp(20 * (0.1 - 0.9))), rel=1e-12)
    swapped = cosent_loss(torch.tensor([0.1, 0.9], dtype=torch.float64), torch.tensor([1, 0]))
    assert swapped.item() == pytest.approx(math.log(1 + math.exp(16)), rel=1e-12)
    assert swapped.item() == pytest.approx(16 + math.exp(-16), abs=1e-12)
    # a tie adds nothing: a third pair with label equal to one of them, placed so that no new y_i > y_j pair is wrong
    three = cosent_loss(torch.tensor([0.9, 0.1, 0.5], dtype=torch.float64), torch.tensor([1, 0, 1]))
    expected = math.log(1 + math.exp(20 * (0.1 - 0.9)) + math.exp(20 * (0.1 - 0.5)))
    assert three.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("labels", [torch.full((5,), 3.0), torch.zeros(5, dtype=torch.long), torch.ones(1)])
def test_all_equal_labels_zero_loss_and_gradient(labels):
    cos = (torch.linspace(-1, 1, len(labels), dtype=torch.float64)).requires_grad_()
    loss = cosent_loss(cos, labels)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(cos.grad).all()
    assert (cos.grad == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [20.0, 1e4])
def test_no_overflow_at_extremes(dtype, scale):
    cos = torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=dtype, requires_grad=True)
    labels = torch.tensor([3.0, 0.0, 2.0, 1.0])  # badly ordered: largest gap 2 in cosine
    loss = cosent_loss(cos, labels, scale=scale)
    assert loss.dtype == dtype
    assert torch.isfinite(loss)
    # the worst pair dominates: loss is scale * 2 plus at most log(1 + #pairs)
    assert 2 * scale <= loss.item() <= 2 * scale * (1 + 1e-6) + math.log(7)
    loss.backward()
    assert torch.isfinite(cos.grad).all()
    # perfectly ordered at huge scale: loss underflows towards 0, still finite
    good = cosent_loss(torch.tensor([1.0, -1.0], dtype=dtype), torch.tensor([1, 0]), scale=scale)
    assert torch.isfinite(good) and 0 <= good.item() < 1e-8


def test_gradcheck():
    g = torch.Generator().manual_seed(0)
    cos = (torch.rand(6, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_()
    labels = torch.tensor([0.0, 1.0, 1.0, 2.5, 4.0, 0.0])
    assert torch.autograd.gradcheck(lambda c: cosent_loss(c, labels, scale=3.0), (cos,))
    assert torch.autograd.gradcheck(lambda c: cosent_loss(c, labels), (cos,))


def test_only_label_order_matters():
    g = torch.Generator().manual_seed(1)
    cos = torch.rand(10, generator=g, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 6, (10,), generator=g).double()
    base = cosent_loss(cos, labels)
    for transformed in (
        torch.exp(labels),
        labels**3 + 7,
        100 * labels - 50,
        torch.unique(labels, return_inverse=True)[1],
    ):
        assert cosent_loss(cos, transformed).item() == pytest.approx(base.item(), rel=1e-14)
    assert cosent_loss(cos, -labels).item() != pytest.approx(base.item())


def test_cosent_input_errors():
    with pytest.raises(NlptoolError):
        cosent_loss(torch.zeros(3), torch.zeros(4))
    with pytest.raises(NlptoolError):
        cosent_loss(torch.zeros(3), torch.tensor([0.0, float("nan"), 1.0]))
    with pytest.raises(NlptoolError):
        cosent_loss(torch.zeros(3), torch.zeros(3), scale=0.0)


def test_softmax_loss_matches_hand_concatenation():
    torch.manual_seed(0)
    n, d, k = 5, 4, 3
    u, v = torch.randn(n, d, dtype=torch.float64), torch.randn(n, d, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 1, 0])
    head = SoftmaxHead(d, k).double()
    assert head.classifier.in_features == 3 * d and head.classifier.out_features == k
    features = torch.cat([u, v, (u - v).abs()], dim=1)
    expected = F.cross_entropy(features @ head.classifier.weight.T + head.classifier.bias, labels)
    got = softmax_loss(u, v, labels, head.classifier)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    assert torch.allclose(head(u, v), head.classifier(features), rtol=0, atol=1e-14)
    got.backward()
    assert head.classifier.weight.grad is not None


def test_cosine_mse_loss():
    cos = torch.tensor([0.5, -0.5, 1.0])
    targets = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    loss = cosine_mse_loss(cos, targets)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx((0.25 + 0.25 + 0.0) / 3)
    with pytest.raises(NlptoolError):
        cosine_mse_loss(cos, targets[:2])


def test_pairwise_cosine():
    torch.manual_seed(0)
    u, v = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    assert torch.allclose(pairwise_cosine(u, v), F.cosine_similarity(u, v, dim=-1), rtol=0, atol=1e-12)
    u[2] = 0
    v[4] = 0
    u.requires_grad_()
    v.requires_grad_()
    c = pairwise_cosine(u, v)
    assert c[2].item() == 0.0 and c[4].item() == 0.0
    c.sum().backward()
    assert torch.isfinite(u.grad).all() and torch.isfinite(v.grad).all()
    both_zero = pairwise_cosine(torch.zeros(1, 3, requires_grad=True), torch.zeros(1, 3))
    assert both_zero.item() == 0.0
    with pytest.raises(NlptoolError):
        pairwise_cosine(torch.zeros(2, 3), torch.zeros(2, 4))

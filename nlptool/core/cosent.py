r"""CoSENT: a sentence-embedding loss that ranks all pairs of a batch by their cosine.

For a batch of sentence pairs with cosines :math:`\cos_i` (of the two sentences' embeddings) and gold labels
:math:`y_i` (an STS score, a 0/1 paraphrase label, any ordered value), CoSENT asks that every pair with a higher
label gets a higher cosine than every pair with a lower label:

.. math::

    L = \log\Bigl(1 + \sum_{(i, j):\, y_i > y_j} e^{\lambda (\cos_j - \cos_i)}\Bigr), \qquad \lambda = 20.

Only the *ordering* of the labels enters (through the set of pairs with :math:`y_i > y_j`), so the loss is the same
for graded 0–5 STS scores, their ranks, or any strictly increasing transform of them. Ties (:math:`y_i = y_j`) give
no term; a batch whose labels are all equal has no term at all and gives exactly :math:`\log 1 = 0`.

Why "ranking all pairs": :math:`\log(1 + \sum_k e^{a_k})` is the log-sum-exp over :math:`\{0\} \cup \{a_k\}`, a
smooth upper bound of :math:`\max(0, \max_k a_k)`, with :math:`\max \le \mathrm{LSE} \le \max + \log(1 + K)`. With
:math:`a_k = \lambda (\cos_j - \cos_i)` it is a smooth hinge on the *worst-ordered* pair: the loss is near 0 when
every higher-labelled pair already has the larger cosine by a margin of a few :math:`1/\lambda`, and grows like
:math:`\lambda` times the largest violation otherwise, so gradient goes mostly to the pairs that are out of order.
This is the unified form of circle loss, :math:`\log(1 + \sum_{p, n} e^{\gamma (s_n - s_p)})` over positive
similarities :math:`s_p` and negative similarities :math:`s_n` (Sun et al. 2020), with "positive" and "negative"
replaced by "higher label" and "lower label" over all pairs of the batch. :math:`\lambda` plays circle loss's
:math:`\gamma`: larger means a harder max (and larger gradients on the violators).

Neighbours in this module, the objectives the post compares CoSENT with:

- :func:`softmax_loss` / :class:`SoftmaxHead`: Sentence-BERT's classification objective, a linear classifier on
  :math:`[u; v; |u - v|]` trained with cross-entropy. It needs class labels and trains a head that is thrown away;
  at inference the cosine is used, which the loss never optimised directly (the train/test mismatch the post names).
- :func:`cosine_mse_loss`: regress the cosine onto the (rescaled) label. It optimises the cosine directly, but asks
  for absolute values, e.g. that unrelated pairs have cosine exactly 0, which the post finds works worse than
  CoSENT's ordering-only constraint.
- :func:`pairwise_cosine` produces the cosines all three consume from two embedding matrices.

The same :math:`\log(1 + \sum e^{s_{neg} - s_{pos}})` construction, over target and non-target logits of one
example, is Su's multilabel categorical cross-entropy (used by GlobalPointer).

References:
    Su Jianlin, "CoSENT(一):比Sentence-BERT更有效的句向量方案" (CoSENT (1): a sentence-vector scheme more
    effective than Sentence-BERT), 2022. https://kexue.fm/archives/8847
    Nils Reimers, Iryna Gurevych, "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks", EMNLP 2019.
    https://arxiv.org/abs/1908.10084
    Yifan Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity Optimization", CVPR 2020.
    https://arxiv.org/abs/2002.10857
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlptool.core.errors import NlptoolError, plain

__all__ = ["cosent_loss", "softmax_loss", "SoftmaxHead", "cosine_mse_loss", "pairwise_cosine"]


def cosent_loss(cos: Tensor, labels: Tensor, scale: float = 20.0) -> Tensor:
    r"""CoSENT loss of one batch: :math:`\log(1 + \sum_{y_i > y_j} e^{\lambda (\cos_j - \cos_i)})`.

    Computed over the full ``n × n`` pair matrix as one log-sum-exp over
    :math:`\{0\} \cup \{\lambda (\cos_j - \cos_i) : y_i > y_j\}` (the 0 is the "1 +"; excluded pairs are set to
    :math:`-\infty`), so it does not overflow for any finite cosines and scale (e.g. ``scale=1e4`` with cosines
    ±1). Pairs with equal labels contribute nothing; if all labels are equal the result is exactly 0 with a zero
    (finite) gradient. Memory is ``O(n²)`` in the batch size.

    Args:
        cos: ``(n,)`` cosine (or any similarity score) of each pair; the result has its dtype and device.
        labels: ``(n,)`` gold labels, float (STS scores) or int (classes, 0/1); only their order matters. Moved to
            ``cos``'s device.
        scale: :math:`\lambda > 0`, the inverse temperature (20 in the post).

    Returns:
        A scalar tensor (differentiable with respect to ``cos``).

    Raises:
        NlptoolError: ``cos`` and ``labels`` are not 1-D of equal length, ``labels`` contain NaN, or ``scale`` is
            not a positive finite number.

    Reference: Su Jianlin, https://kexue.fm/archives/8847. See the module docstring for the relation to circle loss
    and to :func:`softmax_loss` / :func:`cosine_mse_loss`.
    """
    if cos.ndim != 1 or labels.shape != cos.shape:
        raise NlptoolError(
            f"cosent_loss needs 1-D cosines and labels of equal length, got shapes {tuple(cos.shape)} and "
            f"{tuple(labels.shape)}; pass one cosine and one label per sentence pair"
        )
    if not (math.isfinite(scale) and scale > 0):
        raise NlptoolError(f"cosent_loss scale must be a positive finite number, got {plain(scale)!r}")
    labels = labels.to(cos.device)
    if labels.is_floating_point() and bool(torch.isnan(labels).any()):
        raise NlptoolError("cosent_loss labels contain NaN; drop or fill the unlabelled pairs")
    # diff[i, j] = scale * (cos_j - cos_i), kept only where y_i > y_j.
    diff = scale * (cos.unsqueeze(0) - cos.unsqueeze(1))
    keep = labels.unsqueeze(1) > labels.unsqueeze(0)
    neg_inf = torch.tensor(float("-inf"), dtype=diff.dtype, device=diff.device)
    terms = torch.where(keep, diff, neg_inf).reshape(-1)
    return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)


def _pair_features(u: Tensor, v: Tensor) -> Tensor:
    if u.shape != v.shape or u.ndim < 1:
        raise NlptoolError(
            f"the two embedding tensors must have the same shape, got {tuple(u.shape)} and {tuple(v.shape)}"
        )
    return torch.cat([u, v, (u - v).abs()], dim=-1)


class SoftmaxHead(nn.Module):
    r"""Sentence-BERT's classification head: ``logits = W [u; v; |u - v|] + b``.

    Holds ``classifier = nn.Linear(3 * dim, num_labels)``; train it with :func:`softmax_loss` (pass
    ``head.classifier``) or ``F.cross_entropy(head(u, v), labels)``. It is discarded after training: inference
    compares embeddings by cosine.

    Args:
        dim: embedding size ``d`` of ``u`` and ``v``.
        num_labels: number of classes (e.g. 3 for NLI).

    Reference: Reimers & Gurevych, "Sentence-BERT", EMNLP 2019, section 3 (classification objective).
    """

    def __init__(self, dim: int, num_labels: int):
        super().__init__()
        if dim < 1 or num_labels < 1:
            raise NlptoolError(f"SoftmaxHead needs dim >= 1 and num_labels >= 1, got {dim} and {num_labels}")
        self.dim = dim
        self.num_labels = num_labels
        self.classifier = nn.Linear(3 * dim, num_labels)

    def forward(self, u: Tensor, v: Tensor) -> Tensor:
        """``(n, d), (n, d) -> (n, num_labels)`` logits of ``classifier(concat[u, v, |u - v|])``."""
        return self.classifier(_pair_features(u, v))


def softmax_loss(u: Tensor, v: Tensor, labels: Tensor, classifier: nn.Linear) -> Tensor:
    r"""Sentence-BERT's softmax objective: mean cross-entropy of ``classifier([u; v; |u - v|])`` against ``labels``.

    .. math::

        L = -\frac{1}{n} \sum_i \log \operatorname{softmax}\bigl(W [u_i; v_i; |u_i - v_i|] + b\bigr)_{y_i}

    Args:
        u: ``(n, d)`` embeddings of the first sentences.
        v: ``(n, d)`` embeddings of the second sentences.
        labels: ``(n,)`` int64 class ids in ``[0, num_labels)``.
        classifier: a ``nn.Linear(3 * d, num_labels)`` (e.g. :attr:`SoftmaxHead.classifier`).

    Returns:
        A scalar tensor.

    Reference: Reimers & Gurevych, "Sentence-BERT", EMNLP 2019. Unlike :func:`cosent_loss` it needs class labels and
    never sees the cosine used at inference.
    """
    return F.cross_entropy(classifier(_pair_features(u, v)), labels)


def cosine_mse_loss(cos: Tensor, targets: Tensor) -> Tensor:
    r"""Mean squared error :math:`\frac{1}{n} \sum_i (\cos_i - t_i)^2` between cosines and target scores.

    The naive regression baseline of the CoSENT post (Sentence-BERT's regression objective). The caller rescales the
    gold scores to the cosine's range first, e.g. an STS score ``s`` in [0, 5] to ``s / 5`` in [0, 1] or to
    ``s / 2.5 - 1`` in [-1, 1]; this function does no scaling. Unlike :func:`cosent_loss`, it pins absolute cosine
    values rather than their order.

    Args:
        cos: ``(n,)`` predicted cosines.
        targets: ``(n,)`` target scores, already in the cosine's range; cast to ``cos``'s dtype and device.

    Returns:
        A scalar tensor.

    Raises:
        NlptoolError: the shapes differ (no broadcasting).
    """
    if cos.shape != targets.shape:
        raise NlptoolError(
            f"cosine_mse_loss needs cosines and targets of the same shape, got {tuple(cos.shape)} and "
            f"{tuple(targets.shape)}"
        )
    return F.mse_loss(cos, targets.to(dtype=cos.dtype, device=cos.device))


def pairwise_cosine(u: Tensor, v: Tensor, eps: float = 1e-8) -> Tensor:
    r"""Row-wise cosine :math:`u_i \cdot v_i / (\max(\lVert u_i \rVert, \epsilon) \max(\lVert v_i \rVert, \epsilon))`.

    The same formula as ``F.cosine_similarity(u, v, dim=-1, eps=eps)``. A zero row gives cosine 0 and a finite
    gradient (no NaN). Produces the ``cos`` that :func:`cosent_loss` and :func:`cosine_mse_loss` take.

    Args:
        u: ``(n, d)`` tensor (any leading shape works; the cosine is over the last dimension).
        v: tensor of the same shape as ``u``.
        eps: lower bound on each norm.

    Returns:
        ``(n,)`` cosines.

    Raises:
        NlptoolError: the shapes differ.
    """
    if u.shape != v.shape or u.ndim < 1:
        raise NlptoolError(
            f"pairwise_cosine needs two tensors of the same shape, got {tuple(u.shape)} and {tuple(v.shape)}"
        )
    nu = torch.linalg.vector_norm(u, dim=-1).clamp_min(eps)
    nv = torch.linalg.vector_norm(v, dim=-1).clamp_min(eps)
    return (u * v).sum(dim=-1) / (nu * nv)

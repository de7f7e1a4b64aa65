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

The pure tensor functions above have loss *objects* around them, after sentence-transformers' ``losses/``
(:class:`CoSENTLoss`, :class:`SoftmaxLoss`, :class:`CosineMSELoss`): ``forward(u, v, labels)`` takes the two
embedding matrices of a batch of pairs, computes the cosines (or logits) and hands them to the function.

Training (the task layer):

- :class:`PairTask` is the :class:`nlptool.core.tasks.Task` of sentence-pair training: it turns :class:`PairData`
  into examples, collates them into one padded batch of ``2n`` texts (both sides of every pair in one forward pass),
  computes the chosen loss from the shared encoder's embeddings and evaluates Spearman/Pearson on dev pairs.
- :func:`fit` trains a :class:`~nlptool.core.encoder.SentenceEncoder` on pairs through the shared loop
  (:mod:`nlptool.core.train`) and returns a :class:`FitResult` (metrics, best step, model folder); ``nlptool
  train-cosent`` is a thin wrapper over it.
- :func:`evaluate_pairs` is STS evaluation (Spearman/Pearson of cosine vs label), shared with ``nlptool eval-sts``.

Example (from Python)::

    from nlptool.core.cosent import fit
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.pairs import read_pairs
    from nlptool.core.train import TrainConfig

    encoder = SentenceEncoder.load("my-base-model")
    result = fit(encoder, read_pairs("train.csv"), "my-model", dev=read_pairs("dev.csv"),
                 config=TrainConfig(batch_size=16, lr=2e-5, group_by_length=True))
    print(result.metrics["dev_spearman"], result.best_step)

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlptool.core.encoder import SentenceEncoder
from nlptool.core.errors import NlptoolError, plain
from nlptool.core.pairs import PairData
from nlptool.core.tasks import TaskFit, fit_task
from nlptool.core.train import TrainConfig, all_gather_with_grad

__all__ = [
    "cosent_loss",
    "softmax_loss",
    "SoftmaxHead",
    "cosine_mse_loss",
    "pairwise_cosine",
    "CoSENTLoss",
    "SoftmaxLoss",
    "CosineMSELoss",
    "LOSSES",
    "RECOMMENDED_SCALE_RAW_ENCODER",
    "RECOMMENDED_SCALE_SENTENCE_MODEL",
    "default_scale",
    "PairTask",
    "FitResult",
    "fit",
    "evaluate_pairs",
    "constant_value",
    "dev_problem",
    "check_sts_pairs",
    "check_cosines",
]


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


# --------------------------------------------------------------------------------------------------------------------
# Loss objects (after sentence-transformers' losses/): embeddings in, the pure tensor functions above do the math.


class CoSENTLoss(nn.Module):
    r"""CoSENT on a batch of pairs: :func:`cosent_loss` of the cosines :func:`pairwise_cosine` ``(u, v)``.

    Under torchrun every process ranks the cosines of the whole *global* batch: the cosines and labels are gathered
    with :func:`nlptool.core.train.all_gather_with_grad` (an identity in one process), and the loss is returned as is
    (see :mod:`nlptool.core.train` for why no world-size factor is needed).

    Args:
        scale: :math:`\lambda` (Su's 20 for raw encoders; see :func:`default_scale`).

    Reference: Su Jianlin, https://kexue.fm/archives/8847; sentence-transformers' ``CoSENTLoss``.
    """

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        if not (math.isfinite(scale) and scale > 0):
            raise NlptoolError(f"the CoSENT scale must be a positive finite number, got {plain(scale)!r}")
        self.scale = float(scale)

    def forward(self, u: Tensor, v: Tensor, labels: Tensor) -> Tensor:
        """``(n, d), (n, d), (n,) -> ()``: the loss over the (global) batch."""
        cos = pairwise_cosine(u, v)
        return cosent_loss(all_gather_with_grad(cos), all_gather_with_grad(labels), scale=self.scale)


class SoftmaxLoss(nn.Module):
    """Sentence-BERT's classification objective: :func:`softmax_loss` with its own trainable ``classifier``
    (``nn.Linear(3 * dim, num_labels)`` on ``[u; v; |u - v|]``, as :class:`SoftmaxHead`). The classifier is only a
    training device: inference uses the cosine, and :meth:`PairTask.save` does not keep it.

    Args:
        dim: embedding size.
        num_labels: classes (2 for binary labels, 3 for NLI).

    Reference: Reimers & Gurevych, "Sentence-BERT", EMNLP 2019; sentence-transformers' ``SoftmaxLoss``.
    """

    def __init__(self, dim: int, num_labels: int) -> None:
        super().__init__()
        if dim < 1 or num_labels < 1:
            raise NlptoolError(f"SoftmaxLoss needs dim >= 1 and num_labels >= 1, got {dim} and {num_labels}")
        self.classifier = nn.Linear(3 * dim, num_labels)

    def forward(self, u: Tensor, v: Tensor, labels: Tensor) -> Tensor:
        """``(n, d), (n, d), (n,) int64 -> ()``: mean cross-entropy over this process's pairs."""
        return softmax_loss(u, v, labels, self.classifier)


class CosineMSELoss(nn.Module):
    """The regression baseline: :func:`cosine_mse_loss` of the cosines against targets already in the cosine's range
    (:meth:`PairData.unit_targets`: scores rescaled to [0, 1]). Sentence-transformers' ``CosineSimilarityLoss``."""

    def forward(self, u: Tensor, v: Tensor, targets: Tensor) -> Tensor:
        """``(n, d), (n, d), (n,) -> ()``: mean squared error over this process's pairs."""
        return cosine_mse_loss(pairwise_cosine(u, v), targets)


#: The pair losses :class:`PairTask` and ``train-cosent --loss`` offer.
LOSSES = ("cosent", "softmax", "cosine-mse")

# λ defaults. Su's 20 was chosen for raw BERT, whose cosines crowd into a narrow band; on an encoder already trained
# for sentence similarity (all-MiniLM-L6-v2) λ=20 lowered STS-B dev Spearman and λ=5 raised it (BENCHMARKS.md).
RECOMMENDED_SCALE_RAW_ENCODER = 20.0
RECOMMENDED_SCALE_SENTENCE_MODEL = 5.0


def default_scale(encoder: Any) -> float:
    """CoSENT's λ for ``encoder``: 5 when it is already a sentence encoder (``encoder.sentence_model``: it has a
    sentence-transformers pipeline), else Su's 20."""
    if getattr(encoder, "sentence_model", False):
        return RECOMMENDED_SCALE_SENTENCE_MODEL
    return RECOMMENDED_SCALE_RAW_ENCODER


# --------------------------------------------------------------------------------------------------------------------
# Evaluation


def evaluate_pairs(encoder: Any, data: Any, *, batch_size: int, device: str | None, advance: Any = None) -> dict:
    """STS evaluation: the cosine of every pair (each distinct text encoded once, L2-normalised) and its metrics.

    Args:
        encoder: a :class:`~nlptool.core.encoder.SentenceEncoder` (anything with its ``encode``).
        data: :class:`PairData`.
        batch_size: texts per forward pass.
        device: where to encode (the model is moved there); ``None``: where the model is.
        advance: progress callback, called with the number of texts of each batch.

    Returns:
        ``{"metrics": {"pairs", "spearman", "pearson", "label_type"[, "best_threshold_accuracy",
        "best_threshold"]}, "cosine": float64 array}``; the threshold metrics for binary labels (the accuracy at the
        best cosine threshold chosen on this data, hence optimistic).
    """
    from nlptool.core.metrics import best_threshold_accuracy, pearson, spearman

    unique = list(dict.fromkeys([*data.text1, *data.text2]))
    index = {t: i for i, t in enumerate(unique)}
    emb = encoder.encode(unique, batch_size=batch_size, normalize=True, device=device, progress=advance)
    a = emb[[index[t] for t in data.text1]]
    b = emb[[index[t] for t in data.text2]]
    cos = np.sum(a * b, axis=1).astype(np.float64)
    metrics: dict[str, Any] = {
        "pairs": len(data),
        "spearman": spearman(cos, data.labels),
        "pearson": pearson(cos, data.labels),
        "label_type": data.label_type,
    }
    if data.label_type == "binary":
        acc, threshold = best_threshold_accuracy(cos, data.labels)
        metrics["best_threshold_accuracy"] = acc
        metrics["best_threshold"] = threshold
    return {"metrics": metrics, "cosine": cos}


def constant_value(values: Any) -> float | None:
    """The common value when every entry of ``values`` is equal (correlations are then undefined), else None."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size and bool((arr == arr[0]).all()):
        return float(arr[0])
    return None


def check_sts_pairs(data: PairData, name: str) -> None:
    """Raise :class:`NlptoolError` when Spearman and Pearson are undefined on ``data`` (read from ``name``): fewer
    than 2 pairs, or one label for every pair."""
    if len(data) < 2:
        raise NlptoolError(f"{name} has {len(data)} pair; Spearman needs at least 2 pairs with different labels")
    constant = constant_value(data.labels)
    if constant is not None:
        if data.label_type == "nli":
            from nlptool.core.pairs import NLI_NAMES

            label = NLI_NAMES[int(constant)]
        else:
            label = f"{constant:g}"
        raise NlptoolError(
            f"{name}: every label (column {data.columns[2]!r}) is {label}, so Spearman and Pearson are undefined "
            "(no order to compare the cosines with); evaluate on pairs with at least two different labels"
        )


def check_cosines(cosine: Any, model: str, name: str) -> None:
    """Raise :class:`NlptoolError` when ``model`` gives every pair of ``name`` the same cosine (correlations are then
    undefined: a collapsed or untrained encoder, or a wrong pooling)."""
    constant = constant_value(cosine)
    if constant is not None:
        raise NlptoolError(
            f"{name}: model {model} gives every pair the same cosine ({constant:.6g}), so Spearman and "
            "Pearson are undefined; check the model (an untrained or collapsed encoder?) and its --pooling"
        )


def dev_problem(dev: PairData) -> str | None:
    """Why Spearman is undefined on ``dev`` (fewer than 2 pairs, or one label value for all), or ``None``."""
    constant = constant_value(dev.labels) if len(dev) > 1 else None
    if len(dev) >= 2 and constant is None:
        return None
    if constant is not None:
        return f"has one label value for every pair ({constant:g})"
    return f"has {len(dev)} pair"


# --------------------------------------------------------------------------------------------------------------------
# The task and fit


class PairTask:
    """Sentence-pair training on a shared :class:`~nlptool.core.encoder.SentenceEncoder` (a
    :class:`nlptool.core.tasks.Task`).

    Examples are ``(text1, text2, label)`` with the label as the loss needs it (:meth:`examples`); a batch is the
    tokenized ``2n`` texts (first sides, then second sides: one forward pass, fewer and larger matmuls) and the
    labels; the loss embeds them and hands ``(u, v, labels)`` to :attr:`head`, one of :class:`CoSENTLoss`,
    :class:`SoftmaxLoss`, :class:`CosineMSELoss`. Evaluation is :func:`evaluate_pairs`' Spearman (the main metric)
    and Pearson.

    Args:
        encoder: the shared encoder: its ``tokenize`` collates, its ``dim`` sizes the softmax head (it is not a
            submodule of the task).
        label_type: ``binary``, ``score`` or ``nli`` (:attr:`PairData.label_type`); sets the softmax head's classes.
        loss: one of :data:`LOSSES`.
        scale: CoSENT's λ; ``None``: :func:`default_scale` of ``encoder``. Ignored by the other losses.
        eval_batch_size: texts per forward pass in :meth:`evaluate`.
        eval_device: where :meth:`evaluate` encodes; ``None``: where the encoder is.

    Raises:
        NlptoolError: an unknown loss or label type, a scale that is not positive.
    """

    name = "pairs"
    metric = "spearman"
    greater_is_better = True

    def __init__(
        self,
        encoder: Any,
        label_type: str,
        *,
        loss: str = "cosent",
        scale: float | None = None,
        eval_batch_size: int = 64,
        eval_device: str | None = None,
    ) -> None:
        if loss not in LOSSES:
            raise NlptoolError(f"unknown pair loss '{loss}'; choose one of {', '.join(LOSSES)}")
        if label_type not in ("binary", "score", "nli"):
            raise NlptoolError(f"unknown label type '{label_type}'; choose binary, score or nli")
        self.loss_name = loss
        self.label_type = label_type
        self.scale = default_scale(encoder) if scale is None else float(scale)
        self.eval_batch_size = eval_batch_size
        self.eval_device = eval_device
        self._tokenize = encoder.tokenize
        self.head: nn.Module
        if loss == "cosent":
            self.head = CoSENTLoss(self.scale)
        elif loss == "softmax":
            self.head = SoftmaxLoss(encoder.dim, 3 if label_type == "nli" else 2)
        else:
            self.head = CosineMSELoss()

    def examples(self, data: PairData) -> list[tuple[str, str, float]]:
        """``(text1, text2, label)`` per pair: the label as given for CoSENT (only its order counts), the class id for
        softmax (raises for graded scores) and the score rescaled to [0, 1] for cosine-MSE."""
        if self.loss_name == "softmax":
            labels = data.class_ids()
        elif self.loss_name == "cosine-mse":
            labels = data.unit_targets()
        else:
            labels = data.labels
        return list(zip(data.text1, data.text2, labels.tolist(), strict=True))

    @staticmethod
    def lengths(examples: list[tuple[str, str, float]]) -> list[int]:
        """Characters per pair (both texts), for the loop's ``group_by_length``."""
        return [len(a) + len(b) for a, b, _ in examples]

    def collate(self, examples: list[tuple[str, str, float]]) -> tuple[dict[str, Tensor], Tensor]:
        """``(features of the 2n texts, labels (n,))``: int64 labels for softmax, float32 otherwise."""
        features = self._tokenize([e[0] for e in examples] + [e[1] for e in examples])
        dtype = torch.long if self.loss_name == "softmax" else torch.float32
        return features, torch.tensor([e[2] for e in examples], dtype=dtype)

    def loss(self, encoder: nn.Module, batch: tuple[dict[str, Tensor], Tensor]) -> Tensor:
        """Embed both sides of every pair with ``encoder`` (one pass) and apply :attr:`head`."""
        features, labels = batch
        emb = encoder(features)
        n = emb.shape[0] // 2
        return self.head(emb[:n], emb[n:], labels)

    def evaluate(self, encoder: Any, dev: PairData) -> dict[str, float]:
        """``{"spearman", "pearson"}`` of cosine vs label on ``dev`` (:func:`evaluate_pairs`)."""
        result = evaluate_pairs(encoder, dev, batch_size=self.eval_batch_size, device=self.eval_device)["metrics"]
        return {"spearman": result["spearman"], "pearson": result["pearson"]}

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def save(self, folder: Path) -> None:
        """Nothing: the encoder is the product, and the softmax classifier is discarded after training."""


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        metrics: ``train_pairs``, ``label_type``, ``steps``, ``train_seconds``, ``pairs_per_s``; with dev pairs also
            ``dev_pairs``, ``dev_spearman_before``, ``dev_spearman`` and ``dev_pearson`` (of the saved model) and
            ``best_step``. The schema of ``train-cosent``'s ``metrics.json``.
        best_step: the step of the best dev Spearman, or ``None``.
        model_dir: the saved model folder (loads with ``SentenceEncoder.load``), or ``None``.
        fit: the task-level :class:`~nlptool.core.tasks.TaskFit` (the loop's full ``TrainResult`` included).
        task: the :class:`PairTask` that was trained (its ``head`` holds the softmax classifier, if any).
    """

    metrics: dict[str, Any]
    best_step: int | None
    model_dir: Path | None
    fit: TaskFit
    task: PairTask = field(repr=False)


def fit(
    encoder: Any,
    train: PairData,
    out_dir: str | Path | None = None,
    *,
    dev: PairData | None = None,
    loss: str = "cosent",
    scale: float | None = None,
    config: TrainConfig | None = None,
    task: PairTask | None = None,
    on_progress: Any = None,
) -> FitResult:
    """Train ``encoder`` on the pairs of ``train`` with CoSENT (or ``loss``) and save it into ``out_dir``.

    Runs the shared loop (:func:`nlptool.core.train.train`: AdamW, warmup, checkpoints in ``out_dir/training``,
    torchrun) through :func:`nlptool.core.tasks.fit_task`. With ``dev``, Spearman is measured before training and at
    every evaluation, and the model folder holds the best dev checkpoint; the final metrics are of the saved model,
    reloaded. ``train-cosent`` is this function plus option parsing and output.

    Args:
        encoder: a :class:`~nlptool.core.encoder.SentenceEncoder`, trained in place.
        train: training pairs (:func:`nlptool.core.pairs.read_pairs`).
        out_dir: the model folder (written as :meth:`SentenceEncoder.save` does), or ``None`` to write nothing.
        dev: dev pairs with at least two different labels, or ``None``.
        loss, scale: the :class:`PairTask`'s (when ``task`` is not given).
        config: the loop's options (default: ``TrainConfig()``); ``output_dir``,
            ``metric`` and ``greater_is_better`` are set here.
        task: a ready :class:`PairTask` (then ``loss`` and ``scale`` must stay at their defaults).
        on_progress: the loop's progress callback; also gets ``{"event": "before", "metrics": ...}``.

    Returns:
        A :class:`FitResult`; under torchrun, on ranks other than 0 only ``metrics`` about the training itself.

    Raises:
        NlptoolError: a dev set on which Spearman is undefined, softmax on graded scores, the loop's errors.
    """
    if task is None:
        task = PairTask(encoder, train.label_type, loss=loss, scale=scale)
    elif loss != "cosent" or scale is not None:
        raise NlptoolError("fit: give either task= or loss=/scale=, not both")
    if dev is not None and (problem := dev_problem(dev)) is not None:
        raise NlptoolError(
            f"dev pairs {dev.path} {problem}, so dev Spearman is undefined; give pairs with different labels"
        )
    examples = task.examples(train)
    config = config if config is not None else TrainConfig()
    done = fit_task(
        encoder,
        task,
        examples,
        config,
        dev=dev,
        out_dir=out_dir,
        lengths=task.lengths(examples),
        on_progress=on_progress,
    )
    result = done.train_result
    metrics: dict[str, Any] = {
        "train_pairs": len(train),
        "label_type": train.label_type,
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "pairs_per_s": result.examples_per_s,
    }
    if dev is not None and done.main:
        final = encoder
        if done.model_dir is not None:
            final = SentenceEncoder.load(str(done.model_dir))
        after = task.evaluate(final, dev)
        before = done.before
        metrics.update(
            dev_pairs=len(dev),
            dev_spearman_before=before["spearman"] if before else None,
            dev_spearman=after["spearman"],
            dev_pearson=after["pearson"],
            best_step=result.best_step,
        )
    return FitResult(metrics, result.best_step, done.model_dir, done, task)

r"""GlobalPointer: named-entity recognition as scoring every (start, end) span, nested or not.

For a sequence of hidden states :math:`h_1, \dots, h_L` and entity type :math:`\alpha`, GlobalPointer scores every
span :math:`[i, j]` (:math:`i \le j`) directly:

.. math::

    s_\alpha(i, j) = \frac{(R_i q_{i,\alpha})^\top (R_j k_{j,\alpha})}{\sqrt{d}},
    \qquad q_{i,\alpha} = W_{q,\alpha} h_i + b_{q,\alpha}, \quad k_{j,\alpha} = W_{k,\alpha} h_j + b_{k,\alpha},

where :math:`R_i` is the rotary position embedding (RoPE) of position :math:`i`, so that the score depends on the
relative offset :math:`j - i` (:math:`R_i^\top R_j = R_{j-i}`). A span is predicted as type :math:`\alpha` when
:math:`s_\alpha(i, j) > 0`. Because every (type, start, end) is an independent decision, nested and overlapping
entities need no special decoding. Spans with :math:`i > j` or touching padding are masked to :math:`-10^{12}`.

Efficient GlobalPointer shares one :math:`(q, k)` projection across types and adds a cheap per-type bias read
from the un-rotated :math:`[q_i; k_i]`:

.. math::

    s_\alpha(i, j) = \frac{(R_i q_i)^\top (R_j k_j)}{\sqrt{d}} + b_{i}[2\alpha + 1] + b_{j}[2\alpha],
    \qquad b_i = \tfrac12 \bigl(W_b [q_i; k_i] + c_b\bigr) \in \mathbb{R}^{2H}.

The type-dependent layer :math:`W_b \in \mathbb{R}^{2H \times 2d}`, :math:`c_b \in \mathbb{R}^{2H}` costs
:math:`2 \cdot (2d + 1) = 4d + 2` parameters per type, against :math:`2 d (D + 1)` per type for GlobalPointer.

Training uses Su's multilabel categorical cross-entropy (:func:`multilabel_categorical_crossentropy`), over the
:math:`L^2` spans of each (example, type):

.. math::

    \mathcal{L} = \log\Bigl(1 + \sum_{n \in \Omega_{neg}} e^{s_n}\Bigr) + \log\Bigl(1 + \sum_{p \in \Omega_{pos}}
    e^{-s_p}\Bigr),

which pushes positive scores above 0 and negative scores below 0 without a softmax over a single class, and
handles the extreme positive/negative imbalance of span scoring without class weights.

References:
    Su Jianlin, "GlobalPointer:用统一的方式处理嵌套和非嵌套NER" (GlobalPointer: handling nested and flat NER in a
    unified way), 2021. https://kexue.fm/archives/8373
    Su Jianlin, "Efficient GlobalPointer:少点参数,多点效果" (Efficient GlobalPointer: fewer parameters, better
    results), 2022. https://kexue.fm/archives/8877
    Su Jianlin, "将"softmax+交叉熵"推广到多标签分类问题" (Generalising softmax + cross-entropy to multi-label
    classification), 2020. https://kexue.fm/archives/7359
    Jianlin Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding", 2021.
    https://arxiv.org/abs/2104.09864
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from nlptool.core.errors import NlptoolError

__all__ = [
    "GlobalPointerError",
    "multilabel_categorical_crossentropy",
    "global_pointer_loss",
    "rope",
    "span_mask",
    "GlobalPointer",
    "EfficientGlobalPointer",
    "decode_spans",
    "MASK_VALUE",
]

#: Score given to spans that cannot be entities (``i > j`` or padding).
MASK_VALUE = -1e12


class GlobalPointerError(NlptoolError, ValueError):
    """Bad arguments to a GlobalPointer function (shape, odd head size, ...); also a :class:`ValueError`."""


def multilabel_categorical_crossentropy(y_true: Tensor, y_pred: Tensor) -> Tensor:
    r"""Su's multilabel categorical cross-entropy, one loss per row of candidates.

    .. math::

        \mathcal{L} = \log\Bigl(1 + \sum_{n: y_n = 0} e^{s_n}\Bigr) + \log\Bigl(1 + \sum_{p: y_p = 1} e^{-s_p}\Bigr)

    Each term is computed as a log-sum-exp over the scores with an appended 0 (the "1 +"), with the excluded
    entries set to :math:`-\infty`, so it is stable for any scores, including masked entries at :math:`-10^{12}` or
    :math:`-\infty` that are labelled negative (they contribute :math:`e^{-\infty} = 0` and zero gradient).

    Args:
        y_true: 0/1 labels, same shape as ``y_pred`` (any dtype; values > 0.5 count as positive).
        y_pred: scores (logits, not probabilities), last dimension = candidates.

    Returns:
        The per-row losses, shape ``y_pred.shape[:-1]``.

    Reference:
        Su Jianlin, 2020. https://kexue.fm/archives/7359
    """
    if y_true.shape != y_pred.shape:
        raise GlobalPointerError(
            f"y_true has shape {tuple(y_true.shape)} but y_pred has {tuple(y_pred.shape)}; pass labels of the same "
            "shape as the scores"
        )
    pos = y_true > 0.5
    neg_inf = torch.tensor(float("-inf"), dtype=y_pred.dtype, device=y_pred.device)
    zeros = torch.zeros_like(y_pred[..., :1])
    s_neg = torch.where(pos, neg_inf, y_pred)
    loss_neg = torch.logsumexp(torch.cat([s_neg, zeros], dim=-1), dim=-1)
    # The positive term touches only the (few) positives: a log-sum-exp per row over the gathered -s_p and the
    # appended 0, stabilised by the row's maximum m (detached: the value does not depend on m, so neither does the
    # gradient). Same value as a dense log-sum-exp over a mostly -inf row, at a fraction of the cost for span scores.
    rows_scores = y_pred.reshape(-1, y_pred.shape[-1])
    row, col = pos.reshape(-1, pos.shape[-1]).nonzero(as_tuple=True)
    v = -rows_scores[row, col]
    m = torch.zeros(rows_scores.shape[0], dtype=y_pred.dtype, device=y_pred.device)
    m = m.scatter_reduce(0, row, v.detach(), reduce="amax", include_self=True)
    total = torch.exp(-m).scatter_add(0, row, torch.exp(v - m[row]))
    loss_pos = (m + torch.log(total)).reshape(y_pred.shape[:-1])
    return loss_neg + loss_pos


def global_pointer_loss(logits: Tensor, labels: Tensor) -> Tensor:
    r"""Mean multilabel categorical cross-entropy over (example, type) for GlobalPointer span scores.

    .. math::

        \mathcal{L} = \frac{1}{B H} \sum_{b=1}^{B} \sum_{\alpha=1}^{H}
        \mathrm{MCCE}\bigl(y_{b,\alpha,:,:}, s_{b,\alpha,:,:}\bigr),

    each (example, type) over its spans (Su's choice of normalisation). Only the upper triangle :math:`i \le j`
    enters: spans with :math:`i > j` are never entities and the heads mask them to :data:`MASK_VALUE`, where they
    would add exactly 0 (:math:`e^{-10^{12}}`), so they are left out rather than computed (about half the work).

    Args:
        logits: span scores, shape ``(B, H, L, L)`` (masked spans at a large negative value).
        labels: 0/1 gold spans, shape ``(B, H, L, L)``; entries below the diagonal are ignored.

    Returns:
        A scalar tensor.

    Reference:
        Su Jianlin, 2021. https://kexue.fm/archives/8373
    """
    if logits.dim() != 4 or labels.shape != logits.shape:
        raise GlobalPointerError(
            f"expected logits and labels of the same shape (B, H, L, L), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    b, h, length = logits.shape[:3]
    iu, ju = _triu_indices(length, logits.device)
    scores = logits[:, :, iu, ju].reshape(b * h, -1)
    gold = labels[:, :, iu, ju].reshape(b * h, -1)
    return multilabel_categorical_crossentropy(gold, scores).mean()


def rope(x: Tensor, positions: Tensor | None = None, base: float = 10000.0) -> Tensor:
    r"""Rotary position embedding on the last dimension.

    Each pair :math:`(x_{2i}, x_{2i+1})` at position :math:`p` is rotated by :math:`\theta = p \cdot
    \mathrm{base}^{-2i/d}`:

    .. math::

        x'_{2i} = x_{2i} \cos\theta - x_{2i+1} \sin\theta, \qquad
        x'_{2i+1} = x_{2i+1} \cos\theta + x_{2i} \sin\theta.

    Rotations preserve norms and :math:`(R_m q)^\top (R_n k) = q^\top R_{n-m} k` depends only on :math:`n - m`.

    Args:
        x: tensor of shape ``(..., L, d)`` with ``d`` even, e.g. ``(B, L, d)`` or ``(B, H, L, d)``; the sequence
            axis must be second to last.
        positions: positions, shape ``(L,)`` or broadcastable to ``x.shape[:-1]``; default ``0..L-1``.
        base: the frequency base (10000 in RoFormer).

    Returns:
        The rotated tensor, same shape and dtype as ``x``.

    Reference:
        Su et al., RoFormer, 2021. https://arxiv.org/abs/2104.09864
    """
    if x.dim() < 2:
        raise GlobalPointerError(f"rope expects a tensor of shape (..., L, d), got shape {tuple(x.shape)}")
    d = x.shape[-1]
    if d % 2 != 0:
        raise GlobalPointerError(f"rope needs an even last dimension, got d={d}; use an even head_size")
    length = x.shape[-2]
    if positions is None:
        cos, sin = _rope_tables(length, d, base, x.device, x.dtype)
    else:
        cos, sin = _rope_cos_sin(positions.to(x.device), d, base, x.dtype)
    x_even = x[..., 0::2]
    x_odd = x[..., 1::2]
    out_even = x_even * cos - x_odd * sin
    out_odd = x_odd * cos + x_even * sin
    return torch.stack([out_even, out_odd], dim=-1).flatten(-2)


def _rope_cos_sin(positions: Tensor, d: int, base: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    compute_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    pos = positions.to(dtype=compute_dtype)
    inv_freq = base ** (-torch.arange(0, d, 2, device=positions.device, dtype=compute_dtype) / d)  # (d/2,)
    theta = pos.unsqueeze(-1) * inv_freq  # (..., L, d/2)
    return torch.cos(theta).to(dtype), torch.sin(theta).to(dtype)


_TABLES: dict[tuple, Any] = {}


def _cached(key: tuple, build: Callable[[], Any]) -> Any:
    """Input-independent tensors (RoPE tables, triangle masks and indices) built once per key (kind, length, ...):
    every batch of a length-sorted run reuses a handful of lengths. They are built outside ``inference_mode`` so that
    a table first needed in an evaluation during training can still be saved for a later backward pass."""
    value = _TABLES.get(key)
    if value is None:
        if len(_TABLES) > 4096:  # bounded: lengths are bounded by the model's max length in practice
            _TABLES.clear()
        with torch.inference_mode(False), torch.no_grad():
            value = build()
        _TABLES[key] = value
    return value


def _rope_tables(length: int, d: int, base: float, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin of positions ``0..length-1``."""
    return _cached(
        ("rope", length, d, float(base), str(device), dtype),
        lambda: _rope_cos_sin(torch.arange(length, device=device), d, base, dtype),
    )


def _upper_triangle(length: int, device: torch.device) -> Tensor:
    return _cached(
        ("triu", length, str(device)), lambda: torch.ones(length, length, dtype=torch.bool, device=device).triu()
    )


def _triu_indices(length: int, device: torch.device) -> tuple[Tensor, Tensor]:
    return _cached(("triu_idx", length, str(device)), lambda: tuple(torch.triu_indices(length, length, device=device)))


def span_mask(attention_mask: Tensor) -> Tensor:
    r"""Which spans :math:`[i, j]` are valid: :math:`i \le j` and both tokens are real.

    .. math::

        M_{b, i, j} = [i \le j] \wedge m_{b,i} \wedge m_{b,j}

    Args:
        attention_mask: shape ``(B, L)``, nonzero / True for real tokens, 0 for padding.

    Returns:
        A bool tensor of shape ``(B, 1, L, L)`` (broadcasts over types).

    Reference:
        Su Jianlin, 2021. https://kexue.fm/archives/8373
    """
    if attention_mask.dim() != 2:
        raise GlobalPointerError(f"attention_mask must have shape (B, L), got {tuple(attention_mask.shape)}")
    m = attention_mask.bool()
    upper = _upper_triangle(m.shape[1], m.device)
    return (m[:, None, :, None] & m[:, None, None, :]) & upper


def _check_inputs(hidden: Tensor, attention_mask: Tensor | None, hidden_size: int) -> Tensor:
    if hidden.dim() != 3 or hidden.shape[-1] != hidden_size:
        raise GlobalPointerError(
            f"hidden must have shape (B, L, {hidden_size}), got {tuple(hidden.shape)}; check the encoder's hidden size"
        )
    if attention_mask is None:
        return torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    if attention_mask.shape != hidden.shape[:2]:
        raise GlobalPointerError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but hidden is {tuple(hidden.shape)}; "
            "it must be (B, L)"
        )
    return attention_mask


def _check_head_args(hidden_size: int, num_types: int, head_size: int, use_rope: bool) -> None:
    if hidden_size < 1 or num_types < 1 or head_size < 1:
        raise GlobalPointerError(
            f"hidden_size, num_types and head_size must be positive, got {hidden_size}, {num_types}, {head_size}"
        )
    if use_rope and head_size % 2:
        raise GlobalPointerError(f"head_size must be even with RoPE, got {head_size}")


class GlobalPointer(nn.Module):
    r"""GlobalPointer span scorer with one (q, k) projection per entity type.

    .. math::

        [q_{i,1}; k_{i,1}; \dots; q_{i,H}; k_{i,H}] = W h_i + b, \qquad
        s_\alpha(i, j) = \frac{(R_i q_{i,\alpha})^\top (R_j k_{j,\alpha})}{\sqrt{d}}

    Invalid spans (:math:`i > j`, padding) get :data:`MASK_VALUE`.

    Args:
        hidden_size: encoder hidden size ``D``.
        num_types: number of entity types ``H``.
        head_size: per-type query/key size ``d`` (even when ``use_rope``).
        use_rope: rotate q and k by RoPE so that scores see the relative position.

    Reference:
        Su Jianlin, 2021. https://kexue.fm/archives/8373
    """

    def __init__(self, hidden_size: int, num_types: int, head_size: int = 64, use_rope: bool = True):
        super().__init__()
        _check_head_args(hidden_size, num_types, head_size, use_rope)
        self.hidden_size = hidden_size
        self.num_types = num_types
        self.head_size = head_size
        self.use_rope = use_rope
        self.dense = nn.Linear(hidden_size, 2 * num_types * head_size)

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Score all spans.

        Args:
            hidden: ``(B, L, D)`` encoder outputs.
            attention_mask: ``(B, L)``, 1 for real tokens; ``None`` means no padding.

        Returns:
            Logits of shape ``(B, H, L, L)``.
        """
        attention_mask = _check_inputs(hidden, attention_mask, self.hidden_size)
        b, length, _ = hidden.shape
        h, d = self.num_types, self.head_size
        proj = self.dense(hidden).view(b, length, h, 2 * d).transpose(1, 2)  # (B, H, L, 2d)
        q, k = proj[..., :d], proj[..., d:]
        if self.use_rope:
            q, k = rope(q), rope(k)
        logits = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)
        return logits.masked_fill_(~span_mask(attention_mask), MASK_VALUE)  # in place: a fresh tensor


class EfficientGlobalPointer(nn.Module):
    r"""Efficient GlobalPointer: shared (q, k) for all types plus a per-type start/end bias.

    .. math::

        [q_i; k_i] = W_p h_i + c_p, \qquad b_i = \tfrac12 (W_b [q_i; k_i] + c_b) \in \mathbb{R}^{2H},

        s_\alpha(i, j) = \frac{(R_i q_i)^\top (R_j k_j)}{\sqrt{d}} + b_i[2\alpha + 1] + b_j[2\alpha].

    The bias reads the un-rotated :math:`[q_i; k_i]`. Parameters: ``2d·D + 2d`` shared (``self.dense``) plus
    ``2d·2H + 2H`` type-dependent (``self.type_dense``), i.e. :math:`4d + 2` per entity type.

    Args:
        hidden_size: encoder hidden size ``D``.
        num_types: number of entity types ``H``.
        head_size: shared query/key size ``d`` (even when ``use_rope``).
        use_rope: rotate q and k by RoPE.

    Reference:
        Su Jianlin, 2022. https://kexue.fm/archives/8877
    """

    def __init__(self, hidden_size: int, num_types: int, head_size: int = 64, use_rope: bool = True):
        super().__init__()
        _check_head_args(hidden_size, num_types, head_size, use_rope)
        self.hidden_size = hidden_size
        self.num_types = num_types
        self.head_size = head_size
        self.use_rope = use_rope
        self.dense = nn.Linear(hidden_size, 2 * head_size)
        self.type_dense = nn.Linear(2 * head_size, 2 * num_types)

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Score all spans.

        Args:
            hidden: ``(B, L, D)`` encoder outputs.
            attention_mask: ``(B, L)``, 1 for real tokens; ``None`` means no padding.

        Returns:
            Logits of shape ``(B, H, L, L)``.
        """
        attention_mask = _check_inputs(hidden, attention_mask, self.hidden_size)
        d = self.head_size
        qk = self.dense(hidden)  # (B, L, 2d)
        q, k = qk[..., :d], qk[..., d:]
        if self.use_rope:
            q, k = rope(q), rope(k)
        shared = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)  # (B, L, L)
        bias = self.type_dense(qk).transpose(1, 2) / 2  # (B, 2H, L)
        start_bias = bias[:, 1::2, :, None]  # b_i[2α+1], varies along i
        end_bias = bias[:, 0::2, None, :]  # b_j[2α], varies along j
        logits = shared[:, None] + start_bias + end_bias
        return logits.masked_fill_(~span_mask(attention_mask), MASK_VALUE)  # in place: a fresh tensor


def decode_spans(
    logits: Tensor, threshold: float = 0.0, max_span_tokens: int | None = None
) -> list[list[tuple[int, int, int, float]]]:
    r"""Read predicted spans off GlobalPointer logits.

    A span :math:`(\alpha, i, j)` is predicted when :math:`s_\alpha(i, j) > \tau` (``threshold``, 0 for a model
    trained with :func:`global_pointer_loss`) and, with a cap :math:`K` (``max_span_tokens``), when it is at most
    :math:`K` tokens long: :math:`j - i + 1 \le K`. The head scores every span of a window, and on long repetitive
    text a long span can score above the threshold although no training entity was anywhere near that long.

    Args:
        logits: ``(B, H, L, L)`` span scores.
        threshold: decision threshold :math:`\tau`.
        max_span_tokens: ignore spans longer than this many tokens; ``None`` or 0: no cap.

    Returns:
        Per example, a list of ``(type, start, end_inclusive, score)`` sorted by score, highest first.

    Reference:
        Su Jianlin, 2021. https://kexue.fm/archives/8373
    """
    if logits.dim() != 4:
        raise GlobalPointerError(f"logits must have shape (B, H, L, L), got {tuple(logits.shape)}")
    out: list[list[tuple[int, int, int, float]]] = [[] for _ in range(logits.shape[0])]
    scores = logits.detach()
    keep = scores > threshold
    if max_span_tokens is not None and max_span_tokens < 0:
        raise GlobalPointerError(f"max_span_tokens must be positive (or None/0 for no cap), got {max_span_tokens}")
    if max_span_tokens:
        pos = torch.arange(scores.shape[-1], device=scores.device)
        keep &= (pos[None, :] - pos[:, None]) < max_span_tokens  # (L, L): end j - start i + 1 <= cap
    idx = keep.nonzero(as_tuple=False).cpu().tolist()  # one pass over the whole batch, row-major
    values = scores[keep].cpu().tolist()  # the same order as nonzero()
    for (b, t, i, j), v in zip(idx, values, strict=True):
        out[b].append((t, i, j, float(v)))
    for spans in out:
        spans.sort(key=lambda s: -s[3])
    return out

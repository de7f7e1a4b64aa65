"""Zero-shot classification (``nlptool zero-shot``): :func:`classify_nsp`, :func:`classify_embedding` and their
:class:`ZeroShotResult`. See :mod:`nlptool.core.nsp`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nlptool.core.errors import NlptoolError
from nlptool.core.nsp.prompts import (
    LabelPrompt,
    _check_labels,
    calibrate_content_free,
    normalise_scores,
    pair_order,
    samples_contrast,
)
from nlptool.core.nsp.scoring import NSPScorer

#: Zhao et al. (2021)'s content-free inputs; ``{mask}`` becomes the tokenizer's mask token (dropped if it has none).
CONTENT_FREE_TEXTS = ("N/A", "", "{mask}")
MAPPINGS = ("candidates", "samples")
CALIBRATIONS = ("none", "content-free")


def content_free_texts(tokenizer: Any) -> list[str]:
    """:data:`CONTENT_FREE_TEXTS` with ``{mask}`` replaced by the tokenizer's mask token (left out if it has none)."""
    mask = getattr(tokenizer, "mask_token", None)
    texts = []
    for text in CONTENT_FREE_TEXTS:
        if "{mask}" in text:
            if not mask:
                continue
            text = text.replace("{mask}", mask)
        texts.append(text)
    return texts


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of an ``(N, L)`` array (max-shifted, so large logits do not overflow)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class ZeroShotResult:
    """What :func:`classify_nsp` or :func:`classify_embedding` found for ``N`` texts and ``L`` labels.

    Attributes:
        labels: the label names, in order (the columns of ``scores`` and ``probs``; ``pred`` indexes them).
        prompts: the prompt sentence of each label.
        method: ``nsp`` or ``embedding``.
        mapping: ``candidates`` (argmax over the labels) or ``samples`` (NSP-BERT's samples contrast).
        scores: candidates: ``(N, L)`` float64, P(IsNext) or the cosine of each (text, prompt); samples: ``(N,)``,
            the one score each row was ranked by.
        probs: candidates: ``(N, L)`` rows summing to 1 (NSP: scores over their sum; embedding: ``softmax(cos /
            T)``), calibrated with ``calibrate="content-free"``; samples: ``None``.
        pred: ``(N,)`` int64 label indices (the argmax of ``scores``, of the calibrated ``probs`` when calibrated;
            samples: each row's bin).
        pairs: (text, prompt) pairs scored (or texts × labels compared, for the embedding method).
        seconds: wall time of that scoring (the content-free inputs excluded).
        model: the model's name.
        content_free_prior: ``(L,)``, the label distribution of the content-free inputs that calibration divided
            out, or ``None``.
        content_free_texts: those inputs (``"N/A"``, ``""``, the mask token), or ``None``.
    """

    labels: list[str]
    prompts: list[str]
    method: str
    mapping: str
    scores: np.ndarray
    probs: np.ndarray | None
    pred: np.ndarray
    pairs: int
    seconds: float
    model: str
    content_free_prior: np.ndarray | None = None
    content_free_texts: list[str] | None = None

    @property
    def pred_labels(self) -> list[str]:
        """The predicted label name of every text."""
        return [self.labels[int(k)] for k in self.pred]

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else float("nan")

    def row(self, i: int) -> dict[str, Any]:
        """The fields ``zero-shot`` adds to input row ``i``: ``scores`` ``{label: score}``, ``probs`` (a list in label
        order) and ``pred`` (a label name); with the samples mapping ``score`` and ``pred``."""
        out: dict[str, Any] = {}
        if self.mapping == "samples":
            out["score"] = float(self.scores[i])
        else:
            out["scores"] = {y: float(s) for y, s in zip(self.labels, self.scores[i], strict=True)}
            out["probs"] = [float(v) for v in self.probs[i]]  # type: ignore[index]
        out["pred"] = self.labels[int(self.pred[i])]
        return out

    def metrics(self, gold: Sequence[int] | np.ndarray | None = None) -> dict[str, Any]:
        """``zero-shot``'s metrics: rows, labels, prompts, pairs, seconds, pairs per second, predicted counts per label
        and the content-free prior (when calibrated); with ``gold`` label indices (``(N,)``) also accuracy, macro-F1,
        the confusion matrix (rows: gold, columns: predicted; :mod:`nlptool.core.metrics`) and the accuracy of always
        predicting the most frequent gold label."""
        from nlptool.core.metrics import accuracy, confusion_matrix, macro_f1

        n, n_labels = len(self.pred), len(self.labels)
        out: dict[str, Any] = {
            "rows": n,
            "labels": list(self.labels),
            "prompts": list(self.prompts),
            "pairs": self.pairs,
            "seconds": self.seconds,
            "pairs_per_s": self.pairs_per_s,
            "predicted_counts": {y: int((self.pred == k).sum()) for k, y in enumerate(self.labels)},
        }
        if self.content_free_prior is not None:
            out["content_free_prior"] = {y: float(v) for y, v in zip(self.labels, self.content_free_prior, strict=True)}
        if gold is not None:
            g = np.asarray(gold, dtype=np.int64)
            if g.shape != self.pred.shape:
                raise NlptoolError(f"{len(g)} gold labels for {n} predictions")
            out["accuracy"] = accuracy(g, self.pred)
            out["macro_f1"] = macro_f1(g, self.pred, n_labels)
            out["confusion_matrix"] = confusion_matrix(g, self.pred, n_labels).tolist()
            out["majority_accuracy"] = float(np.bincount(g, minlength=n_labels).max() / n)
        return out


def _check_zero_shot(texts: Sequence[str], prompts: Sequence[LabelPrompt], calibrate: str | None) -> str:
    if len(texts) == 0:
        raise NlptoolError("no texts to classify")
    _check_labels([p.label for p in prompts], "the prompts")
    calibrate = calibrate or "none"
    if calibrate not in CALIBRATIONS:
        raise NlptoolError(f"unknown calibration '{calibrate}'; choose {' or '.join(CALIBRATIONS)}")
    return calibrate


def classify_nsp(
    scorer: NSPScorer,
    texts: Sequence[str],
    prompts: Sequence[LabelPrompt],
    *,
    position: str = "prefix",
    mapping: str = "candidates",
    texts2: Sequence[str] | None = None,
    calibrate: str | None = None,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> ZeroShotResult:
    r"""NSP-BERT zero-shot classification of ``texts`` with one prompt per label (``zero-shot --method nsp``).

    ``candidates``: ``scores[i, y]`` = P(IsNext) of (prompt ``y``, text ``i``) (``prefix``) or (text, prompt)
    (``suffix``), :meth:`NSPScorer.score`; ``probs`` = :func:`normalise_scores`; ``pred`` = argmax. With
    ``calibrate="content-free"`` the content-free texts (:func:`content_free_texts`) are scored against the same
    prompts and :func:`calibrate_content_free` divides their mean distribution out of ``probs``; ``pred`` is then the
    argmax of the calibrated ``probs`` (``scores`` stay raw).

    ``samples``: each row gets one score, P(IsNext) of the first label's prompt with the text (or of the pair (text,
    ``texts2[i]``) when ``texts2`` is given, cut from the longer side), and :func:`samples_contrast` cuts the ranking
    into ``L`` equal bins, one per label in order.

    Args:
        scorer: an :class:`NSPScorer` (a model with an NSP head; it scores on the device its model is on).
        texts: the texts (``N``).
        prompts: one :class:`LabelPrompt` per label (:func:`make_prompts`, :func:`read_labels_file`), at least 2.
        position: ``prefix`` (the prompt is segment A) or ``suffix``.
        mapping: ``candidates`` or ``samples``.
        texts2: the second texts of a pair task (``samples`` only).
        calibrate: ``None``/``"none"`` or ``"content-free"`` (``candidates`` only).
        batch_size: pairs per forward pass.
        progress: called with the number of pairs scored after each batch (``N × L`` in all; ``N`` for samples).

    Returns:
        A :class:`ZeroShotResult`.

    Raises:
        NlptoolError: no texts, fewer than 2 labels, an unknown mapping/position/calibration, a combination the
            mapping does not take, a prompt that does not fit into the scorer's max length.
    """
    calibrate = _check_zero_shot(texts, prompts, calibrate)
    if mapping not in MAPPINGS:
        raise NlptoolError(f"unknown mapping '{mapping}'; choose {' or '.join(MAPPINGS)}")
    if texts2 is not None and mapping != "samples":
        raise NlptoolError("a pair task (texts2) is scored with the samples mapping")
    if texts2 is not None and len(texts2) != len(texts):
        raise NlptoolError(f"{len(texts)} texts but {len(texts2)} second texts")
    if mapping == "samples" and calibrate != "none":
        raise NlptoolError("content-free calibration applies to the candidates mapping")
    labels, prompt_texts = [p.label for p in prompts], [p.prompt for p in prompts]
    n = len(texts)
    t0 = time.perf_counter()
    if mapping == "samples":
        if texts2 is not None:
            firsts, seconds, shorten = list(texts), list(texts2), "longest"
        else:
            pairs = [pair_order(prompt_texts[0], t, position) for t in texts]
            firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
            shorten = "second" if position == "prefix" else "first"
        single = scorer.score_pairs(firsts, seconds, shorten=shorten, batch_size=batch_size, progress=progress)
        took = time.perf_counter() - t0
        pred = samples_contrast(single, len(prompts))
        return ZeroShotResult(labels, prompt_texts, "nsp", mapping, single, None, pred, n, took, scorer.name)
    scores = scorer.score(texts, prompt_texts, position=position, batch_size=batch_size, progress=progress)
    took = time.perf_counter() - t0
    result = ZeroShotResult(
        labels, prompt_texts, "nsp", mapping, scores, normalise_scores(scores), scores.argmax(axis=1), n * len(labels),
        took, scorer.name,
    )  # fmt: skip
    if calibrate == "content-free":
        cf_texts = content_free_texts(scorer.tokenizer)
        cf_probs = normalise_scores(scorer.score(cf_texts, prompt_texts, position=position))
        _calibrate(result, cf_texts, cf_probs)
    return result


def classify_embedding(
    encoder: Any,
    texts: Sequence[str],
    prompts: Sequence[LabelPrompt],
    *,
    temperature: float = 0.05,
    calibrate: str | None = None,
    batch_size: int = 64,
    device: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ZeroShotResult:
    r"""The embedding baseline of ``zero-shot`` (``--method embedding``): no NSP head needed.

    ``scores[i, y]`` = cosine between the sentence embeddings of text ``i`` and prompt ``y``; ``probs`` =
    ``softmax(scores / temperature)`` per row; ``pred`` = argmax. ``calibrate="content-free"`` divides out the
    mean ``probs`` of the content-free texts as :func:`classify_nsp` does.

    Args:
        encoder: a :class:`nlptool.core.encoder.SentenceEncoder`.
        texts, prompts, calibrate, batch_size: as in :func:`classify_nsp`.
        temperature: ``T`` > 0; 0.05 is the scale (20) all-MiniLM-L6-v2 was trained with.
        device: where to encode (the encoder is moved there); ``None``: where it is.
        progress: called with the number of texts encoded after each batch (``N + L`` in all).

    Returns:
        A :class:`ZeroShotResult` (``pairs`` = ``N × L``; ``seconds``: the encoding of texts and prompts).
    """
    calibrate = _check_zero_shot(texts, prompts, calibrate)
    if not temperature > 0:
        raise NlptoolError(f"the temperature must be positive, got {temperature}")
    labels, prompt_texts = [p.label for p in prompts], [p.prompt for p in prompts]

    def encode(batch: Sequence[str], report: Callable[[int], None] | None = None) -> np.ndarray:
        return encoder.encode(batch, batch_size=batch_size, normalize=True, device=device, progress=report)

    t0 = time.perf_counter()
    text_emb = encode(texts, progress)
    prompt_emb = encode(prompt_texts, progress).astype(np.float64)
    took = time.perf_counter() - t0
    scores = text_emb.astype(np.float64) @ prompt_emb.T
    probs = softmax_rows(scores / temperature)
    n = len(texts)
    result = ZeroShotResult(
        labels, prompt_texts, "embedding", "candidates", scores, probs, scores.argmax(axis=1), n * len(labels), took,
        encoder.name,
    )  # fmt: skip
    if calibrate == "content-free":
        cf_texts = content_free_texts(encoder.tokenizer)
        cf_probs = softmax_rows(encode(cf_texts).astype(np.float64) @ prompt_emb.T / temperature)
        _calibrate(result, cf_texts, cf_probs)
    return result


def _calibrate(result: ZeroShotResult, cf_texts: list[str], cf_probs: np.ndarray) -> None:
    """Contextual calibration of ``result``'s probs in place: new probs and pred, the prior and its inputs kept."""
    result.probs, result.content_free_prior = calibrate_content_free(result.probs, cf_probs)  # type: ignore[arg-type]
    result.pred = result.probs.argmax(axis=1)
    result.content_free_texts = cf_texts

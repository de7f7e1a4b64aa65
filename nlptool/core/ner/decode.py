"""NER prediction and evaluation: spans of texts (:func:`predict_spans`) and their exact-span scores.

:func:`predict_spans` runs a :class:`~nlptool.core.ner.model.SpanNerModel` over length-sorted batches of windows,
decodes the spans above a threshold, maps them back to characters and merges them across windows;
:func:`resolve_overlaps` makes the output flat; :func:`evaluate_examples` is what ``nlptool ner eval`` reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nlptool.core.batching import length_batches
from nlptool.core.ner.data import (
    AlignmentStats,
    NerExample,
    Window,
    collate_windows,
    encode_windows,
    stats_dict,
)
from nlptool.core.ner.model import SpanNerModel

#: Default cap on padded tokens per prediction batch on CPU (:func:`nlptool.core.batching.length_batches`). Chosen
#: by measurement on CoNLL-2003 *training* texts (2,000 of them, all-MiniLM-L6-v2; ``bench_ner_batching.py``,
#: BENCHMARKS.md): 512 / 768 / 1,024 / 1,536 tokens against plain batches of 64 windows, at 1 and 2 threads, two
#: runs each; 1,024 had the best mean speed-up (1.06×, tied with 1,536 at half the memory).
CPU_MAX_BATCH_TOKENS = 1024


# --------------------------------------------------------------------------------------------------------------------
# Prediction


def predict_spans(
    model: SpanNerModel,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_batch_tokens: int | None = None,
    threshold: float = 0.0,
    device: str = "cpu",
    max_length: int | None = None,
    stride: int | None = None,
    max_span_tokens: int | None = None,
) -> tuple[list[list[dict[str, Any]]], AlignmentStats]:
    """Entities in each text: ``{"start", "end", "label", "text", "score"}`` (character offsets, end exclusive).

    Windows are sorted by length and run in batches of at most ``batch_size`` windows and ``max_batch_tokens``
    padded tokens (:func:`length_batches`; ``None`` or 0: no token cap); spans with score ``> threshold`` are kept,
    mapped back to characters and merged across windows (same span and label: the highest score). Nested spans are
    all returned; see :func:`resolve_overlaps` for flat output. Each text's entities are sorted by
    ``(start, -end, label)``. ``max_span_tokens``: ignore spans longer than this many tokens (``None``/0: no cap;
    :func:`longest_entity_tokens` of the training windows is the usual cap).
    """
    from nlptool.core.globalpointer import decode_spans

    max_length = max_length or model.max_length
    stride = model.stride if stride is None else stride
    windows, stats = encode_windows(tokenizer, list(texts), max_length=max_length, stride=stride)
    found: list[dict[tuple[int, int, str], float]] = [{} for _ in texts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for idx in length_batches([len(w) for w in windows], batch_size, max_batch_tokens):
                batch_w = [windows[k] for k in idx]
                batch = collate_windows(batch_w, model.num_types, pad_id, with_labels=False)
                logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
                for win, spans in zip(batch_w, decode_spans(logits.float(), threshold, max_span_tokens), strict=True):
                    _collect(win, spans, model.labels, found[win.index])
    finally:
        model.train(was_training)
    out = []
    for text, spans in zip(texts, found, strict=True):
        items = [
            {"start": s, "end": e, "label": lab, "text": text[s:e], "score": score}
            for (s, e, lab), score in spans.items()
        ]
        items.sort(key=lambda d: (d["start"], -d["end"], d["label"]))
        out.append(items)
    return out, stats


def _collect(
    win: Window, spans: list[tuple[int, int, int, float]], labels: list[str], into: dict[tuple[int, int, str], float]
) -> None:
    content = [t for t, off in enumerate(win.offsets) if off is not None]
    if not content:
        return
    first, last = content[0], content[-1]
    for t, i, j, score in spans:
        oi, oj = win.offsets[i], win.offsets[j]
        if oi is None or oj is None:
            continue
        if (i == first and not win.at_text_start) or (j == last and not win.at_text_end):
            continue  # touches a cut: the neighbouring window sees this span whole
        key = (oi[0], oj[1], labels[t])
        if score > into.get(key, float("-inf")):
            into[key] = score


def resolve_overlaps(entities: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat output: keep entities greedily by descending score, dropping any that overlaps one already kept.

    Returns the kept entities sorted by start.
    """
    kept: list[dict[str, Any]] = []
    for ent in sorted(entities, key=lambda d: (-d["score"], d["start"], d["end"])):
        if all(ent["end"] <= k["start"] or ent["start"] >= k["end"] for k in kept):
            kept.append(ent)
    kept.sort(key=lambda d: (d["start"], d["end"]))
    return kept


def batch_token_cap(max_batch_tokens: int | None, device: Any) -> int:
    """The padded-token cap per prediction batch: ``max_batch_tokens`` when given (0: none), else
    :data:`CPU_MAX_BATCH_TOKENS` on CPU and none (0) on other devices."""
    if max_batch_tokens is not None:
        return max_batch_tokens
    return CPU_MAX_BATCH_TOKENS if str(device).startswith("cpu") else 0


# --------------------------------------------------------------------------------------------------------------------
# Evaluation


def evaluate_examples(
    model: SpanNerModel,
    tokenizer: Any,
    examples: Sequence[NerExample],
    *,
    batch_size: int = 64,
    device: str = "cpu",
    max_batch_tokens: int | None = None,
    threshold: float = 0.0,
    flat: bool = False,
    max_span_tokens: int | None = None,
) -> dict[str, Any]:
    """Predict ``examples`` and score the spans against their gold entities: what ``nlptool ner eval`` reports.

    A predicted entity is correct when its start, end and label all match a gold one (exact spans; CoNLL / seqeval's
    entity-level measure): :func:`nlptool.core.metrics.span_prf` (micro, per type, macro) plus
    :func:`~nlptool.core.metrics.nested_recall`.

    Args:
        model: a :class:`SpanNerModel` (e.g. from :meth:`SpanNerModel.load`), already on ``device``.
        tokenizer: its fast tokenizer.
        examples: gold texts (:func:`read_ner_jsonl`).
        batch_size, max_batch_tokens, threshold, max_span_tokens: as :func:`predict_spans`;
            ``max_batch_tokens=None``: :func:`batch_token_cap`'s default for ``device``.
        device: where the inputs go.
        flat: resolve overlapping predictions (:func:`resolve_overlaps`) before scoring.

    Returns:
        ``{"metrics", "predictions", "alignment", "seconds"}``: ``metrics`` is ``ner eval``'s metrics document
        (``micro``, ``macro``, ``per_type``, ``nested_gold``, ``nested_recall``, ``texts``, ``texts_per_s``,
        ``alignment``: :func:`stats_dict`), ``predictions`` the entities per text (as :func:`predict_spans`),
        ``alignment`` the :class:`AlignmentStats` and ``seconds`` the prediction time.
    """
    import time

    from nlptool.core.metrics import nested_recall, span_prf

    t0 = time.perf_counter()
    preds, stats = predict_spans(
        model,
        tokenizer,
        [ex.text for ex in examples],
        batch_size=batch_size,
        max_batch_tokens=batch_token_cap(max_batch_tokens, device),
        threshold=threshold,
        device=device,
        max_span_tokens=max_span_tokens,
    )
    seconds = time.perf_counter() - t0
    if flat:
        preds = [resolve_overlaps(p) for p in preds]
    gold = [[(e.start, e.end, e.label) for e in ex.entities] for ex in examples]
    pred = [[(p["start"], p["end"], p["label"]) for p in ps] for ps in preds]
    metrics: dict[str, Any] = span_prf(gold, pred)
    metrics.update(nested_recall(gold, pred))
    metrics["texts"] = len(examples)
    metrics["texts_per_s"] = len(examples) / seconds if seconds > 0 else 0.0
    metrics["alignment"] = stats_dict(stats)
    return {"metrics": metrics, "predictions": preds, "alignment": stats, "seconds": seconds}

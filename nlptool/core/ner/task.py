"""NER training: :class:`NerTask` (the :class:`nlptool.core.tasks.Task` of span NER) and :func:`fit`.

:func:`fit` trains a :class:`~nlptool.core.ner.model.TokenEncoder` and a fresh span head through the shared loop and
returns a :class:`FitResult`; ``nlptool ner train`` is a thin wrapper over it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nlptool.core.errors import NlptoolError
from nlptool.core.ner.data import (
    AlignmentStats,
    NerExample,
    Window,
    check_labels,
    collate_windows,
    default_stride,
    encode_windows,
    label_set,
    longest_entity_tokens,
    stats_dict,
)
from nlptool.core.ner.decode import evaluate_examples
from nlptool.core.ner.model import (
    HEADS,
    SpanNerModel,
    _transformer,
    head_settings,
    make_head,
    token_states,
    write_head,
)


class NerTask:
    """Span NER with a GlobalPointer / Efficient GlobalPointer head on a shared encoder (a
    :class:`nlptool.core.tasks.Task`).

    Examples are :class:`Window` objects (:meth:`windows`: texts cut into windows of ``max_length`` tokens with
    their gold token spans); a batch is their padded ids and mask plus the batch's dense ``(B, H, L, L)`` 0/1 gold
    tensor (:func:`collate_windows`); the loss runs the encoder's transformer, scores every span with :attr:`head`
    and applies Su's multilabel categorical cross-entropy over all spans
    (:func:`nlptool.core.globalpointer.global_pointer_loss`). Evaluation is exact-span precision/recall/F1 on dev
    texts (:func:`evaluate_examples`; micro F1 is the main metric). :meth:`save` writes ``ner_head.safetensors``
    and ``ner_config.json``; with the encoder's ``save_pretrained`` folder (:meth:`TokenEncoder.save`) that is a
    folder :meth:`SpanNerModel.load` reads.

    Args:
        encoder: the shared encoder (a :class:`TokenEncoder`, or anything with the transformer as ``model`` and a
            fast ``tokenizer``): its hidden size sizes the head, its tokenizer makes windows, its ``name`` is
            recorded as ``base_model``. It is not a submodule of the task.
        labels: the entity types, in head order.
        head: ``egp`` (Efficient GlobalPointer) or ``gp`` (GlobalPointer).
        head_size: the head's query/key size ``d`` (even: RoPE rotates pairs).
        max_length: tokens per window (special tokens included), in training and in the saved model.
        stride: tokens shared by consecutive windows of a long text (default: :func:`default_stride`).
        max_span_tokens: the span cap of evaluation and of the saved model's decoding; :func:`fit` sets it to the
            training data's longest entity.
        eval_batch_size: windows per forward pass in :meth:`evaluate`.
        eval_device: where :meth:`evaluate` runs; ``None``: where the encoder is.

    Raises:
        NlptoolError: an unknown head, no labels, an odd head size.
    """

    name = "ner"
    metric = "f1"
    greater_is_better = True

    def __init__(
        self,
        encoder: Any,
        labels: Sequence[str],
        *,
        head: str = "egp",
        head_size: int = 64,
        max_length: int = 128,
        stride: int | None = None,
        max_span_tokens: int | None = None,
        eval_batch_size: int = 64,
        eval_device: str | None = None,
    ) -> None:
        if head not in HEADS:
            raise NlptoolError(f"unknown head '{head}'; choose one of {', '.join(HEADS)}")
        if not labels:
            raise NlptoolError("no entity labels: the training data has no entities")
        if head_size < 2 or head_size % 2:
            raise NlptoolError(f"head size {head_size} must be even and at least 2 (RoPE rotates pairs)")
        self.labels = list(labels)
        self.head_kind = head
        self.head_size = head_size
        self.max_length = max_length
        self.stride = default_stride(max_length) if stride is None else stride
        self.max_span_tokens = max_span_tokens
        self.eval_batch_size = eval_batch_size
        self.eval_device = eval_device
        self.tokenizer = encoder.tokenizer
        self.base_model: str | None = getattr(encoder, "name", None)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.head: torch.nn.Module = make_head(head, encoder, len(self.labels), head_size)

    @property
    def label2id(self) -> dict[str, int]:
        return {lab: i for i, lab in enumerate(self.labels)}

    def windows(self, examples: Sequence[NerExample]) -> tuple[list[Window], AlignmentStats]:
        """The training examples of ``examples``: windows with gold spans (:func:`encode_windows`) and what
        alignment and windowing did (report :attr:`AlignmentStats.dropped` entities: they are not trained on)."""
        return encode_windows(
            self.tokenizer, examples, max_length=self.max_length, stride=self.stride, label2id=self.label2id
        )

    @staticmethod
    def lengths(windows: Sequence[Window]) -> list[int]:
        """Tokens per window, for the loop's ``group_by_length``."""
        return [len(w) for w in windows]

    def collate(self, windows: list[Window]) -> dict[str, torch.Tensor]:
        """``{"input_ids", "attention_mask"}`` ``(B, L)`` and ``"labels"`` ``(B, H, L, L)`` uint8."""
        return collate_windows(windows, len(self.labels), self.pad_id)

    def logits(self, encoder: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, H, L, L)`` span scores of :attr:`head` on ``encoder``'s token states (padding and ``i > j``:
        a large negative)."""
        return self.head(token_states(encoder, input_ids, attention_mask), attention_mask)

    def loss(self, encoder: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """:func:`~nlptool.core.globalpointer.global_pointer_loss` of :meth:`logits` against ``batch["labels"]``."""
        from nlptool.core.globalpointer import global_pointer_loss

        return global_pointer_loss(self.logits(encoder, batch["input_ids"], batch["attention_mask"]), batch["labels"])

    def model(self, encoder: Any) -> SpanNerModel:
        """A :class:`SpanNerModel` over ``encoder``'s transformer and this task's head (shared, not copied), in
        ``encoder``'s train/eval mode: what :func:`predict_spans` and :func:`evaluate_examples` take."""
        transformer = _transformer(encoder)
        net = SpanNerModel(
            transformer,
            self.labels,
            head=self.head_kind,
            head_size=self.head_size,
            max_length=self.max_length,
            stride=self.stride,
            head_module=self.head,
        )
        return net.train(transformer.training)

    def evaluate(self, encoder: Any, dev: Sequence[NerExample]) -> dict[str, float]:
        """``{"f1", "precision", "recall"}`` (micro, exact spans) on ``dev`` (:func:`evaluate_examples`)."""
        device = self.eval_device or str(next(self.head.parameters()).device)
        result = evaluate_examples(
            self.model(encoder),
            self.tokenizer,
            dev,
            batch_size=self.eval_batch_size,
            device=device,
            max_span_tokens=self.max_span_tokens,
        )
        micro = result["metrics"]["micro"]
        return {"f1": micro["f1"], "precision": micro["precision"], "recall": micro["recall"]}

    def head_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.head.parameters())

    def config(self) -> dict[str, Any]:
        """What ``ner_config.json`` holds: :func:`head_settings`, ``base_model`` and ``max_span_tokens``."""
        settings = head_settings(self.labels, self.head_kind, self.head_size, self.max_length, self.stride)
        return {**settings, "base_model": self.base_model, "max_span_tokens": self.max_span_tokens}

    def save(self, folder: Path) -> None:
        """Write ``ner_head.safetensors`` and ``ner_config.json`` into ``folder`` (the encoder is saved apart)."""
        write_head(folder, self.head, self.config())


#: The head's learning rate is the encoder's times this by default (``ner train --head-lr-scale``; BENCHMARKS.md).
DEFAULT_HEAD_LR_SCALE = 30.0


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        metrics: ``train_texts``, ``train_windows``, ``labels``, ``steps``, ``train_seconds``, ``windows_per_s``,
            ``alignment`` (:func:`stats_dict`); with dev texts (and at least one evaluation) also ``dev_texts``,
            ``dev_f1``, ``dev_precision``, ``dev_recall`` (of the best evaluation) and ``best_step``. The schema of
            ``ner train``'s ``metrics.json``.
        evaluations: the loop's ``eval`` events (``step``, ``metrics``: ``f1``, ``precision``, ``recall``).
        best_step: the step of the best dev F1, or ``None``.
        model_dir: the saved model folder (loads with :meth:`SpanNerModel.load`), or ``None``.
        alignment: what tokenization did to the training data (:class:`AlignmentStats`).
        fit: the task-level :class:`~nlptool.core.tasks.TaskFit` (the loop's full ``TrainResult`` included).
        task: the :class:`NerTask` that was trained (its ``head`` holds the final weights, not the best).
    """

    metrics: dict[str, Any]
    evaluations: list[dict[str, Any]]
    best_step: int | None
    model_dir: Path | None
    alignment: AlignmentStats
    fit: Any = field(repr=False)
    task: NerTask = field(repr=False)


def fit(
    encoder: Any,
    train: Sequence[NerExample],
    out_dir: str | Path | None = None,
    *,
    dev: Sequence[NerExample] | None = None,
    head: str = "egp",
    head_size: int = 64,
    max_length: int = 128,
    stride: int | None = None,
    head_lr_scale: float = DEFAULT_HEAD_LR_SCALE,
    config: Any = None,
    task: NerTask | None = None,
    windows: tuple[list[Window], AlignmentStats] | None = None,
    on_progress: Any = None,
) -> FitResult:
    """Train a GlobalPointer NER model on ``train`` and save it into ``out_dir``.

    Runs the shared loop (:func:`nlptool.core.train.train`: AdamW, warmup, checkpoints in ``out_dir/training``,
    torchrun) through :func:`nlptool.core.tasks.fit_task`, with the head's learning rate ``lr × head_lr_scale``.
    With ``dev``, span F1 is measured at every evaluation and the model folder holds the best dev checkpoint. The
    span cap of evaluation and of the saved model is the training data's longest entity in tokens. ``nlptool ner
    train`` is this function plus option parsing and output. The head is initialised when the task is built (here,
    when ``task`` is not given): seed torch before (:func:`nlptool.core.seeding.seed_everything`) for a reproducible
    run.

    Args:
        encoder: a :class:`TokenEncoder` (trained in place).
        train: training texts (:func:`read_ner_jsonl`); their labels are the model's (:func:`label_set`).
        out_dir: the model folder, or ``None`` to write nothing.
        dev: dev texts (labels among the training labels), or ``None``.
        head, head_size, max_length, stride: the :class:`NerTask`'s (when ``task`` is not given).
        head_lr_scale: factor on ``config.lr`` for the head's parameters (``"head."``; 1: the same lr).
        config: the loop's :class:`~nlptool.core.train.TrainConfig` (default: ``TrainConfig()``); ``output_dir``,
            ``metric``, ``greater_is_better`` and the head's ``lr_scale`` are set here.
        task: a ready :class:`NerTask` (then its settings are used and the head/size/length arguments ignored).
        windows: ``task.windows(train)`` when the caller has already computed it (saves tokenizing twice).
        on_progress: the loop's progress callback (rank 0).

    Returns:
        A :class:`FitResult`; under torchrun, on ranks other than 0 with ``model_dir`` ``None``.

    Raises:
        NlptoolError: no entities in ``train``, a dev label unknown to the training data, the loop's errors.
    """
    import dataclasses

    from nlptool.core.tasks import fit_task
    from nlptool.core.train import TrainConfig

    if task is None:
        task = NerTask(encoder, label_set(train), head=head, head_size=head_size, max_length=max_length, stride=stride)
    if dev is not None:
        check_labels(dev, task.labels, None, "the training data")
    examples, stats = windows if windows is not None else task.windows(train)
    task.max_span_tokens = longest_entity_tokens(examples)
    config = config if config is not None else TrainConfig()
    config = dataclasses.replace(config, lr_scale={"head.": head_lr_scale} if head_lr_scale != 1.0 else None)
    done = fit_task(
        encoder,
        task,
        examples,
        config,
        dev=dev,
        out_dir=out_dir,
        lengths=task.lengths(examples),
        on_progress=on_progress,
        evaluate_before=False,
    )
    result = done.train_result
    evals = [e for e in result.history if e.get("event") == "eval"]
    metrics: dict[str, Any] = {
        "train_texts": len(train),
        "train_windows": len(examples),
        "labels": task.labels,
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "windows_per_s": result.examples_per_s,
        "alignment": stats_dict(stats),
    }
    if dev is not None and evals:
        best = max(evals, key=lambda e: e["metrics"]["f1"])
        metrics.update(
            dev_texts=len(dev),
            dev_f1=best["metrics"]["f1"],
            dev_precision=best["metrics"]["precision"],
            dev_recall=best["metrics"]["recall"],
            best_step=result.best_step,
        )
    return FitResult(metrics, evals, result.best_step, done.model_dir, stats, done, task)

r"""Text classification on a shared sentence encoder: pooled embedding → dropout → linear → softmax cross-entropy.

For a text with pooled embedding :math:`h \in \mathbb{R}^d` (the :class:`~nlptool.core.encoder.SentenceEncoder`'s
own pooling: mean over tokens by default) and ``K`` classes, the head computes the logits

.. math::

    z = W\,\mathrm{dropout}(h) + b, \qquad W \in \mathbb{R}^{K \times d},\; b \in \mathbb{R}^K,

the class probabilities :math:`p = \mathrm{softmax}(z)` and, for a batch with gold classes :math:`y_i`, the mean
cross-entropy

.. math::

    L = -\frac{1}{n}\sum_{i=1}^{n} \log p_{i, y_i} = \frac{1}{n}\sum_i \Bigl(\log\sum_k e^{z_{ik}} - z_{i y_i}\Bigr)

(:func:`classification_loss`). This is the fine-tuning recipe of BERT for single-sentence tasks (Devlin et al.
2019, §4.1), with the encoder's pooled embedding in place of BERT's ``[CLS]`` pooler, as in Sentence-BERT
(Reimers & Gurevych 2019). The probabilities are what CAN (:mod:`nlptool.core.can`, Jia et al. 2021; Su's post
https://kexue.fm/archives/8728) re-calibrates: ``nlptool classify predict`` writes them as ``probs`` in label order,
so its output pipes into ``nlptool calibrate-can``.

Neighbours: :class:`nlptool.core.cosent.SoftmaxHead` is the same linear + cross-entropy over a *pair*'s features
:math:`[u; v; |u-v|]`, a training device thrown away after training; here the head is the product and is saved.
Su's multi-task posts (https://kexue.fm/archives/8870, 8896, 8907) train this task beside CoSENT and NER on one
encoder: :class:`ClassifyTask` is the :class:`nlptool.core.tasks.Task` a multi-task trainer composes.

Data
----
:func:`read_classify` reads JSONL/CSV/TSV (or ``-``) with a text column and a label column (``text`` and ``label``
by default); labels are strings (a JSON number such as ``1`` becomes ``"1"``). A missing column, an empty text or a
missing label is an error naming the file, line and field; nothing is skipped. The model's classes are the training
labels sorted (:meth:`ClassifyData.label_set`), and that order is the order of ``probs`` everywhere.

Training (the task layer)
-------------------------
- :class:`ClassifyTask`: examples ``(text, label_id)``, a batch is the tokenized texts and the int64 class ids, the
  loss is :func:`classification_loss` of :attr:`ClassifyTask.head` on ``encoder(features)``, evaluation is accuracy
  (the main metric) and macro-F1; :meth:`ClassifyTask.save` writes ``classify_head.safetensors`` and
  ``classify_config.json`` beside the encoder's folder (whose ``nlptool_encoder.json`` records its pooling).
- :func:`fit` trains a :class:`~nlptool.core.encoder.SentenceEncoder` and a fresh head through the shared loop
  (:func:`nlptool.core.tasks.fit_task`; the head at ``lr × head_lr_scale``) and returns a :class:`FitResult`;
  ``nlptool classify train`` is a thin wrapper over it.
- :func:`load_classifier` reads a saved folder back, :func:`predict_proba` gives the ``(N, K)`` probabilities and
  :func:`evaluate_classifier` accuracy, macro-F1, per-class P/R/F1 and the confusion matrix.

Example (from Python)::

    from nlptool.core.classify import fit, load_classifier, predict_proba, read_classify
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.seeding import seed_everything
    from nlptool.core.train import TrainConfig

    seed_everything(0)  # before the head is built, as `classify train --seed 0`
    encoder = SentenceEncoder.load(None)  # the bundled all-MiniLM-L6-v2
    result = fit(encoder, read_classify("train.jsonl"), "clf", dev=read_classify("dev.jsonl"),
                 config=TrainConfig(epochs=3, batch_size=32, lr=5e-5))
    encoder, task = load_classifier(result.model_dir)
    probs = predict_proba(encoder, task, ["a gripping, funny film"])   # (1, K), columns in task.labels order

References:
    Jacob Devlin, Ming-Wei Chang, Kenton Lee, Kristina Toutanova, "BERT: Pre-training of Deep Bidirectional
    Transformers for Language Understanding", NAACL 2019. https://arxiv.org/abs/1810.04805
    Nils Reimers, Iryna Gurevych, "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks", EMNLP 2019.
    https://arxiv.org/abs/1908.10084
    Su Jianlin, "多任务学习漫谈（二）：行梯度之事", 2022. https://kexue.fm/archives/8896
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nlptool.core.errors import InputError, NlptoolError

__all__ = [
    "ClassifyData",
    "read_classify",
    "classification_loss",
    "ClassifyHead",
    "ClassifyTask",
    "predict_proba",
    "load_classifier",
    "evaluate_classifier",
    "check_labels",
    "FitResult",
    "fit",
    "CLASSIFY_CONFIG",
    "CLASSIFY_HEAD_WEIGHTS",
    "DEFAULT_HEAD_LR_SCALE",
]

CLASSIFY_CONFIG = "classify_config.json"
CLASSIFY_HEAD_WEIGHTS = "classify_head.safetensors"
_FORMAT = "nlptool-classify"
_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class ClassifyData:
    """Texts and their string labels read from one file.

    Attributes:
        path: the file (``-`` for stdin), as errors name it.
        texts, labels: one entry per row, in file order.
        lines: the 1-based line each row ends on.
        columns: ``(text_col, label_col)``.
    """

    path: str
    texts: list[str]
    labels: list[str]
    lines: list[int]
    columns: tuple[str, str] = ("text", "label")

    def __len__(self) -> int:
        return len(self.texts)

    def label_set(self) -> list[str]:
        """The distinct labels, sorted: the class order of a model trained on this data."""
        return sorted(set(self.labels))

    def counts(self, labels: Sequence[str]) -> np.ndarray:
        """How often each of ``labels`` occurs (int64, in that order): a CAN prior is ``counts / counts.sum()``."""
        index = {lab: i for i, lab in enumerate(labels)}
        out = np.zeros(len(labels), dtype=np.int64)
        for lab in self.labels:
            if lab in index:
                out[index[lab]] += 1
        return out


def _label_text(value: Any, *, path: str, line: int, col: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError("missing label; give every row a class label", path=path, line=line, field=col)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        shown = json.dumps(value, ensure_ascii=False)[:40]
        raise InputError(f"expected a label (a string or an integer), found {shown}", path=path, line=line, field=col)
    return value.strip() if isinstance(value, str) else str(value)


def read_classify(
    path: str | os.PathLike,
    *,
    text_col: str = "text",
    label_col: str = "label",
    format: str | None = None,
    require_labels: bool = True,
) -> ClassifyData:
    """Read a classification file: JSONL, CSV or TSV (with a header), or ``-`` for stdin.

    Args:
        path: the file, or ``-``.
        text_col: the column/field holding the text.
        label_col: the column/field holding the class label (strings; JSON integers become their decimal string).
        format: ``jsonl``, ``csv``, ``tsv`` or ``None`` (by extension, else sniffed; see :mod:`nlptool.core.io`).
        require_labels: ``False`` to read texts only (labels then ``""`` where absent).

    Returns:
        :class:`ClassifyData` (possibly empty: callers decide whether no rows is an error).

    Raises:
        InputError: a missing text or label column (file, line, field), an empty or non-string text, a missing
            or non-scalar label; malformed JSON/CSV (from the reader).
    """
    from nlptool.core.io import read_records

    texts: list[str] = []
    labels: list[str] = []
    lines: list[int] = []
    name = str(path)
    with read_records(name, format) as reader:
        shown = reader.path
        for record in reader:
            data = record.data
            if text_col not in data:
                present = ", ".join(list(data)[:12]) or "none"
                raise InputError(
                    f"missing text column (fields present: {present}); name the text field with --text-col",
                    path=shown,
                    line=record.line,
                    field=text_col,
                )
            text = data[text_col]
            if not isinstance(text, str):
                raise InputError(
                    f"expected text, found {type(text).__name__}", path=shown, line=record.line, field=text_col
                )
            if not text.strip():
                raise InputError(
                    "empty text; remove the row or fill it in", path=shown, line=record.line, field=text_col
                )
            if label_col not in data:
                if require_labels:
                    present = ", ".join(list(data)[:12]) or "none"
                    raise InputError(
                        f"missing label column (fields present: {present}); name the label field with --label-col",
                        path=shown,
                        line=record.line,
                        field=label_col,
                    )
                label = ""
            else:
                label = _label_text(data[label_col], path=shown, line=record.line, col=label_col)
            texts.append(text)
            labels.append(label)
            lines.append(record.line)
    return ClassifyData(name, texts, labels, lines, (text_col, label_col))


def check_labels(data: ClassifyData, labels: Sequence[str], what: str) -> None:
    """Raise :class:`InputError` (file, line, field) at the first row of ``data`` whose label is not one of
    ``labels`` (those of ``what``: "the training data", "the model clf/")."""
    known = set(labels)
    for lab, line in zip(data.labels, data.lines, strict=True):
        if lab not in known:
            shown = ", ".join(labels) if len(labels) <= 20 else ", ".join(labels[:20]) + ", ..."
            raise InputError(
                f"label '{lab}' is unknown to {what} (labels: {shown}); remove the row or fix the label",
                path=data.path,
                line=line,
                field=data.columns[1],
            )


# --------------------------------------------------------------------------------------------------------------------
# The loss and the head


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    r"""Mean softmax cross-entropy: :math:`\frac1n \sum_i (\operatorname{logsumexp}_k z_{ik} - z_{i y_i})`.

    Args:
        logits: ``(n, K)`` class scores.
        labels: ``(n,)`` int64 class ids in ``[0, K)``.

    Returns:
        The scalar mean over the batch (computed in float32 at least; equal to
        ``torch.nn.functional.cross_entropy(logits, labels)``).
    """
    z = logits.float()
    log_probs = z - torch.logsumexp(z, dim=-1, keepdim=True)
    return -log_probs.gather(1, labels.long().view(-1, 1)).mean()


class ClassifyHead(nn.Module):
    """``z = W dropout(h) + b``: dropout then a linear layer ``d → K`` on the pooled embedding ``h``.

    Args:
        dim: the embedding size ``d`` (the encoder's ``dim``).
        num_labels: the number of classes ``K``.
        dropout: the dropout probability on ``h`` in training (0.1, BERT's classifier dropout).

    Parameters are ``linear.weight`` ``(K, d)`` and ``linear.bias`` ``(K,)`` (PyTorch's default initialisation).
    """

    def __init__(self, dim: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(dim, num_labels)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.linear(self.dropout(pooled))


# --------------------------------------------------------------------------------------------------------------------
# The task


class ClassifyTask:
    """Text classification on a shared :class:`~nlptool.core.encoder.SentenceEncoder` (a
    :class:`nlptool.core.tasks.Task`).

    Examples are ``(text, label_id)`` (:meth:`examples`); a batch is the tokenized texts (the encoder's
    ``tokenize``: padded to the batch's longest, cut at its ``max_length``) and the int64 class ids; the loss is
    :func:`classification_loss` of :attr:`head` (:class:`ClassifyHead`) on ``encoder(features)``, the encoder's
    pooled embeddings. Evaluation is accuracy (the main metric) and macro-F1 on dev data (:func:`predict_proba`,
    argmax). :meth:`save` writes ``classify_head.safetensors`` and ``classify_config.json``; with the encoder's
    folder (:meth:`SentenceEncoder.save`, which records its pooling and max length) that is a folder
    :func:`load_classifier` reads.

    Args:
        encoder: the shared encoder: its ``dim`` sizes the head, its ``tokenize`` collates, its ``name`` is recorded
            as ``base_model``. It is not a submodule of the task.
        labels: the class names, in head order (e.g. :meth:`ClassifyData.label_set` of the training data).
        dropout: dropout on the pooled embedding in training.
        eval_batch_size: texts per forward pass in :meth:`evaluate`.
        eval_device: where :meth:`evaluate` runs; ``None``: where the encoder is.

    Raises:
        NlptoolError: fewer than 2 labels, duplicate labels, a dropout outside [0, 1).
    """

    name = "classify"
    metric = "accuracy"
    greater_is_better = True

    def __init__(
        self,
        encoder: Any,
        labels: Sequence[str],
        *,
        dropout: float = 0.1,
        eval_batch_size: int = 64,
        eval_device: str | None = None,
    ) -> None:
        labels = [str(lab) for lab in labels]
        if len(labels) < 2:
            raise NlptoolError(
                f"a classifier needs at least 2 classes, the training data has {len(labels)} "
                f"({', '.join(labels) or 'none'}); give data with at least two different labels"
            )
        if len(set(labels)) != len(labels):
            raise NlptoolError(f"duplicate class labels in {labels}; give each class once")
        if not 0.0 <= float(dropout) < 1.0:
            raise NlptoolError(f"dropout {dropout} is not in [0, 1)")
        self.labels = labels
        self.dropout = float(dropout)
        self.eval_batch_size = eval_batch_size
        self.eval_device = eval_device
        self.base_model: str | None = getattr(encoder, "name", None)
        self._tokenize = encoder.tokenize
        self.head: nn.Module = ClassifyHead(encoder.dim, len(labels), self.dropout)

    @property
    def label2id(self) -> dict[str, int]:
        return {lab: i for i, lab in enumerate(self.labels)}

    def examples(self, data: ClassifyData) -> list[tuple[str, int]]:
        """``(text, label_id)`` per row; a label unknown to :attr:`labels` is an :class:`InputError` (file:line)."""
        check_labels(data, self.labels, "the classifier")
        index = self.label2id
        return [(text, index[lab]) for text, lab in zip(data.texts, data.labels, strict=True)]

    @staticmethod
    def lengths(examples: Sequence[tuple[str, int]]) -> list[int]:
        """Characters per text, for the loop's ``group_by_length``."""
        return [len(text) for text, _ in examples]

    def collate(self, examples: list[tuple[str, int]]) -> tuple[dict[str, Tensor], Tensor]:
        """``(features of the n texts, labels (n,) int64)``."""
        features = self._tokenize([e[0] for e in examples])
        return features, torch.tensor([e[1] for e in examples], dtype=torch.long)

    def logits(self, encoder: nn.Module, features: dict[str, Tensor]) -> Tensor:
        """``(n, K)`` logits of :attr:`head` on ``encoder``'s pooled embeddings."""
        return self.head(encoder(features))

    def loss(self, encoder: nn.Module, batch: tuple[dict[str, Tensor], Tensor]) -> Tensor:
        """:func:`classification_loss` of :meth:`logits` against the batch's class ids."""
        features, labels = batch
        logits = self.logits(encoder, features)
        return classification_loss(logits, labels.to(logits.device))

    def evaluate(self, encoder: Any, dev: ClassifyData) -> dict[str, float]:
        """``{"accuracy", "macro_f1"}`` of the argmax prediction on ``dev`` (labels among :attr:`labels`)."""
        from nlptool.core.metrics import accuracy, macro_f1

        gold = np.asarray([label for _, label in self.examples(dev)], dtype=np.int64)
        probs = predict_proba(encoder, self, dev.texts, batch_size=self.eval_batch_size, device=self.eval_device)
        pred = probs.argmax(axis=1)
        return {"accuracy": accuracy(gold, pred), "macro_f1": macro_f1(gold, pred, len(self.labels))}

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def config(self) -> dict[str, Any]:
        """What ``classify_config.json`` holds: format, labels (in order), base model, dropout, embedding size."""
        linear = self.head.linear  # type: ignore[union-attr]
        return {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "labels": list(self.labels),
            "base_model": self.base_model,
            "dropout": self.dropout,
            "dim": int(linear.in_features),
        }

    def save(self, folder: Path) -> None:
        """Write ``classify_head.safetensors`` and ``classify_config.json`` into ``folder`` (the encoder is saved
        apart, by its own ``save``)."""
        from safetensors.torch import save_file

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, str(out / CLASSIFY_HEAD_WEIGHTS))
        text = json.dumps(self.config(), indent=1, ensure_ascii=False) + "\n"
        (out / CLASSIFY_CONFIG).write_text(text, encoding="utf-8")


def _head_of(task_or_head: Any) -> nn.Module:
    """The head module: ``task_or_head`` itself when it is a module, else its ``head``."""
    return task_or_head if isinstance(task_or_head, nn.Module) else task_or_head.head


# --------------------------------------------------------------------------------------------------------------------
# Prediction, loading, evaluation


def predict_proba(
    encoder: Any,
    task_or_head: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Class probabilities ``softmax(head(encoder(text)))``: a float64 array ``(len(texts), K)``, rows in input
    order, columns in label order (``task.labels``).

    Texts are batched by token count (the encoder's length-sorted batching: less padding) and run without gradients
    and with dropout off; the train/eval modes of the encoder and the head are restored afterwards. The softmax is
    taken in float64, so each row sums to 1 within 1e-12.

    Args:
        encoder: a :class:`~nlptool.core.encoder.SentenceEncoder`.
        task_or_head: a :class:`ClassifyTask` (its ``head`` is used) or the head module itself.
        texts: the texts.
        batch_size: texts per forward pass.
        device: run there (the encoder and the head are moved to it and stay there); ``None``: where they are.
    """
    if isinstance(texts, str):
        raise NlptoolError("predict_proba expects a sequence of texts, not a single string; wrap it in a list")
    head = _head_of(task_or_head)
    if device is not None:
        encoder.to(device)
        head.to(device)
    items = list(texts)
    k = int(head.linear.out_features) if hasattr(head, "linear") else int(head.out_features)
    out = np.zeros((len(items), k), dtype=np.float64)
    if not items:
        return out
    # the pooled embeddings as the encoder's own inference entry point gives them (no gradients, dropout off, batches
    # sorted by token count, input order back), then the head
    emb = encoder.encode(items, batch_size=batch_size)
    was_training = head.training
    head.eval()
    try:
        with torch.inference_mode():
            head_device = next(head.parameters()).device
            logits = head(torch.from_numpy(emb).to(head_device))
            out[:] = torch.softmax(logits.double(), dim=-1).cpu().numpy()
    finally:
        head.train(was_training)
    return out


def load_classifier(path: str | os.PathLike) -> tuple[Any, ClassifyTask]:
    """Load a folder written by ``classify train`` (or :func:`fit`): ``(encoder, task)``, both in eval mode.

    The encoder is :meth:`SentenceEncoder.load` of the folder (its pooling and max length as saved); the task's head
    holds the trained weights and ``task.labels`` the class order. A folder of another kind (a sentence encoder, an
    NER model ...) is refused with one line that says what it is; a damaged or incomplete folder with a line that
    names the file (:mod:`nlptool.core.models`).
    """
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.models import CLASSIFY, check_model_folder, damaged, load_safetensors, read_json_file

    folder = check_model_folder(
        path, accept={CLASSIFY}, role="a classifier folder", hint="train one with 'nlptool classify train'"
    )
    cfg_path = folder / CLASSIFY_CONFIG
    if not cfg_path.is_file():
        raise NlptoolError(
            f"{folder} has no {CLASSIFY_CONFIG}, so the classifier folder is incomplete; retrain it with "
            "'nlptool classify train'"
        )
    cfg = read_json_file(cfg_path)
    if cfg.get("format") != _FORMAT:
        raise damaged(cfg_path, f"format {cfg.get('format')!r}, not '{_FORMAT}'")
    labels = cfg.get("labels")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise damaged(cfg_path, "'labels' is not a list of at least 2 strings")
    dropout = cfg.get("dropout", 0.1)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise damaged(cfg_path, f"'dropout' is {dropout!r}, not a number in [0, 1)")
    weights = folder / CLASSIFY_HEAD_WEIGHTS
    state = load_safetensors(weights)  # before the encoder: a damaged folder fails fast
    encoder = SentenceEncoder.load(str(folder))
    task = ClassifyTask(encoder, labels, dropout=float(dropout))
    task.base_model = cfg.get("base_model")
    try:
        missing, unexpected = task.head.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that do not fit (another encoder size or label count)
        raise damaged(weights, str(exc).strip().splitlines()[-1].strip()[:160]) from None
    if missing or unexpected:
        raise damaged(
            weights, f"it does not match a {len(labels)}-class head: missing {missing}, unexpected {unexpected}"
        )
    encoder.eval()
    task.head.eval()
    return encoder, task


def evaluate_classifier(
    encoder: Any,
    task: ClassifyTask,
    data: ClassifyData,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix of the argmax prediction.

    Returns:
        ``{"metrics": {...}, "probs": (N, K) float64}``; ``metrics`` holds ``texts``, ``labels`` (the class order),
        ``accuracy``, ``macro_f1``, ``per_class`` (label → ``precision``, ``recall``, ``f1``, ``support``,
        ``predicted``; an undefined ratio is 0, as scikit-learn's ``zero_division=0``), ``confusion`` (a K×K list
        of lists: rows gold, columns predicted, both in label order), ``texts_per_s``.

    Raises:
        InputError: a gold label unknown to the model (file, line, field).
    """
    import time

    from nlptool.core.metrics import accuracy, confusion_matrix, macro_f1

    gold = np.asarray([label for _, label in task.examples(data)], dtype=np.int64)
    t0 = time.perf_counter()
    probs = predict_proba(encoder, task, data.texts, batch_size=batch_size, device=device)
    seconds = time.perf_counter() - t0
    pred = probs.argmax(axis=1)
    k = len(task.labels)
    cm = confusion_matrix(gold, pred, k)
    per_class: dict[str, dict[str, float]] = {}
    for i, label in enumerate(task.labels):
        tp, predicted, support = int(cm[i, i]), int(cm[:, i].sum()), int(cm[i, :].sum())
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        per_class[label] = {"precision": p, "recall": r, "f1": f1, "support": support, "predicted": predicted}
    metrics: dict[str, Any] = {
        "texts": len(data),
        "labels": list(task.labels),
        "accuracy": accuracy(gold, pred),
        "macro_f1": macro_f1(gold, pred, k),
        "per_class": per_class,
        "confusion": cm.tolist(),
        "texts_per_s": len(data) / seconds if seconds > 0 else 0.0,
    }
    return {"metrics": metrics, "probs": probs}


# --------------------------------------------------------------------------------------------------------------------
# fit

#: The head's learning rate is the encoder's times this by default (``classify train --head-lr-scale``): a fresh
#: linear layer on a pre-trained encoder learns slowly at the encoder's rate on short budgets (measured for NER's
#: head, BENCHMARKS.md); for this head 10 is a prior choice, not yet tuned (the AG News benchmark has a run at 1).
DEFAULT_HEAD_LR_SCALE = 10.0


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        metrics: ``train_texts``, ``labels`` (the class order), ``label_counts`` (training rows per class, in that
            order), ``steps``, ``train_seconds``, ``texts_per_s``; with dev data (and at least one evaluation) also
            ``dev_texts``, ``dev_accuracy_before``, ``dev_accuracy``, ``dev_macro_f1`` (of the saved model, i.e.
            the best evaluation) and ``best_step``. The schema of ``classify train``'s ``metrics.json``.
        evaluations: the loop's ``eval`` events (``step``, ``metrics``: ``accuracy``, ``macro_f1``).
        best_step: the step of the best dev accuracy, or ``None``.
        model_dir: the saved model folder (loads with :func:`load_classifier`), or ``None``.
        fit: the task-level :class:`~nlptool.core.tasks.TaskFit` (the loop's full ``TrainResult`` included).
        task: the :class:`ClassifyTask` that was trained (its ``head`` holds the final weights, not the best).
    """

    metrics: dict[str, Any]
    evaluations: list[dict[str, Any]]
    best_step: int | None
    model_dir: Path | None
    fit: Any = field(repr=False)
    task: ClassifyTask = field(repr=False)


def fit(
    encoder: Any,
    train: ClassifyData,
    out_dir: str | Path | None = None,
    *,
    dev: ClassifyData | None = None,
    config: Any = None,
    head_lr_scale: float = DEFAULT_HEAD_LR_SCALE,
    dropout: float = 0.1,
    task: ClassifyTask | None = None,
    on_progress: Any = None,
) -> FitResult:
    """Train a text classifier (``encoder`` and a fresh :class:`ClassifyHead`) on ``train`` and save it into
    ``out_dir``.

    Runs the shared loop (:func:`nlptool.core.train.train`: AdamW, warmup, checkpoints in ``out_dir/training``,
    torchrun) through :func:`nlptool.core.tasks.fit_task`, with the head's learning rate ``lr × head_lr_scale``.
    With ``dev``, accuracy is measured before training and at every evaluation, and the model folder holds the
    checkpoint with the best dev accuracy. The head is initialised when the task is built (here, when ``task`` is not
    given): seed torch before (:func:`nlptool.core.seeding.seed_everything`) for a reproducible run. ``nlptool
    classify train`` is this function plus option parsing and output.

    Args:
        encoder: a :class:`~nlptool.core.encoder.SentenceEncoder` (trained in place).
        train: training rows (:func:`read_classify`); their sorted labels are the classes.
        out_dir: the model folder, or ``None`` to write nothing.
        dev: dev rows (labels among the training labels), or ``None``.
        config: the loop's :class:`~nlptool.core.train.TrainConfig` (default ``TrainConfig()``); ``output_dir``,
            ``metric``, ``greater_is_better`` and the head's ``lr_scale`` are set here.
        head_lr_scale: factor on ``config.lr`` for the head's parameters (``"head."``; 1: the same lr).
        dropout: the head's dropout (when ``task`` is not given).
        task: a ready :class:`ClassifyTask` (its labels and head are used).
        on_progress: the loop's progress callback (rank 0), plus the ``before`` event.

    Returns:
        A :class:`FitResult`; under torchrun, on ranks other than 0 with ``model_dir`` ``None``.

    Raises:
        NlptoolError: fewer than 2 classes, a dev label unknown to the training data, the loop's errors.
    """
    import dataclasses

    from nlptool.core.tasks import fit_task
    from nlptool.core.train import TrainConfig

    if task is None:
        task = ClassifyTask(encoder, train.label_set(), dropout=dropout)
    if dev is not None:
        check_labels(dev, task.labels, "the training data")
    examples = task.examples(train)
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
    )
    result = done.train_result
    evals = [e for e in result.history if e.get("event") == "eval"]
    metrics: dict[str, Any] = {
        "train_texts": len(train),
        "labels": list(task.labels),
        "label_counts": train.counts(task.labels).tolist(),
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "texts_per_s": result.examples_per_s,
    }
    if dev is not None and done.main and evals:
        best = (
            next((e for e in evals if e.get("step") == result.best_step), None)
            if result.best_step is not None
            else None
        ) or max(evals, key=lambda e: e["metrics"]["accuracy"])
        metrics.update(
            dev_texts=len(dev),
            dev_accuracy_before=done.before["accuracy"] if done.before else None,
            dev_accuracy=best["metrics"]["accuracy"],
            dev_macro_f1=best["metrics"]["macro_f1"],
            best_step=result.best_step,
        )
    return FitResult(metrics, evals, result.best_step, done.model_dir, done, task)

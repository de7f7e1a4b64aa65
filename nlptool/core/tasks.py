"""The task interface: what one trainable technique on a shared encoder provides, so that its single-task command,
a Python user and a multi-task trainer (one shared encoder, one head per task) all train it with the same code.

A *task* owns everything specific to its technique: how a list of its examples becomes a batch (:meth:`Task.collate`),
the loss of a batch given the shared encoder (:meth:`Task.loss`; the task's own trainable parameters, its *head*,
live in :attr:`Task.head`), how well an encoder does on dev data (:meth:`Task.evaluate`, with one *main metric*,
:attr:`Task.metric`, that selects the best model) and what to write next to the encoder when the model is saved
(:meth:`Task.save`). The encoder is whatever ``nn.Module`` the tasks share (for now a
:class:`nlptool.core.encoder.SentenceEncoder`); the loop, optimizer, schedule, checkpoints and torchrun are
:mod:`nlptool.core.train`'s.

:class:`TaskModel` puts the encoder and one task's head into one module (what DistributedDataParallel wraps and what
checkpoints hold) and :func:`fit_task` trains it: evaluate before training, :func:`nlptool.core.train.train`, then the
best dev checkpoint (or the final weights) as the model folder. A multi-task trainer composes several tasks the same
way: one ``TaskModel``-like module with ``heads = nn.ModuleDict({task.name: task.head})``, a batch per task and the
per-task losses combined by :mod:`nlptool.core.multitask`.

Implementations: :class:`nlptool.core.cosent.PairTask` (CoSENT, Sentence-BERT softmax, cosine-MSE on sentence
pairs), :class:`nlptool.core.ner.NerTask` (GlobalPointer / Efficient GlobalPointer span NER on token states) and
:class:`nlptool.core.nsp.NspTask` (NSP adaptation). Classification is to follow.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from nlptool.core.train import BEST_DIR, TrainConfig, TrainResult, is_main_process, train

__all__ = ["Task", "TaskModel", "TaskFit", "fit_task", "promote_best", "TRAINING_DIR"]

#: The folder inside a model folder that holds the training run (``checkpoint-last/``, ``best/``, the log).
TRAINING_DIR = "training"


@runtime_checkable
class Task(Protocol):
    """One technique trained on a shared encoder.

    Attributes:
        name: a short identifier (a key of a multi-task trainer's heads; ``"pairs"``, ``"ner"`` ...).
        metric: the key of :meth:`evaluate`'s result that selects the best model.
        greater_is_better: whether a larger :attr:`metric` is better.
        head: the task's own trainable parameters as a module (a classifier, a span head), or a module without
            parameters (a pure loss such as CoSENT), or ``None``.
    """

    name: str
    metric: str
    greater_is_better: bool
    head: nn.Module | None

    def collate(self, examples: list[Any]) -> Any:
        """A batch (tensors, or dicts/tuples of tensors, padded) from a list of this task's training examples."""
        ...

    def loss(self, encoder: nn.Module, batch: Any) -> Tensor:
        """The scalar loss of ``batch``: calls ``encoder``'s forward and the task's head. Under torchrun a
        batch-coupled loss gathers what it needs with :func:`nlptool.core.train.all_gather_with_grad`."""
        ...

    def evaluate(self, encoder: nn.Module, dev: Any) -> dict[str, float]:
        """Metrics of ``encoder`` (with this task's head) on dev data; must contain :attr:`metric`."""
        ...

    def head_parameters(self) -> list[nn.Parameter]:
        """The task's trainable parameters outside the encoder (empty for a parameter-free loss)."""
        ...

    def save(self, folder: Path) -> None:
        """Write what the task trained besides the encoder (its head, its config) into ``folder``; the caller saves
        the encoder. A head that is only a training device (Sentence-BERT's softmax classifier) writes nothing."""
        ...


class TaskModel(nn.Module):
    """The encoder and one task's head as one module; ``forward(batch)`` is the task's loss.

    The shared loop (and DistributedDataParallel) wrap this module, so the loss is computed inside its forward, as DDP
    requires. Parameters are registered as ``encoder.*`` and ``head.*``. A pooler layer that the encoder's pooling
    does not use (a :class:`~nlptool.core.encoder.SentenceEncoder` with pooling other than ``pooler``) is frozen: it
    would get no gradient, which DDP refuses, and no weight decay should move it.
    """

    def __init__(self, encoder: nn.Module, task: Task) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = task.head
        self.__dict__["_task"] = task  # not a submodule, so the head's parameters are registered once, as ``head``
        pooler = getattr(getattr(encoder, "model", None), "pooler", None)
        if getattr(encoder, "pooling", "pooler") != "pooler" and isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)

    @property
    def task(self) -> Task:
        return self._task

    def forward(self, batch: Any) -> Tensor:
        return self._task.loss(self.encoder, batch)


@dataclass
class TaskFit:
    """What :func:`fit_task` did.

    Attributes:
        train_result: the shared loop's :class:`~nlptool.core.train.TrainResult` (steps, best step, history, speed).
        before: dev metrics before training (rank 0 with dev data only), else ``None``.
        model_dir: the folder holding the saved model (``out_dir``), or ``None`` when nothing was written.
        from_best: whether ``model_dir`` holds the best dev checkpoint (else the final weights).
        main: whether this is the process that wrote the files (rank 0; always true without torchrun).
    """

    train_result: TrainResult
    before: dict[str, float] | None
    model_dir: Path | None
    from_best: bool
    main: bool


def fit_task(
    encoder: nn.Module,
    task: Task,
    examples: Sequence[Any],
    config: TrainConfig,
    *,
    dev: Any = None,
    out_dir: str | Path | None = None,
    lengths: Sequence[int] | None = None,
    on_progress: Callable[[dict], None] | None = None,
    evaluate_before: bool = True,
) -> TaskFit:
    """Train ``encoder`` with ``task`` on ``examples`` and save the model into ``out_dir``.

    With ``dev``, the task's :meth:`~Task.evaluate` runs before training (reported to ``on_progress`` as
    ``{"event": "before", "step": 0, "metrics": ...}``) and at every evaluation of the loop; the best model by
    :attr:`Task.metric` is kept in ``out_dir/training/best`` and becomes the model folder at the end
    (:func:`promote_best`). Without dev data (or when no evaluation gave a number) the final weights are saved. The
    encoder is saved with its own ``save(folder)`` and the task's :meth:`~Task.save` adds its part.

    Args:
        encoder: the shared encoder (trained in place; it must have ``save(folder)`` when ``out_dir`` is given).
        task: a :class:`Task`.
        examples: the task's training examples (what its ``collate`` takes).
        config: the loop's options; ``output_dir`` (``out_dir/training``), ``metric`` and ``greater_is_better``
            are set here.
        dev: dev data for :meth:`Task.evaluate`, or ``None``.
        out_dir: the model folder (created when missing), or ``None`` to write nothing (the encoder then keeps its
            final weights, not the best).
        lengths: per-example lengths for ``config.group_by_length``.
        on_progress: the loop's progress callback (rank 0), plus the ``before`` event.
        evaluate_before: whether to evaluate on ``dev`` before training (``TaskFit.before``); ``ner train``
            does not (its metrics have no "before" entry, and a dev pass costs time).

    Returns:
        A :class:`TaskFit`. Under torchrun every rank trains; only rank 0 evaluates and writes.
    """
    main = is_main_process()
    out = Path(out_dir) if out_dir is not None else None
    training_dir = out / TRAINING_DIR if out is not None else None
    model = TaskModel(encoder, task)
    before = None
    if dev is not None and main and evaluate_before:
        before = dict(task.evaluate(encoder, dev))
        if on_progress is not None:
            on_progress({"event": "before", "step": 0, "metrics": before})

    def evaluate(m: Any) -> Mapping[str, float]:
        return task.evaluate(m.encoder, dev)

    def save_best(m: Any, folder: Path) -> None:
        m.encoder.save(folder)
        m.task.save(folder)

    config = dataclasses.replace(
        config,
        output_dir=str(training_dir) if training_dir is not None else None,
        metric=task.metric if dev is not None else None,
        greater_is_better=task.greater_is_better,
    )
    result = train(
        model,
        examples,
        task.collate,
        _call_model,
        config,
        evaluate=evaluate if dev is not None else None,
        save_best=save_best if dev is not None else None,
        lengths=lengths,
        on_progress=on_progress,
    )
    from_best = False
    if main and out is not None:
        from_best = dev is not None and promote_best(out)
        if not from_best:
            encoder.save(out)  # type: ignore[operator]
            task.save(out)
    return TaskFit(result, before, out if main else None, from_best, main)


def _call_model(model: nn.Module, batch: Any) -> Tensor:
    return model(batch)


def promote_best(out_dir: str | Path) -> bool:
    """Move the contents of ``out_dir/training/best`` (the best dev checkpoint the loop kept) into ``out_dir``,
    replacing entries of the same name, and remove the empty ``best`` folder. Returns whether there was one."""
    out = Path(out_dir)
    best = out / TRAINING_DIR / BEST_DIR
    if not best.is_dir():
        return False
    for item in best.iterdir():
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        shutil.move(str(item), target)
    best.rmdir()
    return True

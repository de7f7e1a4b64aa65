r"""The shared training loop: every trainable command (train-cosent, ner, kg-qa, nsp-adapt) runs through :func:`train`.

The caller owns the *what*: the model, the examples, a ``collate`` function that turns a list of examples into a batch
(tensors, dicts/lists/tuples/dataclasses of tensors; dynamic padding belongs here), and ``compute_loss(model, batch)``
returning a scalar loss. The loop owns the *how*: batching and shuffling, AdamW with weight-decay groups, warmup and
the learning-rate schedule, gradient accumulation and clipping, mixed precision, evaluation and the best model,
resumable checkpoints, the training log, progress events, devices and multi-process (``torchrun``) training.
Core code never prints: progress goes to ``on_progress`` and the result is a :class:`TrainResult`.

Batches and steps
-----------------
Each epoch ``e`` draws a permutation of the examples from ``numpy.random.default_rng([seed, e])`` and cuts it, in
order, into *global batches* of ``batch_size`` examples; the last batch of an epoch may be smaller (it is kept). A
global batch is what one loss sees: it is the unit of one forward/backward pass summed over all processes, and the
pool of pairs for a batch-coupled loss such as CoSENT. An *optimizer step* consumes ``grad_accum`` consecutive global
batches (fewer for the last step of an epoch when the batch count is not a multiple of ``grad_accum``), so a step
sees ``batch_size * grad_accum`` examples. The gradient of a step is the example-weighted mean of its batch losses,

.. math::

    g = \nabla \sum_b \frac{n_b}{N} L_b, \qquad N = \sum_b n_b,

so for a loss that is a mean over examples, ``batch_size=8, grad_accum=2`` gives the same step as
``batch_size=16, grad_accum=1`` (up to float rounding). Steps per epoch are ``ceil(ceil(n / batch_size) /
grad_accum)``; ``steps``, ``eval_every``, ``checkpoint_every`` and ``log_every`` count optimizer steps.

With ``group_by_length`` and ``lengths``, each epoch's permutation is cut into mega-batches of ``50 * batch_size``
examples, each sorted by length (longest first) and cut into batches; the full batches are shuffled and the one
partial batch, if any, comes last. Every example still appears exactly once per epoch.

Learning rate
-------------
AdamW over two parameter groups (:func:`weight_decay_groups`: biases and normalisation weights get no decay). The lr
of optimizer step ``k = 1..T`` is ``lr * f(k)`` (:func:`lr_multiplier`), with ``W`` warmup steps (``warmup_steps``,
or ``ceil(warmup_ratio * T)``): a linear ramp ``f(k) = k / W`` for ``k <= W``, then

- ``linear``:   ``f(k) = (T + 1 - k) / (T + 1 - W)`` — down towards 0 at the virtual step ``T + 1``;
- ``cosine``:   ``f(k) = (1 + cos(pi * (k - W) / (T + 1 - W))) / 2``;
- ``constant``: ``f(k) = 1``.

No real step runs at lr 0. Gradients are clipped to ``max_grad_norm`` (global L2 norm) before each step. A loss that
is NaN or infinite stops the run with :class:`NlptoolError` before the weights are touched.

Distributed training
--------------------
Under ``torchrun --nproc_per_node P`` (``WORLD_SIZE > 1``) :func:`train` initialises the default process group (gloo
on CPU, NCCL on CUDA, unless one is already initialised), wraps the model in ``DistributedDataParallel`` and gives
each rank a contiguous slice of every global batch (the first ``n_b mod P`` ranks get one example more). ``batch_size``
stays the global batch, so a run over ``P`` processes follows the same global batches as one process and, for a model
without randomness (dropout), reaches the same weights up to float rounding. Each rank's loss is weighted by
``n_{b,r} * P / N`` before backward; DDP averages gradients over ranks, so the result is the single-process gradient
for both kinds of loss ``compute_loss`` may return:

1. a **mean over the examples of its slice** (MSE, cross-entropy): nothing more to do;
2. a **batch-coupled loss** (CoSENT compares every pair in the batch; in-batch negatives): gather the per-example
   tensors the loss needs with :func:`all_gather_with_grad` (scores and labels, in batch order) and compute the loss
   on the gathered tensors, exactly as one process would on the whole batch. Do **not** multiply by the world size:
   the backward of the gather sums the gradients of all ranks' (identical) losses, which cancels DDP's averaging.

   .. code-block:: python

       def compute_loss(model, batch):
           scores = all_gather_with_grad(model(batch["inputs"]))  # (n_b,), the whole global batch
           labels = all_gather_with_grad(batch["labels"])
           return cosent_loss(scores, labels)

A rank whose slice is empty (a final batch with fewer examples than processes) still runs a forward and backward, on
one example of the batch, with weight 0, so that DDP's collective calls stay matched; while it does,
:func:`all_gather_with_grad` contributes nothing from that rank, so gathered tensors hold exactly the batch.
``compute_loss`` must call the model's forward (``model(...)``): under DDP it receives the wrapper, and
:func:`unwrap_model` gives the module itself. Only rank 0 evaluates, writes files and reports progress; evaluation
results are broadcast so every rank returns the same :class:`TrainResult`. The process group is destroyed at the end
only if :func:`train` created it.

Checkpoints and resume
----------------------
With ``output_dir``, ``checkpoint-last/`` holds ``model.pt`` (the model's state_dict), ``training_state.pt``
(optimizer, scheduler, fp16 grad scaler, the RNG states of every rank) and ``trainer_state.json`` (step, epoch,
position within the epoch, best metric, history, config). It is written to a temporary folder and renamed into place,
so a crash never leaves a half-written checkpoint. ``resume=True`` continues from ``output_dir/checkpoint-last``
(``resume="path"`` from that folder) exactly where it stopped: same batches, schedule, RNG streams and history, so
``k`` steps, a crash and a resume to ``T`` give the same weights as ``T`` steps straight. ``train_log.jsonl`` gets one
JSON line per history event; a fresh run starts it anew, a resumed run rewrites it from the checkpoint's history.
A checkpoint is written at the end of every epoch and, with ``checkpoint_every=N`` (the CLI's ``--save-every``,
Hugging Face's ``save_steps``), also after every ``N``-th optimizer step, mid-epoch included: the state records the
position in the epoch's (seeded, hence reproducible) batch plan, so a resume skips exactly the batches already seen.
The caller may keep its own JSON-serialisable values with the checkpoints (``extra_state``, e.g. a metric measured
before training); a resumed run returns the checkpoint's in :attr:`TrainResult.extra_state`.

Gradient hooks
--------------
``train(gradient_hook=...)`` hands the gradient computation to a :class:`GradientHook` (the multi-task trainer's
per-task gradient combination, :mod:`nlptool.core.multitask.trainer`): the loop then calls ``hook.backward(model,
batch, weight, standin)`` for each micro-batch instead of ``compute_loss`` and its own backward, and
``hook.before_step()`` once per optimizer step, before clipping and the step; it does not wrap the model in DDP (the
hook averages over ranks) and keeps ``hook.state_dict()`` with the checkpoints. fp16 is refused with a hook.
``max_steps`` replaces ``epochs`` by an exact number of optimizer steps.

With ``report_to="tensorboard"`` the events of the training log also go to TensorBoard event files in
``output_dir/runs/`` (:mod:`nlptool.core.reporting`, which also defines the callback hooks ``train(callbacks=...)``
takes).

A fresh run (not a resume) that stops before its first checkpoint (an exception, Ctrl-C) leaves nothing behind in
``output_dir``: it removes the training log and best model it wrote, and ``output_dir`` itself when it created it
and it is empty, so the same run can simply be started again.

Determinism: :func:`train` seeds ``random``, numpy and torch with ``seed + rank``; evaluation runs on forked RNG
states, so evaluating (or not) never changes the training trajectory. On CPU a seed gives identical runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import gc
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from nlptool.core.errors import NlptoolError
from nlptool.core.reporting import RUNS_DIR, TrainCallback, callbacks_for, check_report_to
from nlptool.core.seeding import seed_everything

__all__ = [
    "SCHEDULERS",
    "PRECISIONS",
    "TrainConfig",
    "TrainResult",
    "GradientHook",
    "train",
    "plan_batches",
    "steps_per_epoch",
    "lr_multiplier",
    "make_scheduler",
    "weight_decay_groups",
    "to_device",
    "resolve_device",
    "world_info",
    "is_main_process",
    "all_gather_with_grad",
    "unwrap_model",
]

SCHEDULERS = ("linear", "constant", "cosine")
PRECISIONS = ("fp32", "bf16", "fp16")
MEGA_BATCH = 50  # global batches per length-sorted mega-batch
CHECKPOINT_DIR = "checkpoint-last"
BEST_DIR = "best"
LOG_FILE = "train_log.jsonl"
_STATE_FORMAT = 1
# Config fields that shape the training trajectory; a resume must not change them.
_TRAJECTORY_FIELDS = (
    "epochs",
    "batch_size",
    "grad_accum",
    "lr",
    "weight_decay",
    "warmup_ratio",
    "warmup_steps",
    "scheduler",
    "max_grad_norm",
    "seed",
    "precision",
    "group_by_length",
    "lr_scale",
    "max_steps",
)


@dataclass
class TrainConfig:
    """Options of :func:`train`; see the module docstring for the exact semantics.

    Attributes:
        epochs: passes over the examples.
        batch_size: examples per global batch, summed over all processes (the batch one loss sees).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW decoupled weight decay, applied to all trainable parameters except biases and
            normalisation weights.
        warmup_ratio: fraction of all optimizer steps spent in linear warmup (``ceil(ratio * total_steps)``).
        warmup_steps: warmup length in steps; overrides ``warmup_ratio`` when set.
        scheduler: ``linear`` | ``constant`` | ``cosine`` (after warmup).
        grad_accum: global batches accumulated per optimizer step (a step sees ``batch_size * grad_accum`` examples).
        max_grad_norm: clip the global gradient L2 norm to this value; ``None`` disables clipping.
        eval_every: evaluate every this many optimizer steps and after the last one; 0 = at the end of every epoch.
        seed: seeds batching (``[seed, epoch]``) and ``random``/numpy/torch (``seed + rank``).
        device: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``. Under torchrun with CUDA each
            process uses ``cuda:LOCAL_RANK``.
        precision: ``fp32``; ``bf16`` (autocast, on CUDA or CPU); ``fp16`` (autocast and a gradient scaler, CUDA only).
        group_by_length: batch examples of similar ``lengths`` together (less padding); needs ``lengths``.
        output_dir: folder for ``checkpoint-last/``, ``best/`` and ``train_log.jsonl``; ``None`` writes nothing.
        checkpoint_every: also write ``checkpoint-last`` after every this many optimizer steps (mid-epoch included),
            in addition to the end of every epoch; 0 = at the end of every epoch only.
        resume: ``True`` to continue from ``output_dir/checkpoint-last``, or the path of a checkpoint folder.
        metric: key of ``evaluate``'s result that selects the best model (needed by ``save_best``).
        greater_is_better: whether a larger ``metric`` is better.
        log_every: add a ``train`` event (mean loss since the previous one) every this many steps and after the
            last; 0 = at the end of every epoch.
        find_unused_parameters: passed to DistributedDataParallel; set it when some trainable parameters get no
            gradient (e.g. a BERT pooler the loss never uses). Ignored in a single process.
        lr_scale: parameter-name prefix → factor on ``lr`` for those parameters (e.g. ``{"head.": 10.0}`` for a
            freshly initialised head on a pre-trained encoder); the schedule scales every group alike.
        report_to: ``none`` or ``tensorboard``: also write the training log's events as TensorBoard scalars to
            ``output_dir/runs/`` (rank 0; needs the ``tensorboard`` package, see :mod:`nlptool.core.reporting`).
        max_steps: train exactly this many optimizer steps instead of ``epochs`` passes (epochs continue as needed;
            the last step may end mid-epoch, and evaluation, the ``train`` log event and a checkpoint follow it as
            they follow the end of an epoch); ``None``: ``epochs * steps_per_epoch``.
    """

    epochs: int = 1
    batch_size: int = 16
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    scheduler: str = "linear"
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    eval_every: int = 0
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    group_by_length: bool = False
    output_dir: str | None = None
    checkpoint_every: int = 0
    resume: bool | str = False
    metric: str | None = None
    greater_is_better: bool = True
    log_every: int = 50
    find_unused_parameters: bool = False
    lr_scale: dict[str, float] | None = None
    report_to: str = "none"
    max_steps: int | None = None


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        steps: optimizer steps taken in total (including those before a resume).
        epochs_done: ``steps / steps_per_epoch``.
        best_metric: the best value of ``config.metric`` seen, or ``None``.
        best_step: the step at which it was seen, or ``None``.
        history: the events, in order: ``{"event": "train", "step", "epoch", "loss", "lr", "examples_per_s"}`` with
            the mean step loss since the previous ``train`` event, and ``{"event": "eval", "step", "epoch",
            "metrics": {...}}`` (plus ``"is_best"`` when a metric is tracked).
        examples_per_s: training examples per second in this call (evaluation and checkpoint time excluded).
        train_seconds: seconds spent in this call's training loop, evaluation and checkpoints excluded.
        total_steps: optimizer steps of the whole run (``epochs * steps_per_epoch``, or ``max_steps``).
        extra_state: the caller's values kept with the checkpoints (``train(extra_state=...)``); after a resume,
            those of the checkpoint (updated by the keys passed to this call).
        checkpoint_step: the step of the last checkpoint written or resumed from, or ``None``.
    """

    steps: int
    epochs_done: float
    best_metric: float | None
    best_step: int | None
    history: list[dict] = field(default_factory=list)
    examples_per_s: float = 0.0
    train_seconds: float = 0.0
    total_steps: int = 0
    extra_state: dict = field(default_factory=dict)
    checkpoint_step: int | None = None


@runtime_checkable
class GradientHook(Protocol):
    """Takes over the gradient computation of :func:`train` (``gradient_hook=``), e.g. to combine per-task gradients
    (:mod:`nlptool.core.multitask.trainer`). The loop keeps everything else: batches, rank slices, the optimizer, the
    schedule, clipping, evaluation and checkpoints. With a hook the loop does not wrap the model in
    DistributedDataParallel: the hook averages the gradients over ranks itself (in :meth:`before_step`). fp16 (a
    gradient scaler) is refused; bf16 autocast and fp32 work.
    """

    def backward(self, model: nn.Module, batch: Any, weight: float, standin: bool) -> Tensor:
        """Forward and backward one micro-batch (this rank's slice of a global batch), the loss multiplied by
        ``weight`` (as the loop would: ``n_{b,r} * P / N``; 0 on a stand-in batch, ``standin=True``, which must still
        run its collectives). Returns the detached weighted loss for the progress and the log."""
        ...

    def before_step(self) -> None:
        """Called once per optimizer step after the step's micro-batches, before clipping and ``optimizer.step()``:
        leave the step's gradient in the parameters' ``.grad``."""
        ...

    def state_dict(self) -> dict:
        """JSON-serialisable state kept with every checkpoint (``trainer_state.json``, key ``hook``)."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s value when a run resumes (``{}`` from a checkpoint written without one)."""
        ...


# --------------------------------------------------------------------------------------------------------------------
# Distribution helpers


def world_info() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: from the process group if initialised, else from torchrun's
    ``RANK``/``WORLD_SIZE`` environment variables, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this process is rank 0 (the one that writes files and reports progress)."""
    return world_info()[0] == 0


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper; other modules as they are."""
    while isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        model = model.module
    return model


# True while the loop runs a zero-weight stand-in batch on a rank whose slice of the global batch is empty.
_STANDIN_BATCH: contextvars.ContextVar[bool] = contextvars.ContextVar("nlptool_train_standin", default=False)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 (ranks may hold different row counts); backward sums the gradient over ranks."""

    @staticmethod
    def forward(ctx, local: Tensor) -> Tensor:  # type: ignore[override]
        world, rank = dist.get_world_size(), dist.get_rank()
        size = torch.tensor([local.shape[0]], device=local.device, dtype=torch.long)
        sizes = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes, size)
        counts = [int(s.item()) for s in sizes]
        longest = max(counts)
        padded = local.contiguous()
        if local.shape[0] < longest:
            pad = local.new_zeros((longest - local.shape[0], *local.shape[1:]))
            padded = torch.cat([padded, pad], dim=0)
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        ctx.start = sum(counts[:rank])
        ctx.stop = ctx.start + counts[rank]
        return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)], dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[ctx.start : ctx.stop]


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0, in rank order, keeping the autograd graph.

    With :func:`train`'s contiguous slices this rebuilds the global batch in its original order, so a batch-coupled
    loss computed on the result equals the single-process loss. Ranks may hold different numbers of rows. The backward
    pass gives every rank, for its own rows, the sum over all ranks of the gradient of their losses; since every rank
    computes the same loss on the same gathered tensor, that is ``world_size`` times the gradient, and DDP's averaging
    brings it back to the single-process gradient: return the loss as is, without scaling.

    Identity when not distributed. Works for tensors without gradient too (labels).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    if tensor.dim() == 0:
        raise NlptoolError("all_gather_with_grad needs a tensor with a batch dimension; got a 0-d tensor")
    local = tensor[:0] if _STANDIN_BATCH.get() else tensor
    return _GatherWithGrad.apply(local)


_groups_created = 0  # process groups train() has created in this process (the same count on every rank)


def _init_distributed(device_spec: str) -> bool:
    """Initialise the default process group under torchrun; returns whether this call created it.

    The rendezvous store (``env://``: ``MASTER_ADDR``/``MASTER_PORT``, or torchrun's agent store) gets a fresh key
    prefix per group, so calling :func:`train` several times in one process works: torch reuses the same keys when a
    destroyed default group is created again, and a fast rank can then read a stale address and hang.
    """
    global _groups_created
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    spec = (device_spec or "auto").strip().lower()
    cuda = spec.startswith("cuda") or (spec == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    store, rank, world = next(dist.rendezvous("env://"))
    store = dist.PrefixStore(f"nlptool_train/{_groups_created}", store)
    _groups_created += 1
    dist.init_process_group(backend="nccl" if cuda else "gloo", store=store, rank=rank, world_size=world)
    return True


def _rank_slice(n: int, rank: int, world: int) -> tuple[int, int]:
    """``[start, stop)`` of rank's contiguous share of ``n`` items; the first ``n % world`` ranks get one more."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


# --------------------------------------------------------------------------------------------------------------------
# Devices


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` → CUDA if available else CPU; ``cpu``; ``cuda``/``cuda:N`` (an error without CUDA). Under torchrun
    (``WORLD_SIZE > 1``) a CUDA device is always ``cuda:LOCAL_RANK``, one GPU per process."""
    spec = (spec or "auto").strip().lower()
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if spec in ("auto", "cuda") or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise NlptoolError(f"device '{spec}' was asked for but CUDA is not available; use --device cpu or auto")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one GPU per process
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if spec.startswith("cuda:"):
            return torch.device(spec)
        return torch.device("cuda", torch.cuda.current_device())
    raise NlptoolError(f"unknown device '{spec}'; use auto, cpu, cuda or cuda:N")


def to_device(batch: Any, device: torch.device | str) -> Any:
    """Move every tensor in ``batch`` to ``device``: tensors, mappings, lists, tuples (named ones too), dataclass
    instances and objects with a ``.to(device)`` method (e.g. transformers' ``BatchEncoding``); anything else as is."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        moved = {k: to_device(v, device) for k, v in batch.items()}
        if type(batch) is dict:
            return moved
        if hasattr(batch, "to") and callable(batch.to):
            return batch.to(device)
        try:
            return type(batch)(moved)
        except TypeError:
            return moved
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {f.name: to_device(getattr(batch, f.name), device) for f in dataclasses.fields(batch) if f.init}
        return dataclasses.replace(batch, **changes)
    if hasattr(batch, "to") and callable(batch.to) and not isinstance(batch, nn.Module):
        try:
            return batch.to(device)
        except TypeError:
            return batch
    return batch


# --------------------------------------------------------------------------------------------------------------------
# Batching, optimizer groups and the schedule


def steps_per_epoch(n_examples: int, batch_size: int, grad_accum: int = 1) -> int:
    """Optimizer steps in one epoch: ``ceil(ceil(n / batch_size) / grad_accum)``."""
    return math.ceil(math.ceil(n_examples / batch_size) / grad_accum)


def plan_batches(
    n_examples: int, batch_size: int, *, seed: int, epoch: int, lengths: Sequence[int] | None = None
) -> list[list[int]]:
    """The global batches of one epoch, as lists of example indices.

    A permutation from ``numpy.random.default_rng([seed, epoch])`` cut into batches of ``batch_size`` (the last may be
    smaller). With ``lengths``: the permutation is cut into mega-batches of ``50 * batch_size``, each sorted by length
    (longest first, ties in permutation order) and cut into batches; the full batches are shuffled with the same
    generator and the partial one, if any, goes last.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n_examples)
    if lengths is None:
        return [order[i : i + batch_size].tolist() for i in range(0, n_examples, batch_size)]
    lens = np.asarray(lengths)
    chunk = batch_size * MEGA_BATCH
    batches: list[np.ndarray] = []
    for start in range(0, n_examples, chunk):
        idx = order[start : start + chunk]
        idx = idx[np.argsort(-lens[idx], kind="stable")]
        batches.extend(idx[i : i + batch_size] for i in range(0, len(idx), batch_size))
    full = [b for b in batches if len(b) == batch_size]
    partial = [b for b in batches if len(b) < batch_size]
    return [full[i].tolist() for i in rng.permutation(len(full))] + [b.tolist() for b in partial]


_NORM_TYPES = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW parameter groups over the trainable parameters: ``{"params", "weight_decay": weight_decay}`` and
    ``{"params", "weight_decay": 0.0}``. No decay for biases (names ending in ``bias``) and the weights of
    normalisation layers (torch's norm modules, or any module whose class name contains ``Norm``, such as T5's or
    Llama's RMSNorm). Shared parameters appear once; empty groups are dropped."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if is_norm or name.endswith("bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, kind: str = "linear") -> float:
    """Factor on the peak lr for optimizer step ``step`` (1-based) of ``total_steps``; see the module docstring."""
    if kind not in SCHEDULERS:
        raise NlptoolError(f"unknown scheduler '{kind}'; choose one of {', '.join(SCHEDULERS)}")
    if warmup_steps > 0 and step <= warmup_steps:
        return step / warmup_steps
    if kind == "constant":
        return 1.0
    span = total_steps + 1 - warmup_steps
    progress = min(max((step - warmup_steps) / span, 0.0), 1.0)
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _scale_lr(groups: list[dict], module: nn.Module, lr: float, scales: Mapping[str, float]) -> list[dict]:
    """Split parameter groups so that parameters whose name starts with a prefix of ``scales`` get ``lr * factor``
    (the first matching prefix wins)."""
    names = {id(p): n for n, p in module.named_parameters()}
    out = []
    for g in groups:
        parts: dict[float, list] = {}
        for p in g["params"]:
            name = names.get(id(p), "")
            factor = next((float(f) for prefix, f in scales.items() if name.startswith(prefix)), 1.0)
            parts.setdefault(factor, []).append(p)
        for factor, params in parts.items():
            out.append({**g, "params": params, "lr": lr * factor})
    return out


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, kind: str = "linear"
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` giving :func:`lr_multiplier`; call ``step()`` after each optimizer step."""
    lr_multiplier(1, total_steps, warmup_steps, kind)  # validates kind

    def factor(done: int) -> float:  # LambdaLR passes the number of scheduler steps taken so far
        return lr_multiplier(done + 1, total_steps, warmup_steps, kind)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------------------------------------------------
# RNG and checkpoint files


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], [int(x) for x in np_state[1]], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


@contextlib.contextmanager
def _forked_rng(device: torch.device):
    """Run a block (evaluation) on copies of all RNG states, so it leaves the training streams untouched."""
    py, npy = random.getstate(), np.random.get_state()
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move folder ``tmp`` to ``final``, replacing it (``final.old`` exists only in between)."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _find_checkpoint(config: TrainConfig) -> Path:
    if isinstance(config.resume, str | os.PathLike) and not isinstance(config.resume, bool):
        path = Path(config.resume)
    else:
        if config.output_dir is None:
            raise NlptoolError("resume=True needs output_dir (the folder holding checkpoint-last/); set --output-dir")
        path = Path(config.output_dir) / CHECKPOINT_DIR
        old = path.with_name(path.name + ".old")
        if not path.exists() and old.exists():  # crashed between the two renames of _replace_dir
            path = old
    if not (path / "trainer_state.json").is_file():
        raise NlptoolError(
            f"no checkpoint to resume from at {path} (trainer_state.json missing); run without --resume to start "
            "fresh, or point --resume at a checkpoint-last folder"
        )
    return path


# --------------------------------------------------------------------------------------------------------------------
# The loop


def _validate(config: TrainConfig, n: int, lengths, evaluate, save_best) -> None:
    check_report_to(config.report_to)
    if config.report_to != "none" and config.output_dir is None:
        raise NlptoolError(f"report_to {config.report_to} needs output_dir (its files go to output_dir/{RUNS_DIR})")

    def bad(msg: str) -> NlptoolError:
        return NlptoolError(f"invalid training option: {msg}")

    if n == 0:
        raise NlptoolError("no training examples; check the training file and its column mapping")
    if config.epochs < 1:
        raise bad(f"epochs={config.epochs}; use 1 or more")
    if config.max_steps is not None and config.max_steps < 1:
        raise bad(f"max_steps={config.max_steps}; use 1 or more, or None to train for the epochs")
    if config.batch_size < 1:
        raise bad(f"batch_size={config.batch_size}; use 1 or more")
    if config.grad_accum < 1:
        raise bad(f"grad_accum={config.grad_accum}; use 1 or more")
    if not config.lr > 0 or not math.isfinite(config.lr):
        raise bad(f"lr={config.lr}; use a positive learning rate such as 2e-5")
    if config.weight_decay < 0:
        raise bad(f"weight_decay={config.weight_decay}; use 0 or more")
    if not 0.0 <= config.warmup_ratio <= 1.0:
        raise bad(f"warmup_ratio={config.warmup_ratio}; use a value in [0, 1]")
    if config.warmup_steps is not None and config.warmup_steps < 0:
        raise bad(f"warmup_steps={config.warmup_steps}; use 0 or more")
    if config.scheduler not in SCHEDULERS:
        raise bad(f"scheduler '{config.scheduler}'; choose one of {', '.join(SCHEDULERS)}")
    if config.precision not in PRECISIONS:
        raise bad(f"precision '{config.precision}'; choose one of {', '.join(PRECISIONS)}")
    if config.checkpoint_every < 0:
        raise bad(f"checkpoint_every={config.checkpoint_every}; use 0 (end of each epoch only) or more")
    if config.max_grad_norm is not None and not config.max_grad_norm > 0:
        raise bad(f"max_grad_norm={config.max_grad_norm}; use a positive norm, or None to disable clipping")
    if config.group_by_length:
        if lengths is None:
            raise bad("group_by_length needs the examples' lengths; pass lengths=...")
    if lengths is not None and len(lengths) != n:
        raise bad(f"lengths has {len(lengths)} entries for {n} examples")
    if config.metric is not None and evaluate is None:
        raise bad(f"metric '{config.metric}' needs an evaluate function")
    if save_best is not None and (config.metric is None or config.output_dir is None):
        raise bad("saving the best model needs both a metric and an output_dir")


class _Loop:
    """State of one :func:`train` call (see there)."""

    def __init__(
        self,
        model,
        examples,
        collate,
        compute_loss,
        config: TrainConfig,
        evaluate,
        save_best,
        lengths,
        cb,
        extra,
        callbacks: Sequence[TrainCallback] = (),
        hook: GradientHook | None = None,
    ):
        self.config = config
        self.hook = hook
        self.callbacks: list[TrainCallback] = []
        self.extra_state: dict = dict(extra or {})
        self.checkpoint_step: int | None = None  # the last checkpoint written or resumed from
        self.best_written = False
        self.examples = examples
        self.collate = collate
        self.compute_loss = compute_loss
        self.evaluate_fn = evaluate
        self.save_best = save_best
        self.lengths = list(lengths) if (config.group_by_length and lengths is not None) else None
        self.on_progress = cb
        self.rank, self.world = world_info()
        self.main = self.rank == 0
        self.distributed = self.world > 1 and dist.is_available() and dist.is_initialized()
        self.device = resolve_device(config.device)
        if config.precision == "fp16" and hook is not None:
            raise NlptoolError(
                "precision fp16 cannot be combined with per-task gradients (its loss scaling would enter them); "
                "use --precision bf16 or fp32"
            )
        if config.precision == "fp16" and self.device.type != "cuda":
            raise NlptoolError(
                "precision fp16 needs a CUDA device; use --precision bf16 (supported on CPU) or fp32 on this machine"
            )
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision)
        self.out = Path(config.output_dir) if config.output_dir is not None else None

        self.n = len(examples)
        self.spe = steps_per_epoch(self.n, config.batch_size, config.grad_accum)
        self.total_steps = self.spe * config.epochs if config.max_steps is None else config.max_steps
        if config.warmup_steps is not None:
            self.warmup = min(config.warmup_steps, self.total_steps)
        else:
            self.warmup = min(math.ceil(config.warmup_ratio * self.total_steps), self.total_steps)

        seed_everything(config.seed + self.rank)
        self.module = unwrap_model(model)
        self.was_training = self.module.training
        self.module.to(self.device)
        groups = weight_decay_groups(self.module, config.weight_decay)
        if not groups:
            raise NlptoolError("the model has no trainable parameters (all have requires_grad=False)")
        if config.lr_scale:
            groups = _scale_lr(groups, self.module, config.lr, config.lr_scale)
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr)
        self.scheduler = make_scheduler(self.optimizer, self.total_steps, self.warmup, config.scheduler)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")

        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.loss_sum = 0.0
        self.loss_count = 0
        self.history: list[dict] = []
        rng_states = None
        if config.resume:
            rng_states = self._load_checkpoint(_find_checkpoint(config))
        self.model: nn.Module = self.module
        if self.distributed and hook is None:  # a gradient hook averages the gradients over ranks itself
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(
                self.module, device_ids=device_ids, find_unused_parameters=config.find_unused_parameters
            )
        if rng_states is not None and self.rank < len(rng_states):
            _set_rng_state(rng_states[self.rank])
        self.created_out = False
        if self.out is not None and self.main:
            self.created_out = not self.out.exists()
            self.out.mkdir(parents=True, exist_ok=True)
            self._rewrite_log()
        if self.main:
            self.callbacks = [*callbacks_for(config.report_to), *callbacks]
            config_dict = asdict(config)
            try:
                for callback in self.callbacks:
                    callback.on_begin(
                        output_dir=self.out, step=self.step, total_steps=self.total_steps, config=config_dict
                    )
            except BaseException:
                with contextlib.suppress(Exception):
                    self.end_callbacks()
                raise

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def _load_checkpoint(self, path: Path) -> list[dict]:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        saved = state.get("config", {})
        current = asdict(self.config)
        diffs = [f"{k}: {saved.get(k)!r} → {current[k]!r}" for k in _TRAJECTORY_FIELDS if saved.get(k) != current[k]]
        if state.get("n_examples") != self.n:
            diffs.append(f"number of examples: {state.get('n_examples')} → {self.n}")
        if diffs:
            raise NlptoolError(
                f"cannot resume from {path}: the run's settings changed ({'; '.join(diffs)}); "
                "resume with the original settings and data, or start a fresh run in a new output folder"
            )
        self.module.load_state_dict(torch.load(path / "model.pt", map_location=self.device, weights_only=True))
        blobs = torch.load(path / "training_state.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(blobs["optimizer"])
        self.scheduler.load_state_dict(blobs["scheduler"])
        if blobs.get("scaler"):
            self.scaler.load_state_dict(blobs["scaler"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.best_metric = state["best_metric"]
        self.best_step = state["best_step"]
        self.loss_sum = float(state["loss_sum"])
        self.loss_count = int(state["loss_count"])
        self.history = list(state["history"])
        self.extra_state = {**dict(state.get("extra") or {}), **self.extra_state}
        self.checkpoint_step = self.step
        if self.hook is not None:
            self.hook.load_state_dict(dict(state.get("hook") or {}))
        return blobs["rng"]

    def _save_checkpoint(self) -> None:
        rng = _rng_state()
        if self.distributed:
            states: list[Any] = [None] * self.world
            dist.all_gather_object(states, rng)
        else:
            states = [rng]
        if not self.main or self.out is None:
            self.checkpoint_step = self.step
            return
        final = self.out / CHECKPOINT_DIR
        tmp = self.out / f".{CHECKPOINT_DIR}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        torch.save(self.module.state_dict(), tmp / "model.pt")
        blobs = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": states,
        }
        torch.save(blobs, tmp / "training_state.pt")
        state = {
            "format": _STATE_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "total_steps": self.total_steps,
            "n_examples": self.n,
            "world_size": self.world,
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "history": self.history,
            "config": asdict(self.config),
            "extra": self.extra_state,
        }
        if self.hook is not None:
            state["hook"] = self.hook.state_dict()
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
        _replace_dir(tmp, final)
        self.checkpoint_step = self.step

    def _rewrite_log(self) -> None:
        assert self.out is not None
        tmp = self.out / f".{LOG_FILE}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            for event in self.history:
                fh.write(json.dumps(event, ensure_ascii=False) + "\n")
        os.replace(tmp, self.out / LOG_FILE)

    def discard_partial(self) -> None:
        """After a fresh run failed before its first checkpoint: remove what it wrote (the log, the best model, the
        temporary folders, ``output_dir`` itself if this run created it and it is now empty)."""
        if self.out is None or not self.main or self.config.resume or self.checkpoint_step is not None:
            return
        pid = os.getpid()
        with contextlib.suppress(OSError):
            (self.out / LOG_FILE).unlink(missing_ok=True)
            (self.out / f".{LOG_FILE}.tmp-{pid}").unlink(missing_ok=True)
        for name in (
            f".{CHECKPOINT_DIR}.tmp-{pid}",
            f".{BEST_DIR}.tmp-{pid}",
            *((BEST_DIR,) if self.best_written else ()),
        ):
            shutil.rmtree(self.out / name, ignore_errors=True)
        if self.config.report_to != "none":
            shutil.rmtree(self.out / RUNS_DIR, ignore_errors=True)  # a fresh run cleared it at its start
        if self.created_out:
            with contextlib.suppress(OSError):
                self.out.rmdir()  # only when empty

    def _record(self, event: dict) -> None:
        self.history.append(event)
        if self.out is not None and self.main:
            with open(self.out / LOG_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(event, ensure_ascii=False) + "\n")
        for callback in self.callbacks:
            callback.on_event(event)

    def end_callbacks(self) -> None:
        """Call every callback's ``on_end`` once (each even when another fails)."""
        callbacks, self.callbacks = self.callbacks, []
        errors = []
        for callback in callbacks:
            try:
                callback.on_end()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    # ---- evaluation ----------------------------------------------------------------------------------------------
    def _evaluate(self) -> None:
        metrics = None
        if self.main:
            self.module.eval()
            with _forked_rng(self.device), torch.no_grad():
                raw = self.evaluate_fn(self.module)
            self.module.train()
            if not isinstance(raw, Mapping):
                raise NlptoolError(f"evaluate must return a dict of metric name → number, got {type(raw).__name__}")
            try:
                metrics = {str(k): float(v) for k, v in raw.items()}
            except (TypeError, ValueError) as exc:
                raise NlptoolError(f"evaluate must return numbers as metric values ({exc}); got {raw!r}") from exc
        if self.distributed:
            box = [metrics]
            dist.broadcast_object_list(box, src=0)
            metrics = box[0]
        assert metrics is not None
        event: dict[str, Any] = {"event": "eval", "step": self.step, "epoch": self.step / self.spe, "metrics": metrics}
        metric = self.config.metric
        if metric is not None:
            if metric not in metrics:
                raise NlptoolError(
                    f"metric '{metric}' is not among the evaluation results ({', '.join(sorted(metrics)) or 'none'}); "
                    "choose one of those"
                )
            value = metrics[metric]
            better = self.best_metric is None or (
                value > self.best_metric if self.config.greater_is_better else value < self.best_metric
            )
            better = better and not math.isnan(value)
            event["is_best"] = better
            if better:
                self.best_metric, self.best_step = value, self.step
                if self.save_best is not None and self.main and self.out is not None:
                    tmp = self.out / f".{BEST_DIR}.tmp-{os.getpid()}"
                    shutil.rmtree(tmp, ignore_errors=True)
                    tmp.mkdir()
                    self.save_best(self.module, tmp)
                    _replace_dir(tmp, self.out / BEST_DIR)
                    self.best_written = True
        self._record(event)
        if self.on_progress is not None and self.main:
            self.on_progress(event)

    # ---- training ------------------------------------------------------------------------------------------------
    def _loss_on(self, indices: list[int], weight: float, standin: bool) -> Tensor:
        batch = to_device(self.collate([self.examples[i] for i in indices]), self.device)
        token = _STANDIN_BATCH.set(standin)
        try:
            autocast = (
                torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)
                if self.amp_dtype is not None
                else contextlib.nullcontext()
            )
            if self.hook is not None:
                with autocast:
                    return self.hook.backward(self.model, batch, weight, standin).detach().reshape(()).float()
            with autocast:
                loss = self.compute_loss(self.model, batch)
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise NlptoolError("compute_loss must return a scalar tensor (a loss with one element)")
            if not loss.requires_grad:
                raise NlptoolError(
                    "compute_loss returned a loss that does not depend on any trainable parameter; "
                    "compute it from the model's output without torch.no_grad() or .detach()"
                )
            loss = loss.reshape(()).float()
            self.scaler.scale(loss * weight).backward()
        finally:
            _STANDIN_BATCH.reset(token)
        return loss.detach() * weight

    def run(self) -> TrainResult:
        cfg = self.config
        self.module.train()
        examples_done = 0
        busy = 0.0  # seconds in the training loop proper
        t_start = time.perf_counter()
        log_every = cfg.log_every if cfg.log_every > 0 else None
        try:
            while self.step < self.total_steps:
                batches = plan_batches(self.n, cfg.batch_size, seed=cfg.seed, epoch=self.epoch, lengths=self.lengths)
                while self.batch_in_epoch < len(batches):
                    group = batches[self.batch_in_epoch : self.batch_in_epoch + cfg.grad_accum]
                    n_step = sum(len(b) for b in group)
                    step_loss = torch.zeros((), device=self.device)
                    for j, b in enumerate(group):
                        start, stop = _rank_slice(len(b), self.rank, self.world)
                        mine, standin = b[start:stop], False
                        if not mine:
                            mine, standin = b[:1], True
                        weight = 0.0 if standin else (stop - start) * self.world / n_step
                        sync = self.model is self.module or j == len(group) - 1  # no_sync: DDP only
                        ctx = contextlib.nullcontext() if sync else self.model.no_sync()
                        with ctx:
                            step_loss += self._loss_on(mine, weight, standin)
                    if self.distributed:
                        dist.all_reduce(step_loss)
                        step_loss /= self.world
                    loss_value = float(step_loss.item())
                    if not math.isfinite(loss_value):
                        raise NlptoolError(
                            f"training loss is {loss_value} at step {self.step + 1} (epoch {self.epoch + 1}): the run "
                            f"diverged; lower the learning rate (lr={cfg.lr:g}, try {cfg.lr / 10:g}) or keep gradient "
                            "clipping on (max_grad_norm)"
                        )
                    if self.hook is not None:
                        self.hook.before_step()
                    grad_norm = None
                    if cfg.max_grad_norm is not None:
                        self.scaler.unscale_(self.optimizer)
                        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm))
                    lr = self.optimizer.param_groups[0]["lr"]
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.scheduler.step()
                    self.step += 1
                    self.batch_in_epoch += len(group)
                    examples_done += n_step
                    end_of_epoch = self.batch_in_epoch >= len(batches)
                    last = self.step == self.total_steps
                    self.loss_sum += loss_value
                    self.loss_count += 1
                    busy_now = busy + (time.perf_counter() - t_start)
                    rate = examples_done / busy_now if busy_now > 0 else 0.0
                    if self.on_progress is not None and self.main:
                        self.on_progress(
                            {
                                "step": self.step,
                                "total_steps": self.total_steps,
                                "epoch": self.step / self.spe,
                                "loss": loss_value,
                                "lr": lr,
                                "grad_norm": grad_norm,
                                "examples_per_s": rate,
                            }
                        )
                    if (log_every and (self.step % log_every == 0 or last)) or (
                        not log_every and (end_of_epoch or last)
                    ):
                        self._record(
                            {
                                "event": "train",
                                "step": self.step,
                                "epoch": self.step / self.spe,
                                "loss": self.loss_sum / self.loss_count,
                                "lr": lr,
                                "examples_per_s": rate,
                            }
                        )
                        self.loss_sum, self.loss_count = 0.0, 0
                    busy = busy_now
                    if end_of_epoch:
                        self.epoch += 1
                        self.batch_in_epoch = 0
                    if self.evaluate_fn is not None:
                        due = (cfg.eval_every > 0 and (self.step % cfg.eval_every == 0 or last)) or (
                            cfg.eval_every <= 0 and (end_of_epoch or last)
                        )
                        if due:
                            self._evaluate()
                    if self.out is not None:
                        due = (
                            end_of_epoch or last or (cfg.checkpoint_every > 0 and self.step % cfg.checkpoint_every == 0)
                        )
                        if due:
                            self._save_checkpoint()
                    t_start = time.perf_counter()
                    if end_of_epoch or last:  # without max_steps the last step always ends an epoch
                        break
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            self.module.train(self.was_training)
        busy += time.perf_counter() - t_start
        return TrainResult(
            steps=self.step,
            epochs_done=self.step / self.spe,
            best_metric=self.best_metric,
            best_step=self.best_step,
            history=list(self.history),
            examples_per_s=examples_done / busy if busy > 0 and examples_done else 0.0,
            train_seconds=busy,
            total_steps=self.total_steps,
            extra_state=dict(self.extra_state),
            checkpoint_step=self.checkpoint_step,
        )


def train(
    model: nn.Module,
    examples: Sequence[Any],
    collate: Callable[[list[Any]], Any],
    compute_loss: Callable[[nn.Module, Any], Tensor],
    config: TrainConfig,
    *,
    evaluate: Callable[[nn.Module], Mapping[str, float]] | None = None,
    save_best: Callable[[nn.Module, Path], None] | None = None,
    lengths: Sequence[int] | None = None,
    on_progress: Callable[[dict], None] | None = None,
    extra_state: Mapping[str, Any] | None = None,
    callbacks: Sequence[TrainCallback] = (),
    gradient_hook: GradientHook | None = None,
) -> TrainResult:
    """Train ``model`` on ``examples`` with AdamW, a warmup schedule, evaluation, checkpoints and (under torchrun)
    DistributedDataParallel; see the module docstring for batching, the schedule and distribution.

    Args:
        model: the module to train, in place (moved to the device). Its training/eval mode is restored at the end.
        examples: a sequence (``len`` and integer indexing) of training examples of any type.
        collate: list of examples → batch; moved to the device with :func:`to_device`.
        compute_loss: ``(model, batch) → scalar loss``: a mean over the batch's examples, or a batch-coupled loss on
            tensors gathered with :func:`all_gather_with_grad`. Under DDP ``model`` is the wrapper; call its forward.
        config: a :class:`TrainConfig`.
        evaluate: ``model → {name: value}``, called (rank 0 only, in eval mode, under ``torch.no_grad()`` and on
            forked RNG states) every ``eval_every`` steps, or at the end of each epoch.
        save_best: ``(model, folder) → None`` writes the model into ``folder``; called when ``config.metric``
            improves (strictly), on a temporary folder that then replaces ``output_dir/best``.
        lengths: per-example lengths (tokens) for ``group_by_length``.
        on_progress: called on rank 0 after every optimizer step with ``{"step", "total_steps", "epoch", "loss",
            "lr", "grad_norm", "examples_per_s"}`` (``loss``: this step's loss; ``lr``: the lr it used;
            ``grad_norm``: the gradient norm before clipping, ``None`` when clipping is off), and after every
            evaluation with its event ``{"event": "eval", "step", "epoch", "metrics", ["is_best"]}``.
        extra_state: JSON-serialisable values of the caller saved with every checkpoint (``trainer_state.json``,
            key ``extra``); on resume the checkpoint's values come back in ``TrainResult.extra_state`` (keys passed
            here override them).
        callbacks: :class:`~nlptool.core.reporting.TrainCallback` objects (rank 0 only), after those that
            ``config.report_to`` names: told when the loop begins, about every event of the training log, and at
            the end.
        gradient_hook: a :class:`GradientHook` that computes each micro-batch's gradients (``compute_loss`` is then
            not called) and prepares the step's gradient before clipping; the model is not wrapped in DDP.

    Returns:
        A :class:`TrainResult`.

    Raises:
        NlptoolError: invalid options, a NaN/infinite loss (naming the step), fp16 without CUDA, a missing or
            incompatible checkpoint on resume, an unknown metric, a ``report_to`` whose package is not installed
            (before anything is written).
    """
    _validate(config, len(examples), lengths, evaluate, save_best)
    created = _init_distributed(config.device)
    loop: _Loop | None = None
    try:
        loop = _Loop(
            model,
            examples,
            collate,
            compute_loss,
            config,
            evaluate,
            save_best,
            lengths,
            on_progress,
            extra_state,
            callbacks,
            gradient_hook,
        )
        try:
            try:
                result = loop.run()
            finally:
                loop.end_callbacks()  # close their files before a failed run's cleanup removes them
            return result
        except BaseException:
            loop.discard_partial()  # a fresh run stopped before its first checkpoint leaves nothing behind
            raise
    finally:
        if loop is not None and loop.distributed:
            # Free the DDP wrapper (it sits in reference cycles) now, while all ranks are here: left to a later garbage
            # collection, its process group's teardown can block one rank while another waits for it elsewhere.
            loop.model = loop.module
            loop = None
            gc.collect()
        if created and dist.is_initialized():
            with contextlib.suppress(Exception):  # let ranks finish their last collectives before sockets close
                dist.barrier()
            dist.destroy_process_group()

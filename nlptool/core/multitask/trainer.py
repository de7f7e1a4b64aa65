r"""The multi-task trainer: one shared encoder, one head per task, the per-task gradients combined each step.

Each :class:`~nlptool.core.tasks.Task` keeps its own examples. The shared loop (:func:`nlptool.core.train.train`)
runs over a *virtual* example list (:class:`VirtualExamples`) of length ``max_t n_t`` (the largest task): virtual item
``v`` stands, for task ``t``, for its example ``perm_t[v mod n_t]`` with ``perm_t`` a permutation seeded by
``(seed, t)``. With the loop's own per-epoch shuffle every task sees a fresh random order, the smaller tasks cycle,
and an epoch is one pass over the largest task. A batch is ``{name: task.collate(...)}``: one batch of the same size
per task per step; under torchrun each rank gets its slice of every task's batch.

The gradients (:class:`GradientCombiner`, the loop's :class:`~nlptool.core.train.GradientHook`): per micro-batch,
each task's loss is computed and back-propagated on its own (the tasks' inputs differ, so their graphs are disjoint:
no ``retain_graph``); the shared (encoder) parameters' ``.grad`` is then moved into that task's buffer, while a
head's gradient stays in its ``.grad`` (a head only ever gets its own task's gradient). Before each optimizer step the
buffers (and the heads' gradients) are averaged over the ranks, the Gram matrix ``Mᵢⱼ = ⟨gᵢ, gⱼ⟩`` is accumulated
parameter by parameter in float64, :func:`~nlptool.core.multitask.combine.weights_from_gram` gives the weights (rank
0's, broadcast, so every rank applies the same), and ``u = Σ wᵢ gᵢ`` is written into the shared ``.grad``. Clipping,
AdamW and the schedule are the loop's. Each step appends a row to ``mtl_log.jsonl``: the tasks' losses and weights,
``‖gᵢ‖``, the pairwise cosines, ``minᵢ ⟨gᵢ, u⟩ / ‖gᵢ‖`` (negative: a task made worse to first order) and ``‖u‖``
(:func:`~nlptool.core.multitask.combine.diagnostics`).

A task whose gradient is all zero on a step (a NER batch without entities, a zero loss) gets weight 0 from
``gradnorm-sum`` and ``mgda`` and never NaN (see :mod:`nlptool.core.multitask.combine`); its head gets its (zero)
gradient.

Evaluation: each task with dev data is evaluated (:meth:`Task.evaluate`), its metrics reported as ``NAME.KEY``; the
best model is selected by ``delta_m`` when single-task baselines are given (LibMTL's Δm: the mean over tasks of
``s·(mᵢ − bᵢ)/|bᵢ| × 100`` with ``s = 1`` for a higher-is-better main metric, −1 otherwise) and by ``mean_main`` (the
mean of the tasks' main metrics) without.

Output of :func:`fit_multitask` (``out_dir``): ``encoder/`` (:meth:`SentenceEncoder.save`: loads with ``nlptool
encode``, ``eval-sts``, ``SentenceTransformer``, ``AutoModel``), ``tasks/NAME/`` (a complete folder of the
single-task command: the encoder files, hard-linked, plus what :meth:`Task.save` writes; for a pair task that is
just the encoder), ``metrics.json``, ``mtl_log.jsonl`` and ``training/`` (the loop's checkpoints and log; resume
works).

References: Su Jianlin, 多任务学习漫谈 (一)–(三), https://kexue.fm/archives/8870, 8896, 8907; LibMTL's Δm
(Lin & Zhang, "LibMTL: A Python Library for Multi-Task Learning", JMLR 2023).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from nlptool.core.errors import NlptoolError
from nlptool.core.multitask.combine import LOSS_WEIGHTS, METHODS, diagnostics, weights_from_gram
from nlptool.core.train import BEST_DIR, CHECKPOINT_DIR, TrainConfig, TrainResult, train, world_info

__all__ = [
    "COMBINE_METHODS",
    "NEEDS_TWO",
    "MTL_LOG",
    "ENCODER_DIR",
    "TASKS_DIR",
    "VirtualExamples",
    "MultiTaskModel",
    "GradientCombiner",
    "MultiTaskFit",
    "fit_multitask",
    "check_combine",
    "delta_m",
]

#: What ``combine=`` accepts: :data:`~nlptool.core.multitask.combine.METHODS` and ``mgda-ub``, which is refused with
#: the reason (it needs one input carrying every task's labels).
COMBINE_METHODS = (*METHODS, "mgda-ub")
#: Methods that compare gradients and need at least two tasks.
NEEDS_TWO = ("mgda", "mgda-ub", "pcgrad", "main-aux")
MTL_LOG = "mtl_log.jsonl"
ENCODER_DIR = "encoder"
TASKS_DIR = "tasks"
HEADS_DIR = "heads"  # inside a best checkpoint: one folder per task with what Task.save writes
TRAINING_DIR = "training"
#: Elements per float64 block of the Gram-matrix accumulation (a cache-sized copy of T gradient slices).
GRAM_CHUNK = 1 << 17
_PERM_KEY = 0x4D544C  # "MTL": keeps the task permutations apart from the loop's epoch permutations


class VirtualExamples(Sequence):
    """The loop's example list for several tasks: ``len`` is the largest task's size and item ``v`` is ``v`` itself;
    :meth:`resolve` maps it to each task's example index ``perm_t[v mod n_t]`` (``perm_t`` from
    ``numpy.random.default_rng([seed, t, 0x4D544C])``)."""

    def __init__(self, sizes: Sequence[int], seed: int) -> None:
        if not sizes or min(sizes) < 1:
            raise NlptoolError(f"every task needs at least one training example, got sizes {list(sizes)}")
        self.sizes = [int(n) for n in sizes]
        self.perms = [np.random.default_rng([seed, t, _PERM_KEY]).permutation(n) for t, n in enumerate(self.sizes)]

    def __len__(self) -> int:
        return max(self.sizes)

    def __getitem__(self, v: Any) -> Any:
        if isinstance(v, slice):
            return list(range(len(self)))[v]
        if not -len(self) <= v < len(self):
            raise IndexError(v)
        return int(v) % len(self)

    def resolve(self, t: int, v: int) -> int:
        """Task ``t``'s example index for virtual item ``v``."""
        return int(self.perms[t][v % self.sizes[t]])


class MultiTaskModel(nn.Module):
    """The shared encoder and the tasks' heads: parameters ``encoder.*`` and ``heads.NAME.*`` (a task without a head,
    or with a parameter-free one, is fine). ``forward(batch)`` returns ``{name: loss}`` for ``{name: task batch}``.
    A pooler the encoder's pooling does not use is frozen, as in :class:`~nlptool.core.tasks.TaskModel`."""

    def __init__(self, encoder: nn.Module, tasks: Sequence[Any]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict({t.name: t.head for t in tasks if t.head is not None})
        self.__dict__["_tasks"] = list(tasks)  # not submodules: the heads are registered once, under heads
        pooler = getattr(getattr(encoder, "model", None), "pooler", None)
        if getattr(encoder, "pooling", "pooler") != "pooler" and isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)

    @property
    def tasks(self) -> list[Any]:
        return self._tasks

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        return {t.name: t.loss(self.encoder, batch[t.name]) for t in self._tasks}


def _collate_for(tasks: Sequence[Any], examples: Sequence[Sequence[Any]], virtual: VirtualExamples) -> Callable:
    def collate(items: list[int]) -> dict[str, Any]:
        return {
            task.name: task.collate([examples[t][virtual.resolve(t, v)] for v in items]) for t, task in enumerate(tasks)
        }

    return collate


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


class GradientCombiner:
    """The :class:`~nlptool.core.train.GradientHook` of the multi-task trainer (see the module docstring).

    Args:
        model: the :class:`MultiTaskModel`.
        method: one of :data:`~nlptool.core.multitask.combine.METHODS`.
        main: the main task's index (``main-aux``).
        seed: PCGrad's order on step ``k`` is drawn with seed ``(seed, k)``.
        normalize, loss_weights, gamma: as in :func:`~nlptool.core.multitask.combine.weights_from_gram`.
        prior_losses: the tasks' prior losses (``loss-norm`` with ``prior``).
        log_path: where rank 0 appends one JSON row per step (``None``: nowhere).

    Attributes:
        last: the latest step's row (``step``, ``losses``, ``weights``, ``grad_norms`` as ``{name: value}``,
            ``cosines`` (T×T), ``min_alignment``, ``direction_norm``), or ``None``.
        initial_losses: the first step's losses (``loss-norm`` with ``initial``; kept with the checkpoints).
    """

    def __init__(
        self,
        model: MultiTaskModel,
        method: str,
        *,
        main: int | None = None,
        seed: int = 0,
        normalize: str = "none",
        loss_weights: str = "realtime",
        gamma: float | None = None,
        prior_losses: Sequence[float] | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        self.model = model
        self.tasks = model.tasks
        self.names = [t.name for t in self.tasks]
        self.method = method
        self.main = main
        self.seed = seed
        self.normalize = normalize
        self.loss_weights = loss_weights
        self.gamma = gamma
        self.prior_losses = None if prior_losses is None else [float(x) for x in prior_losses]
        self.log_path = Path(log_path) if log_path is not None else None
        self.shared = [p for p in model.encoder.parameters() if p.requires_grad]
        shared_ids = {id(p) for p in self.shared}
        self.head_params = [p for p in model.heads.parameters() if p.requires_grad and id(p) not in shared_ids]
        self.step = 0
        self.initial_losses: list[float] | None = None
        self.last: dict[str, Any] | None = None
        self._synced = False
        self._reset()

    def _reset(self) -> None:
        self.buffers: list[list[Tensor | None]] = [[None] * len(self.shared) for _ in self.tasks]
        self.step_losses: list[Tensor | float] = [0.0] * len(self.tasks)

    # ---- the hook ------------------------------------------------------------------------------------------------
    def backward(self, model: nn.Module, batch: Any, weight: float, standin: bool) -> Tensor:
        """Each task's loss on its part of ``batch``, times ``weight``, back-propagated alone; the shared gradient
        moved into the task's buffer. Returns the detached sum of the weighted losses."""
        if not self._synced:
            self._broadcast_parameters()
        total = torch.zeros(())
        for t, task in enumerate(self.tasks):
            loss = task.loss(self.model.encoder, batch[task.name])
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise NlptoolError(f"task '{task.name}': its loss must be a scalar tensor (a loss with one element)")
            if not loss.requires_grad:
                raise NlptoolError(
                    f"task '{task.name}': its loss does not depend on any trainable parameter; compute it from the "
                    "encoder's output without torch.no_grad() or .detach()"
                )
            loss = loss.reshape(()).float()
            (loss * weight).backward()
            self._take(t)
            weighted = loss.detach() * weight
            self.step_losses[t] = self.step_losses[t] + weighted
            total = total.to(weighted.device) + weighted
        return total

    def _take(self, t: int) -> None:
        bufs = self.buffers[t]
        for i, p in enumerate(self.shared):
            g = p.grad
            if g is None:
                continue
            if bufs[i] is None:
                bufs[i] = g  # take the tensor itself: the next backward allocates a fresh .grad
            else:
                bufs[i].add_(g)  # type: ignore[union-attr]
            p.grad = None

    def _broadcast_parameters(self) -> None:
        """Start every rank from rank 0's weights, as DistributedDataParallel does when it wraps a model."""
        self._synced = True
        if not _distributed():
            return
        with torch.no_grad():
            for tensor in self.model.state_dict().values():
                dist.broadcast(tensor, src=0)

    def before_step(self) -> None:
        """Average over ranks, the Gram matrix, the weights, ``Σ wᵢ gᵢ`` into the shared ``.grad``, the log row."""
        self.step += 1
        n_tasks = len(self.tasks)
        distributed = _distributed()
        # a shared parameter no task reached keeps .grad None (as one backward of the summed loss would leave it);
        # under torchrun every parameter takes part, so that all ranks all-reduce the same tensors
        live = [distributed or any(bufs[i] is not None for bufs in self.buffers) for i in range(len(self.shared))]
        for bufs in self.buffers:
            for i, p in enumerate(self.shared):
                if bufs[i] is None and live[i]:
                    bufs[i] = torch.zeros_like(p)
        for p in self.head_params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        device = self.shared[0].device if self.shared else torch.device("cpu")
        losses = torch.stack([torch.as_tensor(x, dtype=torch.float64, device=device) for x in self.step_losses])
        if distributed:
            world = dist.get_world_size()
            tensors = [b for bufs in self.buffers for b in bufs] + [p.grad for p in self.head_params]
            flat = torch.cat([x.reshape(-1) for x in tensors])  # type: ignore[union-attr]
            dist.all_reduce(flat)
            flat /= world
            offset = 0
            for x in tensors:
                n = x.numel()  # type: ignore[union-attr]
                x.copy_(flat[offset : offset + n].view_as(x))  # type: ignore[union-attr]
                offset += n
            dist.all_reduce(losses)
            losses /= world
        gram_np = self._gram([i for i in range(len(self.shared)) if live[i]], device).cpu().numpy()
        losses_np = losses.cpu().numpy()
        if self.initial_losses is None:
            self.initial_losses = [float(x) for x in losses_np]
        weights = self._weights(gram_np, losses_np)
        if distributed:
            box = torch.as_tensor(weights, dtype=torch.float64, device=device)
            dist.broadcast(box, src=0)
            weights = box.cpu().numpy()
        with torch.no_grad():
            for i, p in enumerate(self.shared):
                if not live[i]:
                    continue
                u = self.buffers[0][i].mul_(float(weights[0]))  # type: ignore[union-attr]
                for t in range(1, n_tasks):
                    u.add_(self.buffers[t][i], alpha=float(weights[t]))  # type: ignore[arg-type]
                p.grad = u.to(p.dtype)
        self._reset()
        self._record(gram_np, losses_np, weights)

    def _gram(self, live: list[int], device: torch.device) -> Tensor:
        """``Mᵢⱼ = ⟨gᵢ, gⱼ⟩`` in float64, parameter by parameter, each in chunks of :data:`GRAM_CHUNK` elements copied
        into one preallocated float64 block (a whole-parameter float64 copy of the 11.7M word embeddings costs 5×
        as much; float32 products lose the small off-diagonal entries)."""
        n_tasks = len(self.tasks)
        gram = torch.zeros((n_tasks, n_tasks), dtype=torch.float64, device=device)
        block = torch.empty((n_tasks, GRAM_CHUNK), dtype=torch.float64, device=device)
        for i in live:
            flats = [self.buffers[t][i].reshape(-1) for t in range(n_tasks)]  # type: ignore[union-attr]
            size = flats[0].numel()
            for start in range(0, size, GRAM_CHUNK):
                stop = min(start + GRAM_CHUNK, size)
                part = block[:, : stop - start]
                for t in range(n_tasks):
                    part[t].copy_(flats[t][start:stop])
                gram += part @ part.T
        return gram

    def _weights(self, gram: np.ndarray, losses: np.ndarray) -> np.ndarray:
        return weights_from_gram(
            gram,
            self.method,
            losses=losses,
            main=self.main,
            seed=int(np.random.SeedSequence([self.seed, self.step]).generate_state(1)[0]),
            normalize=self.normalize,
            loss_weights=self.loss_weights,
            initial_losses=self.initial_losses,
            prior_losses=self.prior_losses,
            gamma=self.gamma,
        )

    def _record(self, gram: np.ndarray, losses: np.ndarray, weights: np.ndarray) -> None:
        diag = diagnostics(gram, weights)
        row = {
            "step": self.step,
            "losses": dict(zip(self.names, map(float, losses), strict=True)),
            "weights": dict(zip(self.names, map(float, weights), strict=True)),
            "grad_norms": dict(zip(self.names, diag.grad_norms, strict=True)),
            "cosines": diag.cosines,
            "min_alignment": _finite_or_none(diag.min_alignment),
            "direction_norm": diag.direction_norm,
        }
        self.last = row
        if self.log_path is not None and world_info()[0] == 0:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"step": self.step, "initial_losses": self.initial_losses}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint: its step and initial losses; log rows after that step (written before a crash,
        to be redone) are dropped."""
        self.step = int(state.get("step", 0))
        self.initial_losses = state.get("initial_losses")
        path = self.log_path
        if path is None or world_info()[0] != 0 or not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    kept.append(line)
            except ValueError:
                continue  # a line cut by the crash
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


# ----------------------------------------------------------------------------------------------------------------
# checks and the selection metric


def check_combine(
    names: Sequence[str],
    method: str,
    *,
    main_task: str | None = None,
    normalize: str = "none",
    loss_weights: str = "realtime",
    gamma: float | None = None,
    prior_losses: Mapping[str, float] | None = None,
) -> int | None:
    """Check the tasks' names and the combination settings before anything is trained or written; returns the main
    task's index (``None`` without ``main_task``).

    Raises:
        NlptoolError: no task, an empty / dotted / duplicate name, an unknown method, ``mgda-ub`` (why: see
            :data:`COMBINE_METHODS`), fewer than two tasks for a method that compares gradients, ``main-aux`` without
            a main task or a main task that is not among the tasks, ``prior`` without every task's prior loss, and
            whatever :func:`~nlptool.core.multitask.combine.weights_from_gram` refuses (normalize, gamma ...).
    """
    if not names:
        raise NlptoolError("no tasks: give at least one task")
    seen: set[str] = set()
    for name in names:
        if not name or "." in name or name != name.strip():
            raise NlptoolError(f"task name {name!r} is not usable: use letters, digits, '-' or '_' (no '.', no spaces)")
        if name in seen:
            raise NlptoolError(f"task name '{name}' is given twice; every task needs its own name")
        seen.add(name)
    if method not in COMBINE_METHODS:
        raise NlptoolError(f"unknown combine method '{method}'; choose one of {', '.join(COMBINE_METHODS)}")
    if method == "mgda-ub":
        raise NlptoolError(
            "combine 'mgda-ub' needs every example to carry the labels of all tasks (one input with several label "
            "fields), and these tasks have separate inputs, where its weights degenerate to 1/|grad_H L_i|^2 (Su, "
            "kexue.fm/archives/8896); use mgda (exact, on the shared parameters)"
        )
    if method in NEEDS_TWO and len(names) < 2:
        raise NlptoolError(f"combine '{method}' compares the tasks' gradients and needs at least 2 tasks, got 1")
    main = None
    if main_task is not None:
        if main_task not in names:
            raise NlptoolError(f"main task '{main_task}' is not among the tasks ({', '.join(names)}); name one of them")
        main = list(names).index(main_task)
    if method == "main-aux" and main is None:
        raise NlptoolError("combine 'main-aux' needs the main task's name (main_task / --main-task)")
    if loss_weights not in LOSS_WEIGHTS:
        raise NlptoolError(f"unknown loss weights '{loss_weights}'; choose one of {', '.join(LOSS_WEIGHTS)}")
    priors = None
    if method == "loss-norm" and loss_weights == "prior":
        missing = [n for n in names if prior_losses is None or n not in prior_losses]
        if missing:
            raise NlptoolError(
                f"loss weights 'prior' need each task's prior loss (the loss of predicting the label prior); none is "
                f"known for {', '.join(missing)}; use initial, realtime or mean"
            )
        priors = [float(prior_losses[n]) for n in names]  # type: ignore[index]
    t = len(names)
    weights_from_gram(  # every remaining check of the settings, on a dummy Gram matrix
        np.eye(t),
        method,
        losses=np.ones(t),
        main=main,
        normalize=normalize,
        loss_weights=loss_weights,
        initial_losses=np.ones(t),
        prior_losses=priors if priors is not None else np.ones(t),
        gamma=gamma,
    )
    return main


def delta_m(values: Mapping[str, float], baselines: Mapping[str, float], higher: Mapping[str, bool]) -> float:
    """LibMTL's Δm in percent: the mean over tasks of ``s·(mᵢ − bᵢ)/|bᵢ| × 100`` (``s = 1`` where higher is better,
    else −1) for the main metrics ``values`` against the single-task ``baselines``."""
    terms = []
    for name, b in baselines.items():
        sign = 1.0 if higher.get(name, True) else -1.0
        terms.append(sign * (float(values[name]) - float(b)) / abs(float(b)) * 100.0)
    return float(np.mean(terms))


# ----------------------------------------------------------------------------------------------------------------
# fit


@dataclass
class MultiTaskFit:
    """What :func:`fit_multitask` did.

    Attributes:
        metrics: what ``metrics.json`` holds: ``tasks`` (per task: ``train_examples``, ``metric``), ``steps``,
            ``total_steps``, ``train_seconds``, ``steps_per_s``, ``combine`` (the settings), ``best_step``,
            ``selection`` (``delta_m`` or ``mean_main``) and, with dev data, ``dev`` (the saved model's metrics:
            ``NAME.KEY``, ``mean_main``, ``delta_m`` with baselines), ``baselines``.
        train_result: the shared loop's :class:`~nlptool.core.train.TrainResult`.
        model_dir: ``out_dir`` (rank 0), else ``None``.
        from_best: whether the saved model is the best dev checkpoint (else the final weights).
        last_step: the last step's log row (:attr:`GradientCombiner.last`).
        main: whether this process wrote the files (rank 0).
    """

    metrics: dict[str, Any]
    train_result: TrainResult
    model_dir: Path | None
    from_best: bool
    last_step: dict[str, Any] | None = field(default=None, repr=False)
    main: bool = True


def fit_multitask(
    encoder: nn.Module,
    tasks: Sequence[Any],
    examples: Mapping[str, Sequence[Any]],
    config: TrainConfig,
    *,
    out_dir: str | Path | None,
    dev: Mapping[str, Any] | None = None,
    combine: str = "gradnorm-sum",
    main_task: str | None = None,
    normalize: str = "none",
    loss_weights: str = "realtime",
    gamma: float | None = None,
    prior_losses: Mapping[str, float] | None = None,
    baselines: Mapping[str, float] | None = None,
    on_progress: Callable[[dict], None] | None = None,
) -> MultiTaskFit:
    """Train ``encoder`` with every task of ``tasks`` at once, their gradients combined by ``combine``; save it.

    Args:
        encoder: the shared encoder (a :class:`~nlptool.core.encoder.SentenceEncoder`; trained in place; needs
            ``save(folder)`` when ``out_dir`` is given).
        tasks: :class:`~nlptool.core.tasks.Task` objects on ``encoder``, with distinct names.
        examples: ``{name: the task's training examples}`` (what its ``collate`` takes).
        config: the loop's options; ``epochs`` count passes over the largest task, ``max_steps`` overrides them.
            ``output_dir`` (``out_dir/training``), ``metric``, ``greater_is_better`` and ``group_by_length`` (off)
            are set here; ``lr_scale`` may name ``heads.NAME.`` prefixes.
        out_dir: the output folder (see the module docstring), or ``None`` to write nothing.
        dev: ``{name: dev data for the task's evaluate}`` (tasks without an entry are not evaluated).
        combine: one of :data:`COMBINE_METHODS` (``mgda-ub`` is refused).
        main_task: the main task's name (``main-aux``).
        normalize, loss_weights, gamma: the ``mgda`` / ``loss-norm`` settings.
        prior_losses: ``{name: prior loss}`` for ``loss-norm`` with ``prior``.
        baselines: ``{name: single-task main dev metric}`` for every evaluated task: selection by Δm.
        on_progress: the loop's progress callback (rank 0); step events also carry ``task_losses`` and
            ``task_weights`` (``{name: value}``).

    Returns:
        A :class:`MultiTaskFit`.

    Raises:
        NlptoolError: the checks of :func:`check_combine`, a task without examples, dev data or a baseline for an
            unknown task, a baseline missing for an evaluated task or equal to 0, the loop's errors.
    """
    names = [t.name for t in tasks]
    main = check_combine(
        names,
        combine,
        main_task=main_task,
        normalize=normalize,
        loss_weights=loss_weights,
        gamma=gamma,
        prior_losses=prior_losses,
    )
    dev = {k: v for k, v in (dev or {}).items() if v is not None}
    for what, mapping in (("examples", examples), ("dev data", dev), ("a baseline", baselines or {})):
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise NlptoolError(
                f"{what} given for unknown task(s) {', '.join(unknown)}; the tasks are {', '.join(names)}"
            )
    for name in names:
        if not examples.get(name):
            raise NlptoolError(f"task '{name}' has no training examples; check its training file")
    if baselines:
        missing = [n for n in dev if n not in baselines]
        if missing:
            raise NlptoolError(f"no baseline for the evaluated task(s) {', '.join(missing)}: Δm needs one per task")
        zero = [n for n, b in baselines.items() if not (math.isfinite(float(b)) and float(b) != 0.0)]
        if zero:
            raise NlptoolError(f"the baseline of {', '.join(zero)} is 0 or not finite; Δm divides by it")
        if not dev:
            raise NlptoolError("baselines were given but no task has dev data; Δm needs dev metrics")
    main_rank = world_info()[0] == 0
    out = Path(out_dir) if out_dir is not None else None
    training_dir = out / TRAINING_DIR if out is not None else None
    model = MultiTaskModel(encoder, tasks)
    virtual = VirtualExamples([len(examples[n]) for n in names], config.seed)
    collate = _collate_for(tasks, [examples[n] for n in names], virtual)
    log_path = out / MTL_LOG if out is not None else None
    if log_path is not None and main_rank and not config.resume:
        out.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        log_path.unlink(missing_ok=True)  # a fresh run starts the log anew
    combiner = GradientCombiner(
        model,
        combine,
        main=main,
        seed=config.seed,
        normalize=normalize,
        loss_weights=loss_weights,
        gamma=gamma,
        prior_losses=[float(prior_losses[n]) for n in names]
        if combine == "loss-norm" and loss_weights == "prior"
        else None,  # fmt: skip
        log_path=log_path,
    )
    by_name = {t.name: t for t in tasks}
    higher = {t.name: bool(t.greater_is_better) for t in tasks}
    selection = "delta_m" if baselines else "mean_main"

    def evaluate(m: Any) -> dict[str, float]:
        metrics: dict[str, float] = {}
        mains: dict[str, float] = {}
        for name, data in dev.items():
            task = by_name[name]
            result = task.evaluate(m.encoder, data)
            metrics.update({f"{name}.{k}": float(v) for k, v in result.items()})
            mains[name] = float(result[task.metric])
        metrics["mean_main"] = float(np.mean(list(mains.values())))
        if baselines:
            metrics["delta_m"] = delta_m(mains, baselines, higher)
        return metrics

    def save_best(m: Any, folder: Path) -> None:
        _save_model(m.encoder, tasks, folder)

    config = dataclasses.replace(
        config,
        output_dir=str(training_dir) if training_dir is not None else None,
        metric=selection if dev else None,
        greater_is_better=True,
        group_by_length=False,
    )

    def progress(event: dict) -> None:
        if on_progress is None:
            return
        if "event" not in event and combiner.last is not None:
            event = {**event, "task_losses": combiner.last["losses"], "task_weights": combiner.last["weights"]}
        on_progress(event)

    try:
        result = train(
            model,
            virtual,
            collate,
            _unused_loss,
            config,
            evaluate=evaluate if dev else None,
            save_best=save_best if dev and out is not None else None,
            on_progress=progress,
            gradient_hook=combiner,
        )
    except BaseException:
        if log_path is not None and main_rank and not config.resume and training_dir is not None:
            if not (training_dir / CHECKPOINT_DIR).is_dir():
                log_path.unlink(missing_ok=True)  # nothing to resume: leave nothing behind
        raise
    evals = [e for e in result.history if e.get("event") == "eval"]
    saved_eval = None
    if evals:
        best = [e for e in evals if e.get("step") == result.best_step]
        saved_eval = best[-1] if best else evals[-1]
    from_best = False
    if main_rank and out is not None:
        from_best = _write_output(encoder, tasks, out, training_dir)  # type: ignore[arg-type]
    if not from_best and evals:
        saved_eval = evals[-1]
    metrics = _metrics(
        names,
        tasks,
        examples,
        result,
        saved_eval,
        {"method": combine, "main_task": main_task, "normalize": normalize, "loss_weights": loss_weights},
        gamma,
        selection,
        baselines,
    )
    if main_rank and out is not None:
        _write_json(out / "metrics.json", {"metrics": metrics})
    return MultiTaskFit(metrics, result, out if main_rank else None, from_best, combiner.last, main_rank)


def _unused_loss(model: nn.Module, batch: Any) -> Tensor:  # the gradient hook computes the losses
    raise AssertionError("not called with a gradient hook")


def _metrics(
    names: list[str],
    tasks: Sequence[Any],
    examples: Mapping[str, Sequence[Any]],
    result: TrainResult,
    saved_eval: dict | None,
    combine: dict[str, Any],
    gamma: float | None,
    selection: str,
    baselines: Mapping[str, float] | None,
) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "tasks": {t.name: {"train_examples": len(examples[t.name]), "metric": t.metric} for t in tasks},
        "steps": result.steps,
        "total_steps": result.total_steps,
        "train_seconds": result.train_seconds,
        "steps_per_s": result.steps / result.train_seconds if result.train_seconds > 0 else 0.0,
        "combine": {**combine, "gamma": gamma},
        "selection": selection,
        "best_step": result.best_step,
    }
    if saved_eval is not None:
        metrics["dev"] = dict(saved_eval["metrics"])
        metrics["dev_step"] = saved_eval["step"]
        if "delta_m" in saved_eval["metrics"]:
            metrics["delta_m"] = saved_eval["metrics"]["delta_m"]
    if baselines:
        metrics["baselines"] = {k: float(v) for k, v in baselines.items()}
    return metrics


def _save_model(encoder: Any, tasks: Sequence[Any], folder: Path) -> None:
    """``folder/encoder`` (the encoder's own save) and ``folder/heads/NAME`` (what each task saves)."""
    encoder.save(folder / ENCODER_DIR)
    for task in tasks:
        head_dir = folder / HEADS_DIR / task.name
        head_dir.mkdir(parents=True, exist_ok=True)
        task.save(head_dir)


def _write_output(encoder: Any, tasks: Sequence[Any], out: Path, training_dir: Path) -> bool:
    """``out/encoder`` and ``out/tasks/NAME`` from the best checkpoint (if the loop kept one) or the final weights;
    returns whether the best was used."""
    best = training_dir / BEST_DIR
    from_best = best.is_dir()
    source = best if from_best else out / f".final-{os.getpid()}"
    if not from_best:
        shutil.rmtree(source, ignore_errors=True)
        _save_model(encoder, tasks, source)
    for name in (ENCODER_DIR, TASKS_DIR):
        shutil.rmtree(out / name, ignore_errors=True)
    tasks_stage = source / TASKS_DIR
    shutil.rmtree(tasks_stage, ignore_errors=True)
    for task in tasks:
        folder = tasks_stage / task.name
        _link_tree(source / ENCODER_DIR, folder)
        _copy_tree(source / HEADS_DIR / task.name, folder)
    os.replace(source / ENCODER_DIR, out / ENCODER_DIR)
    os.replace(tasks_stage, out / TASKS_DIR)
    shutil.rmtree(source, ignore_errors=True)
    return from_best


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of ``src`` into ``dst`` (same layout); copy where linking fails (another file system)."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def _copy_tree(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.unlink(missing_ok=True)  # never write through a hard link into the encoder's files
            shutil.copy2(path, target)


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=True) + "\n", "utf-8")
    os.replace(tmp, path)

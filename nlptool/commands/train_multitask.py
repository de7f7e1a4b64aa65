"""``nlptool train-multitask``: one shared encoder trained on several tasks at once, the per-task gradients combined
(Su Jianlin's multi-task posts, parts 1-3). The trainer is :mod:`nlptool.core.multitask.trainer`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from nlptool.commands._common import (
    DeviceOpt,
    ForceOpt,
    GradAccumOpt,
    MaxGradNormOpt,
    MetricsOutOpt,
    ModelOpt,
    ReportTo,
    ReportToOpt,
    ResumeOpt,
    SaveEveryOpt,
    SeedOpt,
    TrainingProgress,
    TrainingRun,
    WarmupOpt,
    WeightDecayOpt,
    info,
    interrupt_safe_output,
    print_table,
    write_metrics,
)
from nlptool.commands.encode import PoolingOpt, model_spec
from nlptool.core.device import resolve_device

#: The task kinds of ``--task NAME=KIND:TRAIN[:DEV]``.
KINDS = ("sts", "ner", "classify")


class Combine(str, Enum):
    """nlptool.core.multitask.trainer.COMBINE_METHODS."""

    sum = "sum"
    loss_norm = "loss-norm"
    gradnorm_sum = "gradnorm-sum"
    mgda = "mgda"
    mgda_ub = "mgda-ub"
    pcgrad = "pcgrad"
    main_aux = "main-aux"


class LossWeights(str, Enum):
    initial = "initial"
    prior = "prior"
    realtime = "realtime"
    mean = "mean"


class MgdaNormalize(str, Enum):
    none = "none"
    l2 = "l2"
    loss = "loss"


class NerHead(str, Enum):
    egp = "egp"
    gp = "gp"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


TaskOpt = Annotated[
    list[str],
    typer.Option(
        "--task",
        help="A task, NAME=KIND:TRAIN[:DEV] (repeat for each): KIND sts (sentence pairs, CoSENT, as train-cosent "
        "reads them), ner (span NER JSONL, as 'ner train'), classify (text and label, as 'classify train'). NAME "
        "names its head, its folder OUT/tasks/NAME and its metrics.",
        show_default=False,
    ),
]
OutOpt = Annotated[str, typer.Option("--out", help="Output folder (must be new or empty).")]
CombineOpt = Annotated[
    Combine,
    typer.Option(
        "--combine",
        help="How the tasks' gradients on the encoder become one update: sum; loss-norm (weights on the losses, "
        "--loss-weights); gradnorm-sum (each gradient normalised, then summed: Su's choice); mgda (the exact "
        "min-norm point: no task gets worse to first order); pcgrad; main-aux (--main-task improves, the others "
        "must not get worse); mgda-ub is refused (it needs one input with all tasks' labels).",
    ),
]
LossWeightsOpt = Annotated[
    LossWeights,
    typer.Option(
        "--loss-weights",
        help="loss-norm's weights: initial (1/first loss), realtime (1/current loss), mean (the generalised mean's "
        "gradient, --gamma); prior is refused (the tasks' prior losses are not known).",
    ),
]
GammaOpt = Annotated[
    float | None, typer.Option("--gamma", help="The exponent of --loss-weights mean (1: arithmetic, 0: geometric).")
]
MgdaNormalizeOpt = Annotated[
    MgdaNormalize,
    typer.Option("--mgda-normalize", help="mgda: rescale each gradient first (l2: to unit length; loss: by 1/loss)."),
]
MainTaskOpt = Annotated[str | None, typer.Option("--main-task", help="main-aux: the name of the main task.")]
BaselineOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--baseline",
        help="NAME=metrics.json of the single-task run of a task (repeat for each evaluated task): the best model "
        "is then chosen by Δm, the mean relative change of the tasks' main dev metrics (LibMTL), reported too.",
    ),
]
NerHeadOpt = Annotated[NerHead, typer.Option("--ner-head", help="ner tasks: egp (Efficient GlobalPointer) or gp.")]
TextColOpt = Annotated[str, typer.Option("--text-col", help="classify tasks: the text column/field.")]
LabelColOpt = Annotated[str, typer.Option("--label-col", help="classify tasks: the label column/field.")]
StepsOpt = Annotated[
    int | None, typer.Option("--steps", help="Optimizer steps (overrides --epochs); one batch per task each.", min=1)
]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Passes over the largest task (smaller ones cycle).", min=1)]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Examples per task per optimizer step.", min=2)]
LrOpt = Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).", min=0.0)]
HeadLrScaleOpt = Annotated[
    float | None,
    typer.Option(
        "--head-lr-scale",
        help="Learning rate of the ner and classify heads = lr × this (default: 'ner train's and 'classify train's "
        "defaults).",
        min=0.0,
    ),
]
MaxLengthOpt = Annotated[int, typer.Option("--max-length", help="Max tokens per text / NER window.", min=4)]
EvalEveryOpt = Annotated[int, typer.Option("--eval-every", help="Also evaluate every N steps (0: per epoch).", min=0)]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="bf16 autocast (fp16 is not supported here).")]


@dataclass
class TaskSpec:
    """One ``--task NAME=KIND:TRAIN[:DEV]``."""

    name: str
    kind: str
    train: str
    dev: str | None


def parse_task_specs(specs: list[str]) -> list[TaskSpec]:
    """The ``--task`` values; a usage error (exit 2) naming ``--task`` for a spec that does not parse, an unknown
    kind, a bad or duplicate name."""
    out: list[TaskSpec] = []
    for spec in specs:
        name, eq, rest = spec.partition("=")
        kind, colon, paths = rest.partition(":")
        train, _, dev = paths.partition(":")
        if not eq or not colon or not name.strip() or not train:
            raise typer.BadParameter(
                f"'{spec}' is not NAME=KIND:TRAIN[:DEV] (e.g. sts=sts:train.csv:dev.csv)", param_hint="--task"
            )
        if kind not in KINDS:
            raise typer.BadParameter(
                f"'{spec}': unknown kind '{kind}'; choose one of {', '.join(KINDS)}", param_hint="--task"
            )
        if "." in name or name != name.strip():
            raise typer.BadParameter(
                f"'{spec}': task name '{name}' must have no '.' and no spaces", param_hint="--task"
            )
        if any(s.name == name for s in out):
            raise typer.BadParameter(
                f"task name '{name}' is given twice; give every task its own name", param_hint="--task"
            )
        out.append(TaskSpec(name, kind, train, dev or None))
    if not out:
        raise typer.BadParameter("give at least one task, NAME=KIND:TRAIN[:DEV]", param_hint="--task")
    return out


@interrupt_safe_output
def train_multitask(
    task: TaskOpt,
    out: OutOpt,
    model: ModelOpt = None,
    pooling: PoolingOpt = None,
    combine: CombineOpt = Combine.gradnorm_sum,
    loss_weights: LossWeightsOpt = LossWeights.realtime,
    gamma: GammaOpt = None,
    mgda_normalize: MgdaNormalizeOpt = MgdaNormalize.none,
    main_task: MainTaskOpt = None,
    baseline: BaselineOpt = None,
    ner_head: NerHeadOpt = NerHead.egp,
    text_col: TextColOpt = "text",
    label_col: LabelColOpt = "label",
    steps: StepsOpt = None,
    epochs: EpochsOpt = 1,
    batch_size: BatchSizeOpt = 16,
    lr: LrOpt = 2e-5,
    head_lr_scale: HeadLrScaleOpt = None,
    warmup: WarmupOpt = 0.1,
    weight_decay: WeightDecayOpt = 0.01,
    max_grad_norm: MaxGradNormOpt = 1.0,
    grad_accum: GradAccumOpt = 1,
    max_length: MaxLengthOpt = 128,
    eval_every: EvalEveryOpt = 0,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.fp32,
    resume: ResumeOpt = False,
    save_every: SaveEveryOpt = 0,
    report_to: ReportToOpt = ReportTo.none,
    metrics_out: MetricsOutOpt = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Train one shared encoder on several tasks at once, combining the tasks' gradients on it each step.

    Each step draws one batch per task (each task its own seeded order; smaller tasks cycle); each task's loss is
    back-propagated on its own and the gradients on the encoder are combined by --combine (heads get their own
    task's gradient). OUT holds encoder/ (loads with encode, eval-sts, SentenceTransformer, AutoModel), tasks/NAME/
    (a folder the single-task command loads: 'ner predict --model OUT/tasks/NAME'), metrics.json (per-task dev
    metrics, Δm with --baseline), mtl_log.jsonl (per step: losses, weights, gradient norms and cosines, the worst
    task's alignment with the update) and training/. Tasks can also come from a YAML file: nlptool --config
    tasks.yaml train-multitask (with 'task: [...]' in it). Runs under torchrun.

    Example: nlptool train-multitask --out mtl --task sts=sts:stsb_train.csv:stsb_dev.csv --task
    ner=ner:conll_train.jsonl:conll_dev.jsonl --combine mgda

    Reference: Su Jianlin, 多任务学习漫谈 (一)-(三), https://kexue.fm/archives/8870, 8896, 8907
    """
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.multitask import fit_multitask

    run = TrainingRun(
        out, force=force, resume=resume, seed=seed, save_every=save_every, metrics_out=metrics_out, report_to=report_to
    )
    specs = parse_task_specs(task)
    combine_settings = _check_combine(specs, combine.value, main_task, loss_weights.value, gamma, mgda_normalize.value)
    baselines = _read_baselines(baseline or [], specs)
    encoder = SentenceEncoder.load(model_spec(model), pooling=pooling.value if pooling else None, max_length=max_length)
    dev_name = resolve_device(device)
    built = [_build_task(s, encoder, dev_name, ner_head.value, text_col, label_col, max_length) for s in specs]
    lr_scale = {f"heads.{b.task.name}.": head_lr_scale or b.head_lr_scale for b in built if b.head_lr_scale}
    run.make_out_dir()  # only now: bad input leaves no folder behind
    if run.main:
        info(_summary(built, encoder, combine.value))
    optimisation = {"epochs": epochs, "max_steps": steps, "batch_size": batch_size, "lr": lr, "warmup_ratio": warmup}
    optimisation |= {"weight_decay": weight_decay, "grad_accum": grad_accum, "max_grad_norm": max_grad_norm or None}
    config = run.config(
        **optimisation, eval_every=eval_every, device=dev_name, precision=precision.value, lr_scale=lr_scale or None
    )
    with TrainingProgress("examples", ("mean_main", "mean main metric"), extra=_task_stats) as on_progress:
        result = fit_multitask(
            encoder,
            [b.task for b in built],
            {b.task.name: b.examples for b in built},
            config,
            out_dir=run.out_dir,
            dev={b.task.name: b.dev for b in built if b.dev is not None},
            baselines=baselines or None,
            on_progress=on_progress,
            **combine_settings,
        )
    if run.main:
        _finish(run, result, built, specs, encoder, config)


def _check_combine(
    specs: list[TaskSpec], method: str, main_task: str | None, loss_weights: str, gamma: float | None, normalize: str
) -> dict[str, Any]:
    """The combination settings for fit_multitask; usage errors name the option."""
    from nlptool.core.errors import NlptoolError
    from nlptool.core.multitask import check_combine
    from nlptool.core.multitask.trainer import NEEDS_TWO

    names = [s.name for s in specs]
    if method == "mgda-ub":
        raise typer.BadParameter(
            "mgda-ub needs every example to carry the labels of all tasks (one input with several label fields); "
            "these tasks have separate inputs, where its weights degenerate (Su, kexue.fm/archives/8896); use mgda",
            param_hint="--combine",
        )
    if method in NEEDS_TWO and len(names) < 2:
        raise typer.BadParameter(
            f"{method} compares the tasks' gradients: give at least 2 --task", param_hint="--combine"
        )
    if main_task is not None and main_task not in names:
        raise typer.BadParameter(f"'{main_task}' names no task (tasks: {', '.join(names)})", param_hint="--main-task")
    if method == "main-aux" and main_task is None:
        raise typer.BadParameter("main-aux needs the main task: --main-task NAME", param_hint="--main-task")
    if method == "loss-norm" and loss_weights == "prior":
        raise typer.BadParameter(
            "prior needs each task's prior loss (the loss of predicting the label prior), which is not known for "
            "these tasks; use initial, realtime or mean",
            param_hint="--loss-weights",
        )
    settings = {"combine": method, "main_task": main_task, "loss_weights": loss_weights, "gamma": gamma}
    settings["normalize"] = normalize
    try:
        check_combine(names, method, main_task=main_task, normalize=normalize, loss_weights=loss_weights, gamma=gamma)
    except NlptoolError as exc:
        raise typer.BadParameter(str(exc), param_hint="--combine") from None
    return settings


def _read_baselines(values: list[str], specs: list[TaskSpec]) -> dict[str, float]:
    """``{task: main dev metric}`` from ``--baseline NAME=metrics.json`` (a single-task command's metrics.json)."""
    from nlptool.core.errors import NlptoolError

    metric_of = {"sts": "spearman", "ner": "f1", "classify": "accuracy"}
    kinds = {s.name: s.kind for s in specs}
    out: dict[str, float] = {}
    for value in values:
        name, eq, path = value.partition("=")
        if not eq or not path:
            raise typer.BadParameter(f"'{value}' is not NAME=metrics.json", param_hint="--baseline")
        if name not in kinds:
            raise typer.BadParameter(f"'{name}' names no task (tasks: {', '.join(kinds)})", param_hint="--baseline")
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise NlptoolError(f"--baseline {value}: cannot read {path} ({exc.strerror}); check the path") from None
        except ValueError as exc:
            raise NlptoolError(f"--baseline {value}: {path} is not JSON ({exc}); give a metrics.json") from None
        metrics = doc.get("metrics", doc) if isinstance(doc, dict) else {}
        metric = metric_of[kinds[name]]
        keys = (f"dev_{metric}", metric, f"{name}.{metric}")
        found = next((metrics[k] for k in keys if isinstance(metrics.get(k), int | float)), None)
        if found is None and isinstance(metrics.get("dev"), dict):
            found = metrics["dev"].get(f"{name}.{metric}")
        if found is None:
            raise NlptoolError(
                f"--baseline {value}: {path} has no dev {metric} (looked for {', '.join(keys)} under 'metrics'); give "
                "the metrics.json of a single-task run with dev data"
            )
        out[name] = float(found)
    return out


@dataclass
class _Built:
    spec: TaskSpec
    task: Any
    examples: list[Any]
    dev: Any
    rows: int
    head_lr_scale: float | None


def _build_task(
    spec: TaskSpec, encoder: Any, device: str, ner_head: str, text_col: str, label_col: str, max_length: int
) -> _Built:
    """Read a task's files and make its Task object (the same readers and objects as its single-task command)."""
    if spec.kind == "sts":
        from nlptool.commands.train_cosent import _read_pairs_files
        from nlptool.core.cosent import PairTask

        columns = {"text1_col": None, "text2_col": None, "label_col": None, "header": None}
        data, dev = _read_pairs_files(spec.train, spec.dev, None, columns)
        task = PairTask(encoder, data.label_type, loss="cosent", eval_device=device)
        task.name = spec.name
        return _Built(spec, task, task.examples(data), dev, len(data), None)
    if spec.kind == "ner":
        from nlptool.commands.ner import _read_train_files, report_alignment
        from nlptool.core.ner import DEFAULT_HEAD_LR_SCALE, NerTask, label_set, longest_entity_tokens

        data, dev = _read_train_files(spec.train, spec.dev)
        task = NerTask(encoder, label_set(data), head=ner_head, max_length=max_length, eval_device=device)
        task.name = spec.name
        windows, stats = task.windows(data)
        report_alignment(stats, f"task {spec.name}: training data {spec.train}")
        task.max_span_tokens = longest_entity_tokens(windows)
        return _Built(spec, task, windows, dev, len(data), DEFAULT_HEAD_LR_SCALE)
    return _build_classify(spec, encoder, device, text_col, label_col)


def _build_classify(spec: TaskSpec, encoder: Any, device: str, text_col: str, label_col: str) -> _Built:
    from nlptool.commands.classify import _read_train_files
    from nlptool.core.classify import DEFAULT_HEAD_LR_SCALE, ClassifyTask

    data, dev = _read_train_files(spec.train, spec.dev, text_col, label_col, None, dev_hint="the :DEV part")
    task = ClassifyTask(encoder, data.label_set(), eval_device=device)
    task.name = spec.name
    return _Built(spec, task, task.examples(data), dev, len(data), DEFAULT_HEAD_LR_SCALE)


def _task_stats(event: dict) -> str:
    """The progress bar's per-task part: ``name loss/weight`` for each task."""
    losses, weights = event.get("task_losses") or {}, event.get("task_weights") or {}
    return "".join(f" | {n} {losses[n]:.3f} w {weights.get(n, float('nan')):.3g}" for n in losses)


def _summary(built: list[_Built], encoder: Any, method: str) -> str:
    tasks = "; ".join(
        f"{b.spec.name} ({b.spec.kind}: {b.rows} rows from {b.spec.train}{', dev ' + b.spec.dev if b.spec.dev else ''})"
        for b in built
    )
    return f"train-multitask: {tasks}; model {encoder.name}; combine {method}"


def _finish(run: Any, result: Any, built: list[_Built], specs: list[TaskSpec], encoder: Any, config: Any) -> None:
    """After training (rank 0): the table, metrics.json, --metrics-out, the model card and the summary line."""
    from nlptool.core.card import CardInfo

    metrics = result.metrics
    last = result.last_step or {}
    rows = []
    for b in built:
        name = b.task.name
        main = (metrics.get("dev") or {}).get(f"{name}.{b.task.metric}")
        weight = (last.get("weights") or {}).get(name)
        rows.append(
            [name, b.spec.kind, b.task.metric, main if main is not None else "-", weight if weight is not None else "-"]
        )
    print_table("train-multitask: saved model", ["task", "kind", "metric", "dev", "last weight"], rows)
    if "delta_m" in metrics:
        info(f"Δm against the baselines: {metrics['delta_m']:+.2f}%")
    params = {
        **metrics["combine"],
        "epochs": config.epochs,
        "steps": config.max_steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "lr_scale": config.lr_scale,
        "warmup": config.warmup_ratio,
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "grad_accum": config.grad_accum,
        "max_length": encoder.max_length,
        "pooling": encoder.pooling,
        "world_size": run.world,
        "device": config.device,
        "precision": config.precision,
        "tasks": {s.name: {"kind": s.kind, "train": s.train, "dev": s.dev} for s in specs},
    }
    inputs = [p for s in specs for p in (s.train, s.dev) if p]
    files = tuple((f"{b.spec.name} {role}", path, n) for b in built for role, path, n in
                  (("train", b.spec.train, b.rows), ("dev", b.spec.dev, None)) if path)  # fmt: skip
    card = CardInfo(
        command="train-multitask",
        technique=f"One encoder trained on {len(built)} tasks ({', '.join(b.spec.kind for b in built)}); the tasks' "
        f"gradients on the encoder combined by {metrics['combine']['method']} each step. Task heads: tasks/NAME/.",
        reference="Su Jianlin, 多任务学习漫谈 (一)-(三), https://kexue.fm/archives/8870, 8896, 8907",
        usage="sentence-transformers",
        library_name="sentence-transformers",
        tags=("multi-task", metrics["combine"]["method"]),
        data=files,
        nlptool_usage=("nlptool encode sentences.txt --model {path}/encoder",),
    )
    run.finish(metrics, inputs=inputs, model=encoder.name, params=params, write=write_metrics, card=card)
    info(f"train-multitask: model saved to {run.out_dir} ({metrics['steps']} steps)")

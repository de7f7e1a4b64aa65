"""``nlptool train-cosent``: train a sentence encoder with CoSENT (or the two baselines it is compared with)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer

from nlptool.commands._common import (
    DeviceOpt,
    ForceOpt,
    GradAccumOpt,
    HeaderOpt,
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
    warn,
    with_before,
    write_metrics,
)
from nlptool.commands.encode import PoolingOpt, model_spec
from nlptool.commands.eval_sts import LabelCol, LabelType, Text1Col, Text2Col
from nlptool.core.device import resolve_device


class Loss(str, Enum):
    """The pair losses of nlptool.core.cosent.LOSSES."""

    cosent = "cosent"
    softmax = "softmax"
    cosine_mse = "cosine-mse"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


# The command's options (help texts are the --help reference). The optimisation options mirror TrainConfig's.
TrainOpt = Annotated[str, typer.Option("--train", help="Training pairs: CSV/TSV/JSONL, two texts and a label.")]
OutOpt = Annotated[str, typer.Option("--out", help="Output folder for the trained model (must be new or empty).")]
DevOpt = Annotated[
    str | None, typer.Option("--dev", help="Dev pairs: Spearman after each epoch; the best model is kept.")
]
LossOpt = Annotated[
    Loss, typer.Option("--loss", help="cosent (Su 2022), softmax (Sentence-BERT), cosine-mse (naive regression).")
]
ScaleOpt = Annotated[
    float | None,
    typer.Option(
        "--scale",
        help="CoSENT's λ (cosine differences are multiplied by it). Default: 20 (Su's value, for raw encoders "
        "such as bert-base), 5 for models that are already sentence encoders (see BENCHMARKS.md).",
        show_default=False,
    ),
]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Passes over the training pairs.", min=1)]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Pairs per optimizer step (global).", min=2)]
LrOpt = Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).", min=0.0)]
MaxLengthOpt = Annotated[
    int,
    typer.Option(
        "--max-length", help="Max tokens per text in training (longer texts are cut); saved with the model.", min=1
    ),
]
LabelTypeOpt = Annotated[
    LabelType | None, typer.Option("--label-type", help="Label kind (default: detected from the training file).")
]
EvalEveryOpt = Annotated[int, typer.Option("--eval-every", help="Also evaluate every N steps (0: per epoch).", min=0)]
GroupByLengthOpt = Annotated[
    bool,
    typer.Option(
        "--group-by-length/--no-group-by-length",
        help="Batch pairs of similar length: less padding, about 1.5x faster on STS-B, same dev Spearman there.",
    ),
]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="bf16/fp16 autocast (CUDA).")]


@interrupt_safe_output
def train_cosent(
    train: TrainOpt,
    out: OutOpt,
    dev: DevOpt = None,
    model: ModelOpt = None,
    pooling: PoolingOpt = None,
    loss: LossOpt = Loss.cosent,
    scale: ScaleOpt = None,
    epochs: EpochsOpt = 1,
    batch_size: BatchSizeOpt = 16,
    lr: LrOpt = 2e-5,
    warmup: WarmupOpt = 0.1,
    weight_decay: WeightDecayOpt = 0.01,
    max_grad_norm: MaxGradNormOpt = 1.0,
    grad_accum: GradAccumOpt = 1,
    max_length: MaxLengthOpt = 128,
    label_type: LabelTypeOpt = None,
    text1_col: Text1Col = None,
    text2_col: Text2Col = None,
    label_col: LabelCol = None,
    eval_every: EvalEveryOpt = 0,
    group_by_length: GroupByLengthOpt = True,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.fp32,
    resume: ResumeOpt = False,
    save_every: SaveEveryOpt = 0,
    report_to: ReportToOpt = ReportTo.none,
    header: HeaderOpt = None,
    metrics_out: MetricsOutOpt = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Train a sentence encoder on labelled pairs with the CoSENT loss (ranks all pairs of cosines in a batch).

    L = log(1 + Σ_{label_i > label_j} exp(λ(cos_j − cos_i))), λ = --scale. Labels may be binary, graded scores
    (STS 0–5) or NLI (entailment > neutral > contradiction). The output folder loads with `nlptool encode OUT`,
    transformers.AutoModel and sentence_transformers.SentenceTransformer; it also holds a model card (README.md),
    metrics.json and training/train_log.jsonl (with --report-to tensorboard also TensorBoard files in
    training/runs/). Runs under torchrun (DistributedDataParallel) without changes.

    Example: nlptool train-cosent --train stsb_train.csv --dev stsb_dev.csv --out my-model

    Reference: Su Jianlin, "CoSENT(一):比Sentence-BERT更有效的句向量方案", https://kexue.fm/archives/8847
    """
    from nlptool.core.cosent import PairTask, fit
    from nlptool.core.encoder import SentenceEncoder

    run = TrainingRun(
        out, force=force, resume=resume, seed=seed, save_every=save_every, metrics_out=metrics_out, report_to=report_to
    )
    columns = {"text1_col": text1_col, "text2_col": text2_col, "label_col": label_col, "header": header}
    data, dev_data = _read_pairs_files(train, dev, label_type.value if label_type else None, columns)
    encoder = SentenceEncoder.load(model_spec(model), pooling=pooling.value if pooling else None, max_length=max_length)
    dev_name = resolve_device(device)
    if scale is not None and not scale > 0:
        raise typer.BadParameter("must be positive", param_hint="--scale")
    task = PairTask(encoder, data.label_type, loss=loss.value, scale=scale, eval_device=dev_name)
    task.examples(data)  # softmax on graded scores fails here, before --out is created
    run.make_out_dir()  # only now: bad data or a bad model leave no folder behind
    if run.main:
        info(_summary(train, data, encoder, task))
    optimisation = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay}
    optimisation |= {"warmup_ratio": warmup, "grad_accum": grad_accum, "max_grad_norm": max_grad_norm or None}
    config = run.config(
        **optimisation,
        eval_every=eval_every,
        device=dev_name,
        precision=precision.value,
        group_by_length=group_by_length,
    )
    with TrainingProgress("pairs", ("spearman", "Spearman")) as on_progress:
        progress_hook = with_before(on_progress, _before_line)
        result = fit(encoder, data, run.out_dir, dev=dev_data, config=config, task=task, on_progress=progress_hook)
    if run.main:
        _finish(run, result, config, task, encoder, max_grad_norm, train, data, dev, dev_data)


def _finish(
    run: Any, result: Any, config: Any, task: Any, encoder: Any, max_grad_norm: float, train: str, data: Any,
    dev: str | None, dev_data: Any,
) -> None:  # fmt: skip
    """After training (rank 0): the dev table, metrics.json, --metrics-out, the model card and the summary line."""
    if dev_data is not None:
        _print_dev_table(result)
    params = _params(config, task, max_grad_norm=max_grad_norm, encoder=encoder, world_size=run.world)
    inputs = [train, *([dev] if dev else [])]
    # write=: this module's name for write_metrics, which tests replace to interrupt a finished run
    card = _card(task, train, data, dev, dev_data)
    run.finish(result.metrics, inputs=inputs, model=encoder.name, params=params, write=write_metrics, card=card)
    steps, speed = result.metrics["steps"], result.metrics["pairs_per_s"]
    info(f"train-cosent: model saved to {run.out_dir} ({steps} steps, {speed:.1f} pairs/s)")


def _read_pairs_files(train: str, dev: str | None, label_type: str | None, columns: dict[str, Any]) -> tuple[Any, Any]:
    """The training pairs and the dev pairs (``None`` without --dev, or with a warning when Spearman is undefined on
    them: the run then trains without dev evaluation)."""
    from nlptool.core.cosent import dev_problem
    from nlptool.core.pairs import read_pairs

    data = read_pairs(train, label_type=label_type, **columns)
    dev_data = read_pairs(dev, label_type=data.label_type, **columns) if dev is not None else None
    if dev_data is not None and (problem := dev_problem(dev_data)) is not None:
        warn(
            f"--dev {dev} {problem}, so dev Spearman is undefined: the dev set is not used (no dev evaluation, no "
            "best-checkpoint selection; the final weights are saved); give dev pairs with different labels"
        )
        dev_data = None
    return data, dev_data


#: The technique of each --loss, for the model card: (what it does, reference).
_TECHNIQUES = {
    Loss.cosent.value: (
        "CoSENT loss: for every two pairs in a batch whose labels are ordered, the cosine of the pair with the "
        "higher label should be the larger; L = log(1 + Σ_{label_i > label_j} exp(λ(cos_j − cos_i))), λ = {scale}.",
        'Su Jianlin, "CoSENT(一):比Sentence-BERT更有效的句向量方案" (2022), https://kexue.fm/archives/8847',
    ),
    Loss.softmax.value: (
        "Sentence-BERT's softmax loss: a linear classifier over (u, v, |u − v|) of the two sentence embeddings "
        "(discarded after training).",
        'Reimers and Gurevych, "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks" (2019), '
        "https://arxiv.org/abs/1908.10084",
    ),
    Loss.cosine_mse.value: (
        "Cosine regression: the mean squared error between the pair's cosine and its (rescaled) label "
        "(the baseline CoSENT is compared with).",
        'Su Jianlin, "CoSENT(一):比Sentence-BERT更有效的句向量方案" (2022), https://kexue.fm/archives/8847',
    ),
}


def _card(task: Any, train: str, data: Any, dev: str | None, dev_data: Any) -> Any:
    """The model card's facts about a sentence encoder trained by this command."""
    from nlptool.core.card import CardInfo

    technique, reference = _TECHNIQUES[task.loss_name]
    files = [("train", train, len(data))]
    if dev is not None:
        files.append(("dev", dev, len(dev_data) if dev_data is not None else None))
    return CardInfo(
        command="train-cosent",
        technique=technique.replace("{scale}", f"{task.scale:g}" if task.scale is not None else "?"),
        reference=reference,
        usage="sentence-transformers",
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=("sentence-transformers", "sentence-similarity", "feature-extraction", task.loss_name),
        data=tuple(files),
        nlptool_usage=(
            "nlptool encode sentences.txt --model {path} -o embeddings.jsonl",
            "nlptool eval-sts pairs.csv --model {path}",
        ),
    )


def _summary(train: str, data: Any, encoder: Any, task: Any) -> str:
    """The line that says what is about to be trained."""
    lam = f", λ={task.scale}" if task.loss_name == Loss.cosent.value else ""
    return (
        f"train-cosent: {len(data)} {data.label_type} pairs from {train}; model {encoder.name} "
        f"(pooling {encoder.pooling}, max length {encoder.max_length}); loss {task.loss_name}{lam}"
    )


def _print_dev_table(result: Any) -> None:
    before = (result.fit.before or {}).get("spearman", float("nan"))
    rows = [["before training", 100 * before], ["saved model", 100 * result.metrics["dev_spearman"]]]
    print_table("train-cosent", ["", "dev Spearman ×100"], rows)


def _params(config: Any, task: Any, *, max_grad_norm: float, encoder: Any, world_size: int) -> dict[str, Any]:
    """The run's parameters for metrics.json (the option values, and the encoder's pooling and max length)."""
    return {
        "loss": task.loss_name,
        "scale": task.scale,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "warmup": config.warmup_ratio,
        "weight_decay": config.weight_decay,
        "max_grad_norm": max_grad_norm,
        "grad_accum": config.grad_accum,
        "max_length": encoder.max_length,
        "pooling": encoder.pooling,
        "group_by_length": config.group_by_length,
        "world_size": world_size,
        "device": config.device,
        "precision": config.precision,
    }


def _before_line(metrics: dict) -> str:
    """The line for the dev metric measured before training."""
    return f"dev Spearman before training: {100 * metrics['spearman']:.2f}"

"""``nlptool classify``: text classification on a sentence encoder (pooled embedding → linear → cross-entropy).

Subcommands: ``train``, ``predict``, ``eval``, each options, input, a call into core and output. The data, the task
(``ClassifyTask``), ``fit``, ``predict_proba``, ``load_classifier`` and ``evaluate_classifier`` live in
:mod:`nlptool.core.classify`.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer

from nlptool.commands._common import (
    DeviceOpt,
    ForceOpt,
    Format,
    FormatOpt,
    GradAccumOpt,
    MaxGradNormOpt,
    MetricsOutOpt,
    ModelOpt,
    OutputOpt,
    ReportTo,
    ReportToOpt,
    ResumeOpt,
    SaveEveryOpt,
    SeedOpt,
    TrainingProgress,
    TrainingRun,
    WarmupOpt,
    WeightDecayOpt,
    fmt_value,
    info,
    interrupt_safe_output,
    model_and_input,
    no_rows_error,
    print_table,
    progress,
    warn_empty,
    with_before,
    write_metrics,
)
from nlptool.commands.encode import PoolingOpt, model_spec
from nlptool.core.device import resolve_device

app = typer.Typer(
    help="Text classification on a sentence encoder: pooled embedding → dropout → linear → softmax cross-entropy; "
    "predict writes probabilities in label order, ready for calibrate-can.",
    no_args_is_help=True,
)


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


# ``classify train``'s options (help texts are the --help reference). The optimisation options mirror TrainConfig's.
TrainFileOpt = Annotated[
    str, typer.Option("--train", help="Training data: JSONL/CSV/TSV with a text and a label column, or '-'.")
]
OutOpt = Annotated[str, typer.Option("--out", help="Output folder for the trained model (must be new or empty).")]
DevOpt = Annotated[
    str | None, typer.Option("--dev", help="Dev data (same format): accuracy after each epoch; the best is kept.")
]
TextColOpt = Annotated[str, typer.Option("--text-col", help="Column/field holding the text.")]
LabelColOpt = Annotated[str, typer.Option("--label-col", help="Column/field holding the class label.")]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Passes over the training data.", min=1)]
TrainBatchOpt = Annotated[int, typer.Option("--batch-size", help="Texts per optimizer step (global).", min=1)]
LrOpt = Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).", min=0.0)]
HeadLrScaleOpt = Annotated[
    float,
    typer.Option(
        "--head-lr-scale",
        help="Learning rate of the (freshly initialised) linear head = lr × this; the encoder keeps lr "
        "(10: a prior choice, as NER's head; not yet tuned for classification).",
        min=0.0,
    ),
]
DropoutOpt = Annotated[
    float, typer.Option("--dropout", help="Dropout on the pooled embedding in training.", min=0.0, max=0.99)
]
MaxLengthOpt = Annotated[
    int | None,
    typer.Option(
        "--max-length",
        help="Max tokens per text (longer texts are cut); saved with the model. Default: the base model's setting.",
        min=1,
    ),
]
EvalEveryOpt = Annotated[int, typer.Option("--eval-every", help="Also evaluate every N steps (0: per epoch).", min=0)]
GroupByLengthOpt = Annotated[
    bool,
    typer.Option("--group-by-length/--no-group-by-length", help="Batch texts of similar length (less padding)."),
]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="bf16/fp16 autocast.")]


@app.command("train")
@interrupt_safe_output
def train(
    train_file: TrainFileOpt,
    out: OutOpt,
    dev: DevOpt = None,
    model: ModelOpt = None,
    text_col: TextColOpt = "text",
    label_col: LabelColOpt = "label",
    format: FormatOpt = Format.auto,
    pooling: PoolingOpt = None,
    epochs: EpochsOpt = 3,
    batch_size: TrainBatchOpt = 32,
    lr: LrOpt = 5e-5,
    head_lr_scale: HeadLrScaleOpt = 10.0,
    dropout: DropoutOpt = 0.1,
    warmup: WarmupOpt = 0.1,
    weight_decay: WeightDecayOpt = 0.01,
    max_grad_norm: MaxGradNormOpt = 1.0,
    grad_accum: GradAccumOpt = 1,
    max_length: MaxLengthOpt = None,
    eval_every: EvalEveryOpt = 0,
    group_by_length: GroupByLengthOpt = True,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.fp32,
    resume: ResumeOpt = False,
    save_every: SaveEveryOpt = 0,
    report_to: ReportToOpt = ReportTo.none,
    metrics_out: MetricsOutOpt = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Train a text classifier: the encoder's pooled embedding → dropout → linear → softmax, cross-entropy loss.

    z = W·dropout(h) + b, L = mean(logsumexp(z) − z_gold); the classes are the training labels, sorted. The folder
    holds the encoder (loads with 'nlptool encode', transformers.AutoModel, SentenceTransformer), the head
    (classify_head.safetensors), classify_config.json (labels in order), metrics.json, a model card and
    training/train_log.jsonl; with --dev it is the checkpoint with the best dev accuracy. Runs under torchrun.

    Example: nlptool classify train --train train.jsonl --dev dev.jsonl --out clf

    Reference: Devlin et al., BERT (2019), https://arxiv.org/abs/1810.04805 (fine-tuning for classification)
    """
    from nlptool.core.classify import ClassifyTask, fit
    from nlptool.core.encoder import SentenceEncoder

    run = TrainingRun(
        out, force=force, resume=resume, seed=seed, save_every=save_every, metrics_out=metrics_out, report_to=report_to
    )
    data, dev_data = _read_train_files(train_file, dev, text_col, label_col, fmt_value(format))
    encoder = SentenceEncoder.load(model_spec(model), pooling=pooling.value if pooling else None, max_length=max_length)
    dev_name = resolve_device(device)
    task = ClassifyTask(encoder, data.label_set(), dropout=dropout, eval_device=dev_name)
    run.make_out_dir()  # only now: bad data or a bad model leave no folder behind
    if run.main:
        info(_summary(train_file, data, encoder, task))
    optimisation = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay}
    optimisation |= {"warmup_ratio": warmup, "grad_accum": grad_accum, "max_grad_norm": max_grad_norm or None}
    config = run.config(
        **optimisation,
        eval_every=eval_every,
        device=dev_name,
        precision=precision.value,
        group_by_length=group_by_length,
    )
    with TrainingProgress("texts", ("accuracy", "accuracy")) as on_progress:
        hook = with_before(on_progress, lambda m: f"dev accuracy before training: {100 * m['accuracy']:.2f}")
        result = fit(
            encoder,
            data,
            run.out_dir,
            dev=dev_data,
            config=config,
            head_lr_scale=head_lr_scale,
            task=task,
            on_progress=hook,
        )
    if not run.main:
        return
    if "dev_accuracy" in result.metrics:
        _print_dev_table(result)
    params = {
        **{k: getattr(config, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "grad_accum")},
        "warmup": config.warmup_ratio,
        "max_grad_norm": max_grad_norm,
        "head_lr_scale": head_lr_scale,
        "dropout": task.dropout,
        "max_length": encoder.max_length,
        "pooling": encoder.pooling,
        "text_col": text_col,
        "label_col": label_col,
        "group_by_length": config.group_by_length,
        "world_size": run.world,
        "device": config.device,
        "precision": config.precision,
    }
    inputs = [train_file, *([dev] if dev else [])]
    card = _card(train_file, data, dev, dev_data)
    run.finish(result.metrics, inputs=inputs, model=encoder.name, params=params, write=write_metrics, card=card)
    steps, speed = result.metrics["steps"], result.metrics["texts_per_s"]
    info(f"classify train: model saved to {run.out_dir} ({steps} steps, {speed:.1f} texts/s)")


def _read_train_files(
    train_file: str, dev: str | None, text_col: str, label_col: str, fmt: str | None, dev_hint: str = "--dev"
) -> tuple[Any, Any]:
    """The training rows and the dev rows (``None`` without --dev); empty files and unknown dev labels stop."""
    from nlptool.core.classify import check_labels, read_classify

    data = read_classify(train_file, text_col=text_col, label_col=label_col, format=fmt)
    if not len(data):
        raise no_rows_error(train_file, "give training rows with a text and a label")
    if not dev:
        return data, None
    dev_data = read_classify(dev, text_col=text_col, label_col=label_col, format=fmt)
    if not len(dev_data):
        raise no_rows_error(dev, f"give dev rows or leave out {dev_hint}")
    check_labels(dev_data, data.label_set(), "the training data")
    return data, dev_data


def _summary(train_file: str, data: Any, encoder: Any, task: Any) -> str:
    """The line that says what is about to be trained."""
    counts = ", ".join(f"{lab} {n}" for lab, n in zip(task.labels, data.counts(task.labels).tolist(), strict=True))
    return (
        f"classify train: {len(data)} texts from {train_file}, {len(task.labels)} classes ({counts}); model "
        f"{encoder.name} (pooling {encoder.pooling}, max length {encoder.max_length})"
    )


def _print_dev_table(result: Any) -> None:
    rows = [["before training", 100 * (result.metrics.get("dev_accuracy_before") or float("nan")), ""]]
    rows += [
        [f"step {e['step']}", 100 * e["metrics"]["accuracy"], 100 * e["metrics"]["macro_f1"]]
        for e in result.evaluations
    ]
    print_table("classify train: dev ×100 per evaluation", ["", "accuracy", "macro-F1"], rows)


def _card(train_file: str, data: Any, dev: str | None, dev_data: Any) -> Any:
    """The model card's facts about a classifier trained by this command."""
    from nlptool.core.card import CardInfo

    files = [("train", train_file, len(data))]
    if dev is not None:
        files.append(("dev", dev, len(dev_data) if dev_data is not None else None))
    return CardInfo(
        command="classify train",
        technique="Text classification: the encoder's pooled sentence embedding → dropout → linear layer → softmax, "
        "trained with cross-entropy (encoder and head together). The head is classify_head.safetensors; "
        "classify_config.json lists the classes in the order of the probabilities.",
        reference='Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language '
        'Understanding" (2019), https://arxiv.org/abs/1810.04805',
        usage="sentence-transformers",
        library_name="sentence-transformers",
        pipeline_tag="text-classification",
        tags=("text-classification", "sentence-transformers"),
        data=tuple(files),
        nlptool_usage=(
            "nlptool classify predict texts.jsonl --model {path} -o predictions.jsonl",
            "nlptool classify eval dev.jsonl --model {path}",
        ),
    )


# ``classify predict``'s and ``classify eval``'s own options.
ModelDirOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="A model folder written by 'nlptool classify train' (required).")
]
TextsArg = Annotated[
    str,
    typer.Argument(
        help="Texts: JSONL/CSV/TSV with a text column (--text-col; other fields are kept), or '-'.", show_default=False
    ),
]
GoldArg = Annotated[
    str, typer.Argument(help="Gold JSONL/CSV/TSV with a text and a label column, or '-'.", show_default=False)
]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Texts per forward pass.", min=1)]
ChunkOpt = Annotated[
    int, typer.Option("--chunk", help="Texts read, length-sorted and written together (streaming).", min=1)
]


@app.command("predict")
def predict(
    input: TextsArg,
    model: ModelDirOpt = None,
    output: OutputOpt = "-",
    text_col: TextColOpt = "text",
    format: FormatOpt = Format.auto,
    batch_size: BatchOpt = 64,
    chunk: ChunkOpt = 4096,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Classify texts: each input row with its fields plus "probs" (one per class, in the model's label order) and
    "pred" (the most probable label).

    The label order is the model folder's (classify_config.json; printed on stderr), so the output pipes into CAN:
    nlptool classify predict dev.jsonl -m clf | nlptool calibrate-can - --labels <the order> --prior-from
    train.jsonl. JSONL by default (-o FILE.csv for CSV); the file is written atomically.

    Example: nlptool classify predict texts.jsonl --model clf > predictions.jsonl

    Reference: Jia et al., "When in Doubt: Improving Classification Performance with Alternating Normalization"
    (2021), for what calibrate-can does with these probabilities
    """
    from nlptool.core.classify import load_classifier, predict_proba
    from nlptool.core.errors import InputError
    from nlptool.core.io import check_output_path, chunked, open_writer, read_records

    model, input = model_and_input(model, input, None, command="classify predict", required=True)
    check_output_path(output, force)
    encoder, task = load_classifier(model)
    dev_name = resolve_device(device)
    rows = 0
    with (
        read_records(input, fmt_value(format)) as reader,
        open_writer(output, force=force) as writer,
        progress("classify predict", unit="texts") as advance,
    ):
        for block in chunked(reader, chunk):
            texts = []
            for record in block:
                text = record.data.get(text_col)
                if text_col not in record.data:
                    present = ", ".join(list(record.data)[:12]) or "none"
                    raise InputError(
                        f"missing text column (fields present: {present}); name it with --text-col",
                        path=reader.path,
                        line=record.line,
                        field=text_col,
                    )
                if not isinstance(text, str):
                    raise InputError(
                        f"expected text, found {type(text).__name__}",
                        path=reader.path,
                        line=record.line,
                        field=text_col,
                    )
                texts.append(text)
            probs = predict_proba(encoder, task, texts, batch_size=batch_size, device=dev_name)
            for record, p in zip(block, probs, strict=True):
                out = {k: v for k, v in record.data.items() if k not in ("probs", "pred")}
                out["probs"] = p.tolist()
                out["pred"] = task.labels[int(p.argmax())]
                writer.write(out)
            rows += len(block)
            advance(len(block))
    if rows == 0:
        warn_empty(input)
    info(f"classify predict: {rows} texts; probs in label order {','.join(task.labels)}")


@app.command("eval")
def eval_(
    gold: GoldArg,
    model: ModelDirOpt = None,
    text_col: TextColOpt = "text",
    label_col: LabelColOpt = "label",
    format: FormatOpt = Format.auto,
    metrics_out: MetricsOutOpt = None,
    batch_size: BatchOpt = 64,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix of a classifier on gold data.

    Tables go to stderr (confusion matrix: rows gold, columns predicted, in the model's label order); --metrics-out
    writes JSON (fractions, raw floats; "confusion" as a list of rows). Nothing goes to stdout unless --metrics-out -.

    Example: nlptool classify eval dev.jsonl --model clf --metrics-out dev_metrics.json
    """
    from nlptool.core.classify import evaluate_classifier, load_classifier, read_classify
    from nlptool.core.io import check_output_path

    model, gold = model_and_input(model, gold, None, command="classify eval", required=True)
    check_output_path(metrics_out, force)
    data = read_classify(gold, text_col=text_col, label_col=label_col, format=fmt_value(format))
    if not len(data):
        raise no_rows_error(gold, "give gold rows with a text and a label")
    encoder, task = load_classifier(model)
    dev_name = resolve_device(device)
    metrics = evaluate_classifier(encoder, task, data, batch_size=batch_size, device=dev_name)["metrics"]
    _print_eval_tables(metrics, f"classify eval: {model} on {gold} ({len(data)} texts)")
    params = {"batch_size": batch_size, "device": dev_name, "text_col": text_col, "label_col": label_col}
    write_metrics(metrics_out, metrics, force=force, inputs=[gold], model=str(model), params=params)


def _print_eval_tables(metrics: dict[str, Any], title: str) -> None:
    """P/R/F1 ×100 per class with accuracy and macro-F1, then the confusion matrix, on stderr."""
    rows = [
        [label, 100 * m["precision"], 100 * m["recall"], 100 * m["f1"], m["support"], m["predicted"]]
        for label, m in metrics["per_class"].items()
    ]
    rows.append(["macro-F1", "", "", 100 * metrics["macro_f1"], "", ""])
    rows.append(["accuracy", "", "", 100 * metrics["accuracy"], metrics["texts"], ""])
    print_table(title, ["class", "P ×100", "R ×100", "F1 ×100", "gold", "predicted"], rows)
    labels = metrics["labels"]
    confusion = [[label, *row] for label, row in zip(labels, metrics["confusion"], strict=True)]
    print_table("confusion matrix (rows: gold, columns: predicted)", ["gold \\ pred", *labels], confusion)

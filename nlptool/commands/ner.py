"""``nlptool ner``: named-entity recognition with GlobalPointer / Efficient GlobalPointer (flat and nested).

Subcommands: ``train``, ``predict``, ``eval``, ``convert``, each options, input, a call into core and output. The math
lives in :mod:`nlptool.core.globalpointer`; data, alignment, windows, the model, the task (``NerTask``), ``fit``
and ``evaluate_examples`` in :mod:`nlptool.core.ner`; converters in :mod:`nlptool.core.ner_convert`.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer

from nlptool.commands._common import (
    DeviceOpt,
    ForceOpt,
    GradAccumOpt,
    LegacyPositionalArg,
    MaxGradNormOpt,
    MetricsOutOpt,
    ModelOpt,
    OutputOpt,
    ReportTo,
    ReportToOpt,
    ResumeOpt,
    SaveEveryOpt,
    SeedOpt,
    ShardOpt,
    TrainingProgress,
    TrainingRun,
    WarmupOpt,
    WeightDecayOpt,
    hidden_alias,
    info,
    interrupt_safe_output,
    model_and_input,
    no_rows_error,
    print_table,
    progress,
    warn,
    warn_empty,
    write_metrics,
)
from nlptool.commands.encode import model_spec
from nlptool.core.device import resolve_device

app = typer.Typer(
    help="Named-entity recognition with GlobalPointer / Efficient GlobalPointer: flat and nested entities as scored "
    "spans (Su Jianlin, kexue.fm/archives/8373, 8877).",
    no_args_is_help=True,
)

#: Warn when more than this fraction of the tokens is the tokenizer's unknown token.
UNK_WARN_RATE = 0.05


class Head(str, Enum):
    egp = "egp"
    gp = "gp"


class SourceFormat(str, Enum):
    conll = "conll"
    bio_chars = "bio-chars"
    cluener = "cluener"
    token_spans = "token-spans"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


ModelDirOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="A model folder written by 'nlptool ner train' (required).")
]
ThresholdOpt = Annotated[
    float, typer.Option("--threshold", help="Keep spans whose score (logit) is above this; 0 is the trained boundary.")
]
FlatOpt = Annotated[
    bool,
    typer.Option("--flat", help="Resolve overlapping spans greedily by score (flat tasks); default keeps nesting."),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Windows per forward pass.", min=1)]
MaxBatchTokensOpt = Annotated[
    int | None,
    typer.Option(
        "--max-batch-tokens",
        help="Also cap each forward pass at this many padded tokens (windows x longest); 0: no cap. Default: 1024 on "
        "CPU (fewer padding tokens, cache-sized batches), no cap on a GPU.",
        min=0,
    ),
]


def batch_tokens(max_batch_tokens: int | None, device: str) -> int:
    """The token cap per prediction batch: the user's value, else 1024 on CPU and none (0) on other devices."""
    from nlptool.core.ner import batch_token_cap

    return batch_token_cap(max_batch_tokens, device)


MaxSpanTokensOpt = Annotated[
    int | None,
    typer.Option(
        "--max-span-tokens",
        help="Ignore spans longer than this many tokens. Default: the training data's longest entity (stored by "
        "'ner train' in ner_config.json; folders without it: no cap). 0: no cap.",
        min=0,
    ),
]


def span_cap(max_span_tokens: int | None, cfg: dict) -> int | None:
    """The span-length cap for decoding: the user's value (0: none), else the model folder's, else none."""
    if max_span_tokens is not None:
        return max_span_tokens or None
    stored = cfg.get("max_span_tokens")
    return int(stored) if stored else None


StrideOpt = Annotated[
    int | None,
    typer.Option(
        "--stride", help="Tokens shared by consecutive windows of a long text (default: max length / 4).", min=0
    ),
]


def report_alignment(stats: Any, what: str) -> None:
    """Warnings (with counts) for entities that cannot be trained on or predicted, and for a high UNK rate."""
    if stats.misaligned:
        warn(
            f"{what}: {stats.misaligned} of {stats.entities} entities have a boundary inside a token (or on a space) "
            "for this tokenizer and are left out, not shifted; e.g. "
            + "; ".join(f"line {ln} '{t}'" for ln, t, r in stats.examples if r.startswith("boundary"))[:300]
        )
    if stats.unrepresentable:
        warn(
            f"{what}: {stats.unrepresentable} of {stats.entities} entities are longer than a window (max length) "
            "and are left out; raise --max-length"
        )
    if stats.split_texts:
        info(f"{what}: {stats.split_texts} of {stats.texts} texts are longer than a window: {stats.windows} windows")
    if stats.content_tokens and stats.unk_rate > UNK_WARN_RATE:
        warn(
            f"{what}: {100 * stats.unk_rate:.1f}% of the tokens are the unknown token ({stats.unk_tokens} of "
            f"{stats.content_tokens}); this tokenizer does not cover the text (e.g. an English vocabulary on Chinese) "
            "and the results will be meaningless; use a model for this language (--model)"
        )


# ``ner train``'s options (help texts are the --help reference). The optimisation options mirror TrainConfig's.
TrainFileOpt = Annotated[
    str, typer.Option("--train", help='Training data: JSONL {"text", "entities": [{start, end, label}]}.')
]
OutOpt = Annotated[str, typer.Option("--out", help="Output folder for the trained model (must be new or empty).")]
DevOpt = Annotated[
    str | None, typer.Option("--dev", help="Dev data (same format): span F1 after each epoch; the best is kept.")
]
HeadOpt = Annotated[
    Head, typer.Option("--head", help="egp: Efficient GlobalPointer (fewer parameters); gp: GlobalPointer.")
]
HeadSizeOpt = Annotated[int, typer.Option("--head-size", help="Query/key size d of the head (even).", min=2)]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Passes over the training data.", min=1)]
TrainBatchOpt = Annotated[int, typer.Option("--batch-size", help="Windows per optimizer step (global).", min=1)]
LrOpt = Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).", min=0.0)]
HeadLrScaleOpt = Annotated[
    float,
    typer.Option(
        "--head-lr-scale",
        help="Learning rate of the (freshly initialised) head = lr × this; the encoder keeps lr. 30 by default "
        "(chosen among 10, 30, 100 on held-out CoNLL training sentences): at the encoder's lr (1, Su's setting) "
        "the head learns too slowly on short budgets (BENCHMARKS.md).",
        min=0.0,
    ),
]
MaxLengthOpt = Annotated[
    int,
    typer.Option(
        "--max-length", help="Tokens per window (special tokens included); memory grows as its square.", min=4
    ),
]
EvalEveryOpt = Annotated[int, typer.Option("--eval-every", help="Also evaluate every N steps (0: per epoch).", min=0)]
GroupByLengthOpt = Annotated[
    bool,
    typer.Option("--group-by-length/--no-group-by-length", help="Batch windows of similar length (less padding)."),
]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="bf16/fp16 autocast.")]


@app.command("train")
@interrupt_safe_output
def train(
    train_file: TrainFileOpt,
    out: OutOpt,
    dev: DevOpt = None,
    model: ModelOpt = None,
    head: HeadOpt = Head.egp,
    head_size: HeadSizeOpt = 64,
    epochs: EpochsOpt = 3,
    batch_size: TrainBatchOpt = 16,
    lr: LrOpt = 5e-5,
    head_lr_scale: HeadLrScaleOpt = 30.0,
    warmup: WarmupOpt = 0.1,
    weight_decay: WeightDecayOpt = 0.01,
    max_grad_norm: MaxGradNormOpt = 1.0,
    grad_accum: GradAccumOpt = 1,
    max_length: MaxLengthOpt = 128,
    stride: StrideOpt = None,
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
    """Train a GlobalPointer NER model: every (type, start, end) span scored, so nested entities come for free.

    s_α(i,j) = (R_i q_i)ᵀ(R_j k_j)/√d (+ per-type start/end terms for EGP), RoPE positions, Su's multilabel
    categorical cross-entropy over all spans. The folder holds the encoder and tokenizer (save_pretrained), the head
    (ner_head.safetensors), ner_config.json (labels, settings), metrics.json and training/train_log.jsonl; with
    --dev it is the checkpoint with the best dev F1. Runs under torchrun without changes.

    Example: nlptool ner train --train train.jsonl --dev dev.jsonl --out ner-model

    Reference: Su Jianlin, https://kexue.fm/archives/8373 (GlobalPointer), https://kexue.fm/archives/8877 (EGP)
    """
    from nlptool.core.ner import TokenEncoder, fit

    run = TrainingRun(
        out, force=force, resume=resume, seed=seed, save_every=save_every, metrics_out=metrics_out, report_to=report_to
    )
    if head_size % 2:
        raise typer.BadParameter("must be even (RoPE rotates pairs)", param_hint="--head-size")
    data, dev_data = _read_train_files(train_file, dev)
    encoder = TokenEncoder.load(model_spec(model), role="a base encoder for 'ner train'")
    dev_name = resolve_device(device)
    settings = {"head": head.value, "head_size": head_size, "max_length": max_length, "stride": stride}
    task, windows, stats = _prepare(run, encoder, data, train_file, settings, dev_name)
    config = run.config(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_ratio=warmup,
        grad_accum=grad_accum,
        max_grad_norm=max_grad_norm or None,
        eval_every=eval_every,
        device=dev_name,
        precision=precision.value,
        group_by_length=group_by_length,
    )
    with TrainingProgress("windows", ("f1", "span F1")) as on_progress:
        result = fit(
            encoder,
            data,
            run.out_dir,
            dev=dev_data,
            head_lr_scale=head_lr_scale,
            config=config,
            task=task,
            windows=(windows, stats),
            on_progress=on_progress,
        )
    if not run.main:
        return
    if "dev_f1" in result.metrics:
        _print_dev_table(result.evaluations)
    params = _params(config, task, head_lr_scale=head_lr_scale, max_grad_norm=max_grad_norm, world_size=run.world)
    inputs = [train_file, *([dev] if dev else [])]
    # write=: this module's name for write_metrics, which tests may replace to interrupt a finished run
    run.finish(result.metrics, inputs=inputs, model=encoder.name, params=params, write=write_metrics)
    steps, speed = result.metrics["steps"], result.metrics["windows_per_s"]
    info(f"ner train: model saved to {run.out_dir} ({steps} steps, {speed:.1f} windows/s)")


def _read_train_files(train_file: str, dev: str | None) -> tuple[Any, Any]:
    """The training texts and the dev texts (``None`` without --dev); empty files and unknown dev labels stop."""
    from nlptool.core.ner import check_labels, label_set, read_ner_jsonl

    data = read_ner_jsonl(train_file)
    if not data:
        raise no_rows_error(train_file, "give training texts (nlptool ner convert writes them)")
    if not dev:
        return data, None
    dev_data = read_ner_jsonl(dev)
    if not dev_data:
        raise no_rows_error(dev, "give dev texts or leave out --dev")
    check_labels(dev_data, label_set(data), dev, "the training data")
    return data, dev_data


def _prepare(run: Any, encoder: Any, data: Any, train_file: str, settings: dict, device: str) -> tuple[Any, Any, Any]:
    """The :class:`~nlptool.core.ner.NerTask` (a fresh head: after seeding and loading, as always) and its training
    windows, with warnings about entities that cannot be trained on; creates --out and says what will be trained."""
    from nlptool.core.ner import NerTask, label_set

    task = NerTask(encoder, label_set(data), **settings, eval_device=device)
    windows, stats = task.windows(data)
    if run.main:
        report_alignment(stats, f"training data {train_file}")
    run.make_out_dir()
    if run.main:
        info(_summary(train_file, data, windows, stats, encoder, task))
    return task, windows, stats


def _summary(train_file: str, data: Any, windows: Any, stats: Any, encoder: Any, task: Any) -> str:
    """The line that says what is about to be trained."""
    return (
        f"ner train: {len(data)} texts ({len(windows)} windows, {stats.entities - stats.dropped} entities, "
        f"{len(task.labels)} types: {', '.join(task.labels)}) from {train_file}; model {encoder.name}; head "
        f"{task.head_kind} (d={task.head_size}); max length {task.max_length}"
    )


def _params(config: Any, task: Any, *, head_lr_scale: float, max_grad_norm: float, world_size: int) -> dict[str, Any]:
    """The run's parameters for metrics.json (the option values, and the span cap taken from the training data)."""
    return {
        "head": task.head_kind,
        "head_size": task.head_size,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "head_lr_scale": head_lr_scale,
        "warmup": config.warmup_ratio,
        "weight_decay": config.weight_decay,
        "max_grad_norm": max_grad_norm,
        "grad_accum": config.grad_accum,
        "max_length": task.max_length,
        "stride": task.stride,
        "max_span_tokens": task.max_span_tokens,
        "group_by_length": config.group_by_length,
        "world_size": world_size,
        "device": config.device,
        "precision": config.precision,
    }


def _print_dev_table(evals: list[dict]) -> None:
    print_table(
        "ner train: dev span F1 ×100 per evaluation",
        ["step", "precision", "recall", "F1"],
        [
            [e["step"], 100 * e["metrics"]["precision"], 100 * e["metrics"]["recall"], 100 * e["metrics"]["f1"]]
            for e in evals
        ],
    )


def _load(model_dir: str) -> tuple[Any, Any, dict]:
    from nlptool.core.ner import SpanNerModel

    return SpanNerModel.load(model_dir)


# ``ner predict``'s and ``ner eval``'s own options.
TextsArg = Annotated[
    str,
    typer.Argument(
        help="Texts: a .txt file (one text per line), CSV/TSV/JSONL with a 'text' column (or --text-col; other "
        "fields are kept), or '-' (JSONL if line 1 starts with '{', else lines; a table with --text-col).",
        show_default=False,
    ),
]
TextColOpt = Annotated[
    str | None,
    typer.Option("--text-col", help="Column/field with the text (default: text, sentence, else the first)."),
]
ChunkOpt = Annotated[
    int, typer.Option("--chunk", help="Texts read, length-sorted and written together (streaming).", min=1)
]
GoldArg = Annotated[
    str,
    typer.Argument(help='Gold JSONL {"text", "entities": [...]} (see ner convert), or \'-\'.', show_default=False),
]
PredictionsOutOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        hidden_alias("--predictions-out"),
        help="Also write the predictions as JSONL here ('-': stdout). Default: no predictions.",
    ),
]


@app.command("predict")
def predict(
    input: TextsArg,
    legacy_input: LegacyPositionalArg = None,
    model: ModelDirOpt = None,
    output: OutputOpt = "-",
    text_col: TextColOpt = None,
    flat: FlatOpt = False,
    threshold: ThresholdOpt = 0.0,
    batch_size: BatchOpt = 64,
    max_batch_tokens: MaxBatchTokensOpt = None,
    max_span_tokens: MaxSpanTokensOpt = None,
    stride: StrideOpt = None,
    chunk: ChunkOpt = 4096,
    device: DeviceOpt = "auto",
    shard: ShardOpt = None,
    force: ForceOpt = False,
) -> None:
    """Find entities: JSONL {"text", "entities": [{"start", "end", "label", "text", "score"}]} per input text.

    Offsets are characters of the original text, end exclusive; score is the span's logit (> --threshold). Nested
    spans are all kept unless --flat. Long texts are cut into overlapping windows and the spans merged. Input is
    streamed in chunks; within a chunk texts are sorted by length for batching and written in input order.

    Example: nlptool ner predict texts.txt --model ner-model > entities.jsonl

    Reference: Su Jianlin, https://kexue.fm/archives/8373
    """
    from nlptool.core.io import chunked, open_writer, read_texts
    from nlptool.core.ner import AlignmentStats, predict_spans
    from nlptool.core.shard import Shard

    model_dir, input = model_and_input(model, input, legacy_input, command="ner predict", required=True)
    sh = Shard.resolve(shard)
    sh.check(input, output, force)
    net, tokenizer, cfg = _load(model_dir)
    dev_name = resolve_device(device)
    net.to(dev_name)
    total = AlignmentStats()
    n_ent = 0
    cap = batch_tokens(max_batch_tokens, dev_name)
    span_limit = span_cap(max_span_tokens, cfg)
    with (
        read_texts(input, text_col=text_col, keep_blank=True) as reader,
        sh.output(output, force=force, fmt="jsonl") as out,
        open_writer(out.path, "jsonl", force=out.force) as writer,
        progress("ner predict", unit="texts") as advance,
    ):
        for block in chunked(sh.select(reader), chunk):
            texts = [rec.text for rec in block]
            preds, stats = predict_spans(
                net,
                tokenizer,
                texts,
                batch_size=batch_size,
                max_batch_tokens=cap,
                threshold=threshold,
                device=dev_name,
                stride=stride,
                max_span_tokens=span_limit,
            )
            total.merge(stats)
            n_ent += _write_entities(writer, block, preds, flat)
            advance(len(block))
    if (out.rows if sh.torchrun else total.texts) == 0 and sh.main:
        warn_empty(input)
    report_alignment(total, f"input {input}")
    info(f"ner predict: {total.texts} texts, {n_ent} entities ({', '.join(cfg['labels'])})")


def _write_entities(writer: Any, block: list[Any], preds: list[list[dict]], flat: bool) -> int:
    """One output row per input record (its other fields kept); returns the number of entities written."""
    from nlptool.core.ner import resolve_overlaps

    n_ent = 0
    for rec, ents in zip(block, preds, strict=True):
        if flat:
            ents = resolve_overlaps(ents)
        n_ent += len(ents)
        writer.write(
            {"text": rec.text, "entities": ents, **{k: v for k, v in rec.data.items() if k not in ("text", "entities")}}
        )
    return n_ent


@app.command("eval")
def eval_(
    gold: GoldArg,
    legacy_gold: LegacyPositionalArg = None,
    model: ModelDirOpt = None,
    output: PredictionsOutOpt = None,
    metrics_out: MetricsOutOpt = None,
    flat: FlatOpt = False,
    threshold: ThresholdOpt = 0.0,
    batch_size: BatchOpt = 64,
    max_batch_tokens: MaxBatchTokensOpt = None,
    max_span_tokens: MaxSpanTokensOpt = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Exact-span precision, recall and F1 of a model on gold data: micro, per type and macro.

    A predicted entity is correct when its start, end and label all match a gold entity (CoNLL / seqeval's
    entity-level measure; on flat BIO data the numbers equal seqeval's). Also reports the recall on nested gold
    entities (inside another gold entity). A table goes to stderr; --metrics-out writes JSON (fractions, raw floats).
    Nothing goes to stdout unless -o - or --metrics-out -.

    Example: nlptool ner eval dev.jsonl --model ner-model --metrics-out dev_metrics.json

    Reference: Su Jianlin, https://kexue.fm/archives/8373
    """
    from nlptool.core.io import check_output_path, open_writer
    from nlptool.core.ner import check_labels, evaluate_examples, read_ner_jsonl

    model_dir, gold = model_and_input(model, gold, legacy_gold, command="ner eval", required=True)
    check_output_path(output, force)
    check_output_path(metrics_out, force)
    data = read_ner_jsonl(gold)
    if not data:
        raise no_rows_error(gold, "give gold texts with entities (nlptool ner convert writes them)")
    net, tokenizer, cfg = _load(model_dir)
    check_labels(data, cfg["labels"], gold, f"the model {model_dir}")
    dev_name = resolve_device(device)
    net.to(dev_name)
    cap = batch_tokens(max_batch_tokens, dev_name)
    limit = span_cap(max_span_tokens, cfg)
    result = evaluate_examples(
        net,
        tokenizer,
        data,
        batch_size=batch_size,
        max_batch_tokens=cap,
        device=dev_name,
        threshold=threshold,
        flat=flat,
        max_span_tokens=limit,
    )
    metrics = result["metrics"]
    report_alignment(result["alignment"], f"gold {gold}")
    if output:
        with open_writer(output, "jsonl", force=force) as writer:
            for ex, ents in zip(data, result["predictions"], strict=True):
                writer.write({"text": ex.text, "entities": ents})
    _print_eval_table(
        metrics, f"ner eval: {model_dir} on {gold} ({len(data)} texts, {metrics['texts_per_s']:.1f} texts/s)"
    )
    params = {
        "threshold": threshold,
        "flat": flat,
        "batch_size": batch_size,
        "max_batch_tokens": cap,
        "max_span_tokens": limit,
        "device": dev_name,
        "max_length": cfg["max_length"],
        "stride": cfg["stride"],
        "head": cfg["head"],
    }
    write_metrics(metrics_out, metrics, force=force, inputs=[gold], model=str(model_dir), params=params)


def _print_eval_table(metrics: dict[str, Any], title: str) -> None:
    """P/R/F1 ×100 per type, micro, macro (and the nested recall) on stderr."""
    rows = [
        [label, 100 * m["precision"], 100 * m["recall"], 100 * m["f1"], m["support"], m["predicted"]]
        for label, m in metrics["per_type"].items()
    ]
    micro, macro = metrics["micro"], metrics["macro"]
    rows.append(
        [
            "micro",
            100 * micro["precision"],
            100 * micro["recall"],
            100 * micro["f1"],
            micro["support"],
            micro["predicted"],
        ]
    )
    rows.append(["macro", 100 * macro["precision"], 100 * macro["recall"], 100 * macro["f1"], "", ""])
    if metrics["nested_gold"]:
        rows.append(["nested recall", "", 100 * metrics["nested_recall"], "", metrics["nested_gold"], ""])
    print_table(title, ["type", "P ×100", "R ×100", "F1 ×100", "gold", "predicted"], rows)


@app.command("convert")
def convert(
    input: Annotated[str, typer.Argument(help="The corpus file, or '-' for stdin.", show_default=False)],
    source: Annotated[
        SourceFormat,
        typer.Option(
            "--from",
            help="conll: token-per-line BIO/IOB1/IOB2 (CoNLL-2003, -DOCSTART- skipped); bio-chars: character per "
            "line (People's Daily); cluener: CLUENER JSON; token-spans: tokens + entity_mentions jsonlines (GENIA).",
        ),
    ],
    output: OutputOpt = "-",
    force: ForceOpt = False,
) -> None:
    """Convert an NER corpus to nlptool's JSONL: {"text", "entities": [{"start", "end", "label"}]}, char offsets.

    Token formats join tokens with one space (conll, token-spans) or nothing (bio-chars). Offsets are validated:
    bad tags, mismatched CLUENER surfaces, out-of-range or crossing spans stop with the file and line.

    Example: nlptool ner convert --from conll eng.train -o train.jsonl
    """
    from nlptool.core.io import check_output_path, open_writer
    from nlptool.core.ner_convert import convert as run_convert

    check_output_path(output, force)
    records, stats = run_convert(input, source.value)
    with open_writer(output, "jsonl", force=force) as writer:
        for rec in records:
            writer.write(rec)
    if stats.texts == 0:
        warn_empty(input)
    per = ", ".join(f"{k} {v}" for k, v in sorted(stats.labels.items()))
    info(f"ner convert: {stats.texts} texts, {stats.entities} entities ({per or 'none'}) from {input}")

"""``nlptool ner``: named-entity recognition with GlobalPointer / Efficient GlobalPointer (flat and nested).

Subcommands: ``train``, ``predict``, ``eval``, ``convert``. The math lives in :mod:`nlptool.core.globalpointer`, data,
alignment, windows and the model in :mod:`nlptool.core.ner`, converters in :mod:`nlptool.core.ner_convert`.
"""

from __future__ import annotations

import shutil
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from nlptool.commands._common import (
    DeviceOpt,
    ForceOpt,
    LegacyPositionalArg,
    MetricsOutOpt,
    ModelOpt,
    OutputOpt,
    SaveEveryOpt,
    SeedOpt,
    TrainingProgress,
    check_out_dir,
    hidden_alias,
    info,
    interrupt_safe_output,
    model_and_input,
    no_rows_error,
    print_table,
    progress,
    seed_everything,
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
    from nlptool.core.ner import CPU_MAX_BATCH_TOKENS

    if max_batch_tokens is not None:
        return max_batch_tokens
    return CPU_MAX_BATCH_TOKENS if str(device).startswith("cpu") else 0


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


def _check_labels(examples: Any, labels: list[str], path: str, what: str) -> None:
    from nlptool.core.errors import InputError

    known = set(labels)
    for ex in examples:
        for e in ex.entities:
            if e.label not in known:
                raise InputError(
                    f"entity label '{e.label}' is unknown to {what} (labels: {', '.join(labels)}); remove or rename it",
                    path=path,
                    line=ex.line,
                    field="entities",
                )


def evaluate_examples(
    model: Any,
    tokenizer: Any,
    examples: Any,
    *,
    batch_size: int,
    device: str,
    max_batch_tokens: int | None = None,
    threshold: float = 0.0,
    flat: bool = False,
    max_span_tokens: int | None = None,
) -> tuple[dict[str, Any], list[list[dict]], Any, float]:
    """Predict ``examples`` and score them; returns ``(span metrics, predictions, alignment stats, seconds)``."""
    import time

    from nlptool.core.metrics import nested_recall, span_prf
    from nlptool.core.ner import predict_spans, resolve_overlaps

    t0 = time.perf_counter()
    preds, stats = predict_spans(
        model,
        tokenizer,
        [ex.text for ex in examples],
        batch_size=batch_size,
        max_batch_tokens=batch_tokens(max_batch_tokens, device),
        threshold=threshold,
        device=device,
        max_span_tokens=max_span_tokens,
    )
    seconds = time.perf_counter() - t0
    if flat:
        preds = [resolve_overlaps(p) for p in preds]
    gold = [[(e.start, e.end, e.label) for e in ex.entities] for ex in examples]
    pred = [[(p["start"], p["end"], p["label"]) for p in ps] for ps in preds]
    metrics = span_prf(gold, pred)
    metrics.update(nested_recall(gold, pred))
    return metrics, preds, stats, seconds


@app.command("train")
@interrupt_safe_output
def train(
    train_file: Annotated[
        str, typer.Option("--train", help='Training data: JSONL {"text", "entities": [{start, end, label}]}.')
    ],
    out: Annotated[str, typer.Option("--out", help="Output folder for the trained model (must be new or empty).")],
    dev: Annotated[
        str | None, typer.Option("--dev", help="Dev data (same format): span F1 after each epoch; the best is kept.")
    ] = None,
    model: ModelOpt = None,
    head: Annotated[
        Head, typer.Option("--head", help="egp: Efficient GlobalPointer (fewer parameters); gp: GlobalPointer.")
    ] = Head.egp,
    head_size: Annotated[int, typer.Option("--head-size", help="Query/key size d of the head (even).", min=2)] = 64,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training data.", min=1)] = 3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Windows per optimizer step (global).", min=1)] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).", min=0.0)] = 5e-5,
    head_lr_scale: Annotated[
        float,
        typer.Option(
            "--head-lr-scale",
            help="Learning rate of the (freshly initialised) head = lr × this; the encoder keeps lr. 30 by default "
            "(chosen among 10, 30, 100 on held-out CoNLL training sentences): at the encoder's lr (1, Su's setting) "
            "the head learns too slowly on short budgets (BENCHMARKS.md).",
            min=0.0,
        ),
    ] = 30.0,
    warmup: Annotated[
        float, typer.Option("--warmup", help="Warm-up as a fraction of all steps.", min=0.0, max=1.0)
    ] = 0.1,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.", min=0.0)] = 0.01,
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", help="Gradient clipping (0: off).", min=0.0)] = 1.0,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Batches accumulated per optimizer step.", min=1)] = 1,
    max_length: Annotated[
        int,
        typer.Option(
            "--max-length", help="Tokens per window (special tokens included); memory grows as its square.", min=4
        ),
    ] = 128,
    stride: StrideOpt = None,
    eval_every: Annotated[
        int, typer.Option("--eval-every", help="Also evaluate every N steps (0: per epoch).", min=0)
    ] = 0,
    group_by_length: Annotated[
        bool,
        typer.Option("--group-by-length/--no-group-by-length", help="Batch windows of similar length (less padding)."),
    ] = True,
    device: DeviceOpt = "auto",
    precision: Annotated[Precision, typer.Option("--precision", help="bf16/fp16 autocast.")] = Precision.fp32,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/training/checkpoint-last.")] = False,
    save_every: SaveEveryOpt = 0,
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
    from transformers import AutoModel

    from nlptool.core.globalpointer import global_pointer_loss
    from nlptool.core.io import check_output_path
    from nlptool.core.models import load_model, load_tokenizer, resolve_model
    from nlptool.core.ner import (
        SpanNerModel,
        collate_windows,
        default_stride,
        encode_windows,
        label_set,
        longest_entity_tokens,
        read_ner_jsonl,
    )
    from nlptool.core.train import TrainConfig, is_main_process, world_info
    from nlptool.core.train import train as run_training

    out_dir = Path(out)
    rank, world = world_info()
    if rank == 0:
        check_out_dir(out_dir, force=force, resume=resume)
        check_output_path(metrics_out, force)
    if head_size % 2:
        raise typer.BadParameter("must be even (RoPE rotates pairs)", param_hint="--head-size")
    seed_everything(seed)
    stride = default_stride(max_length) if stride is None else stride

    data = read_ner_jsonl(train_file)
    if not data:
        raise no_rows_error(train_file, "give training texts (nlptool ner convert writes them)")
    labels = label_set(data)
    dev_data = read_ner_jsonl(dev) if dev else None
    if dev_data is not None and not dev_data:
        assert dev is not None
        raise no_rows_error(dev, "give dev texts or leave out --dev")
    if dev_data is not None:
        assert dev is not None
        _check_labels(dev_data, labels, dev, "the training data")
    resolved = resolve_model(model_spec(model), role="a base encoder for 'ner train'")
    tokenizer = load_tokenizer(resolved)
    encoder = load_model(resolved, AutoModel)
    dev_name = resolve_device(device)
    label2id = {lab: i for i, lab in enumerate(labels)}
    windows, stats = encode_windows(tokenizer, data, max_length=max_length, stride=stride, label2id=label2id)
    if rank == 0:
        report_alignment(stats, f"training data {train_file}")
    net = SpanNerModel(encoder, labels, head=head.value, head_size=head_size, max_length=max_length, stride=stride)
    if rank == 0:
        out_dir.mkdir(exist_ok=True)
        info(
            f"ner train: {len(data)} texts ({len(windows)} windows, {stats.entities - stats.dropped} entities, "
            f"{len(labels)} types: {', '.join(labels)}) from {train_file}; model {resolved.name}; head {head.value} "
            f"(d={head_size}); max length {max_length}"
        )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    longest = longest_entity_tokens(windows)  # the default span cap of predict/eval (decoding ignores longer spans)
    extra = {"base_model": resolved.name, "max_span_tokens": longest}

    def collate(batch: list[Any]) -> dict:
        return collate_windows(batch, len(labels), pad_id)

    def compute_loss(m: Any, batch: dict) -> Any:
        logits = m(batch["input_ids"], batch["attention_mask"])
        return global_pointer_loss(logits, batch["labels"])

    def evaluate(m: Any) -> dict[str, float]:
        assert dev_data is not None
        metrics, _, _, _ = evaluate_examples(
            m, tokenizer, dev_data, batch_size=64, device=dev_name, max_span_tokens=longest
        )
        micro = metrics["micro"]
        return {"f1": micro["f1"], "precision": micro["precision"], "recall": micro["recall"]}

    def save_best(m: Any, path: Path) -> None:
        m.save(path, tokenizer, extra)

    training_dir = out_dir / "training"
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_ratio=warmup,
        grad_accum=grad_accum,
        max_grad_norm=max_grad_norm or None,
        eval_every=eval_every,
        seed=seed,
        device=dev_name,
        precision=precision.value,
        group_by_length=group_by_length,
        output_dir=str(training_dir),
        resume=resume,
        checkpoint_every=save_every,
        metric="f1" if dev_data is not None else None,
        greater_is_better=True,
        lr_scale={"head.": head_lr_scale} if head_lr_scale != 1.0 else None,
    )
    with TrainingProgress("windows", ("f1", "span F1")) as on_progress:
        result = run_training(
            net,
            windows,
            collate,
            compute_loss,
            config,
            evaluate=evaluate if dev_data is not None else None,
            save_best=save_best if dev_data is not None else None,
            lengths=[len(w) for w in windows],
            on_progress=on_progress,
        )
    if not is_main_process():
        return
    best_dir = training_dir / "best"
    if dev_data is not None and best_dir.is_dir():
        for item in best_dir.iterdir():
            target = out_dir / item.name
            if target.is_dir():
                shutil.rmtree(target)
            shutil.move(str(item), target)
        best_dir.rmdir()
    else:
        net.save(out_dir, tokenizer, extra)

    evals = [e for e in result.history if e.get("event") == "eval"]
    metrics: dict[str, Any] = {
        "train_texts": len(data),
        "train_windows": len(windows),
        "labels": labels,
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "windows_per_s": result.examples_per_s,
        "alignment": _stats_dict(stats),
    }
    if dev_data is not None and evals:
        best = max(evals, key=lambda e: e["metrics"]["f1"])
        metrics.update(
            dev_texts=len(dev_data),
            dev_f1=best["metrics"]["f1"],
            dev_precision=best["metrics"]["precision"],
            dev_recall=best["metrics"]["recall"],
            best_step=result.best_step,
        )
        print_table(
            "ner train: dev span F1 ×100 per evaluation",
            ["step", "precision", "recall", "F1"],
            [
                [e["step"], 100 * e["metrics"]["precision"], 100 * e["metrics"]["recall"], 100 * e["metrics"]["f1"]]
                for e in evals
            ],
        )
    params = {
        "head": head.value,
        "head_size": head_size,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "head_lr_scale": head_lr_scale,
        "warmup": warmup,
        "weight_decay": weight_decay,
        "max_grad_norm": max_grad_norm,
        "grad_accum": grad_accum,
        "max_length": max_length,
        "stride": stride,
        "max_span_tokens": longest,
        "group_by_length": group_by_length,
        "world_size": world,
        "device": dev_name,
        "precision": precision.value,
    }
    inputs = [train_file, *([dev] if dev else [])]
    write_metrics(
        str(out_dir / "metrics.json"), metrics, force=True, seed=seed, inputs=inputs, model=resolved.name, params=params
    )
    write_metrics(metrics_out, metrics, force=force, seed=seed, inputs=inputs, model=resolved.name, params=params)
    shutil.rmtree(training_dir / "checkpoint-last", ignore_errors=True)  # last: an interrupt before here can --resume
    info(f"ner train: model saved to {out_dir} ({result.steps} steps, {result.examples_per_s:.1f} windows/s)")


def _stats_dict(stats: Any) -> dict[str, Any]:
    from nlptool.core.ner import stats_dict

    return stats_dict(stats)


def _load(model_dir: str) -> tuple[Any, Any, dict]:
    from nlptool.core.ner import SpanNerModel

    return SpanNerModel.load(model_dir)


@app.command("predict")
def predict(
    input: Annotated[
        str,
        typer.Argument(
            help="Texts: a .txt file (one text per line), CSV/TSV/JSONL with a 'text' column (or --text-col; other "
            "fields are kept), or '-' (JSONL if line 1 starts with '{', else lines; a table with --text-col).",
            show_default=False,
        ),
    ],
    legacy_input: LegacyPositionalArg = None,
    model: ModelDirOpt = None,
    output: OutputOpt = "-",
    text_col: Annotated[
        str | None,
        typer.Option("--text-col", help="Column/field with the text (default: text, sentence, else the first)."),
    ] = None,
    flat: FlatOpt = False,
    threshold: ThresholdOpt = 0.0,
    batch_size: BatchOpt = 64,
    max_batch_tokens: MaxBatchTokensOpt = None,
    max_span_tokens: MaxSpanTokensOpt = None,
    stride: StrideOpt = None,
    chunk: Annotated[
        int, typer.Option("--chunk", help="Texts read, length-sorted and written together (streaming).", min=1)
    ] = 4096,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Find entities: JSONL {"text", "entities": [{"start", "end", "label", "text", "score"}]} per input text.

    Offsets are characters of the original text, end exclusive; score is the span's logit (> --threshold). Nested
    spans are all kept unless --flat. Long texts are cut into overlapping windows and the spans merged. Input is
    streamed in chunks; within a chunk texts are sorted by length for batching and written in input order.

    Example: nlptool ner predict texts.txt --model ner-model > entities.jsonl

    Reference: Su Jianlin, https://kexue.fm/archives/8373
    """
    from nlptool.core.io import check_output_path, chunked, open_writer, read_texts
    from nlptool.core.ner import AlignmentStats, predict_spans, resolve_overlaps

    model_dir, input = model_and_input(model, input, legacy_input, command="ner predict", required=True)
    check_output_path(output, force)
    net, tokenizer, cfg = _load(model_dir)
    dev_name = resolve_device(device)
    net.to(dev_name)
    total = AlignmentStats()
    n_ent = 0
    cap = batch_tokens(max_batch_tokens, dev_name)
    span_limit = span_cap(max_span_tokens, cfg)
    with (
        read_texts(input, text_col=text_col, keep_blank=True) as reader,
        open_writer(output, "jsonl", force=force) as writer,
        progress("ner predict", unit="texts") as advance,
    ):
        for block in chunked(reader, chunk):
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
            _merge_stats(total, stats)
            for rec, ents in zip(block, preds, strict=True):
                if flat:
                    ents = resolve_overlaps(ents)
                n_ent += len(ents)
                writer.write(
                    {
                        "text": rec.text,
                        "entities": ents,
                        **{k: v for k, v in rec.data.items() if k not in ("text", "entities")},
                    }
                )
            advance(len(block))
    if total.texts == 0:
        warn_empty(input)
    report_alignment(total, f"input {input}")
    info(f"ner predict: {total.texts} texts, {n_ent} entities ({', '.join(cfg['labels'])})")


def _merge_stats(total: Any, stats: Any) -> None:
    for name in (
        "texts",
        "windows",
        "split_texts",
        "entities",
        "misaligned",
        "unrepresentable",
        "content_tokens",
        "unk_tokens",
    ):
        setattr(total, name, getattr(total, name) + getattr(stats, name))
    total.examples.extend(stats.examples[: max(0, 5 - len(total.examples))])


@app.command("eval")
def eval_(
    gold: Annotated[
        str,
        typer.Argument(help='Gold JSONL {"text", "entities": [...]} (see ner convert), or \'-\'.', show_default=False),
    ],
    legacy_gold: LegacyPositionalArg = None,
    model: ModelDirOpt = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            hidden_alias("--predictions-out"),
            help="Also write the predictions as JSONL here ('-': stdout). Default: no predictions.",
        ),
    ] = None,
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
    from nlptool.core.ner import read_ner_jsonl

    model_dir, gold = model_and_input(model, gold, legacy_gold, command="ner eval", required=True)
    check_output_path(output, force)
    check_output_path(metrics_out, force)
    data = read_ner_jsonl(gold)
    if not data:
        raise no_rows_error(gold, "give gold texts with entities (nlptool ner convert writes them)")
    net, tokenizer, cfg = _load(model_dir)
    _check_labels(data, cfg["labels"], gold, f"the model {model_dir}")
    dev_name = resolve_device(device)
    net.to(dev_name)
    cap = batch_tokens(max_batch_tokens, dev_name)
    metrics, preds, stats, seconds = evaluate_examples(
        net,
        tokenizer,
        data,
        batch_size=batch_size,
        max_batch_tokens=cap,
        device=dev_name,
        threshold=threshold,
        flat=flat,
        max_span_tokens=span_cap(max_span_tokens, cfg),
    )
    report_alignment(stats, f"gold {gold}")
    metrics["texts"] = len(data)
    metrics["texts_per_s"] = len(data) / seconds if seconds > 0 else 0.0
    metrics["alignment"] = _stats_dict(stats)
    if output:
        with open_writer(output, "jsonl", force=force) as writer:
            for ex, ents in zip(data, preds, strict=True):
                writer.write({"text": ex.text, "entities": ents})
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
    print_table(
        f"ner eval: {model_dir} on {gold} ({len(data)} texts, {metrics['texts_per_s']:.1f} texts/s)",
        ["type", "P ×100", "R ×100", "F1 ×100", "gold", "predicted"],
        rows,
    )
    params = {
        "threshold": threshold,
        "flat": flat,
        "batch_size": batch_size,
        "max_batch_tokens": cap,
        "max_span_tokens": span_cap(max_span_tokens, cfg),
        "device": dev_name,
        "max_length": cfg["max_length"],
        "stride": cfg["stride"],
        "head": cfg["head"],
    }
    write_metrics(metrics_out, metrics, force=force, inputs=[gold], model=str(model_dir), params=params)


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

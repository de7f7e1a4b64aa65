"""``nlptool nsp-adapt``: train a next-sentence-prediction head on unlabelled documents (for encoders without one).

The technique (pairs, which layers train, the loss, the held-out NSP accuracy, the training run) is
:func:`nlptool.core.nsp.fit`; this module parses options, reads the corpus, calls it inside a
:class:`~nlptool.commands._common.TrainingRun` and reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nlptool.commands._common import (
    DeviceOpt,
    ForceOpt,
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
    hidden_alias,
    info,
    interrupt_safe_output,
    no_rows_error,
    print_table,
    progress,
    with_before,
    write_metrics,
)

# The command's options (help texts are the --help reference).
CorpusOpt = Annotated[
    str,
    typer.Option(
        "--corpus",
        help="Unlabelled documents: plain text with blank lines between documents, or JSONL with one document "
        "per line (--text-col); '-' for stdin.",
    ),
]
OutOpt = Annotated[str, typer.Option("--out", help="Output model folder (must be new or empty, or --force).")]
TextColOpt = Annotated[
    str, typer.Option("--text-col", hidden_alias("--text-field"), help="JSONL corpus: the field holding a document.")
]
TrainLayersOpt = Annotated[
    str,
    typer.Option(
        "--train-layers",
        help="What trains besides the NSP head (pooler + 2-way classifier): the top N transformer layers, or "
        "'all' (the whole encoder, embeddings included). 0: the head alone. Fewer layers: faster steps (the "
        "frozen layers need no backward pass).",
    ),
]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Passes over the training pairs.", min=1)]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Pairs per optimizer step.", min=1)]
LrOpt = Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, linear decay).", min=0.0)]
MaxLengthOpt = Annotated[int, typer.Option("--max-length", help="Max tokens of a sentence pair.", min=8)]
MaxPairsOpt = Annotated[
    int | None, typer.Option("--max-pairs", help="Train on at most this many pairs (a seeded subset).", min=1)
]
EvalFractionOpt = Annotated[
    float,
    typer.Option("--eval-fraction", help="Documents held out for NSP accuracy (whole documents).", min=0.0, max=0.9),
]


@interrupt_safe_output
def nsp_adapt(
    corpus: CorpusOpt,
    out: OutOpt,
    model: ModelOpt = None,
    text_col: TextColOpt = "text",
    train_layers: TrainLayersOpt = "2",
    epochs: EpochsOpt = 1,
    batch_size: BatchSizeOpt = 32,
    lr: LrOpt = 5e-5,
    warmup: WarmupOpt = 0.1,
    weight_decay: WeightDecayOpt = 0.01,
    max_length: MaxLengthOpt = 128,
    max_pairs: MaxPairsOpt = None,
    eval_fraction: EvalFractionOpt = 0.05,
    device: DeviceOpt = "auto",
    resume: ResumeOpt = False,
    save_every: SaveEveryOpt = 0,
    report_to: ReportToOpt = ReportTo.none,
    metrics_out: MetricsOutOpt = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Train an NSP head (pooler + IsNext/NotNext classifier) on unlabelled documents, for `zero-shot --method nsp`.

    Pairs as in BERT's pre-training: each sentence with the next sentence of its document (IsNext) or, with
    probability 1/2 (seeded), with a random sentence of another document (NotNext). Whole documents are held out to
    measure NSP accuracy before and after. The output folder is a transformers BertForNextSentencePrediction folder
    (model + tokenizer) with metrics.json and training/train_log.jsonl.

    Example: nlptool nsp-adapt --corpus news.txt --out minilm-nsp && nlptool zero-shot texts.csv --labels a,b
    --model minilm-nsp

    Reference: Devlin et al., BERT (NAACL 2019), section 3.1 task 2; Sun et al., NSP-BERT (COLING 2022,
    arXiv 2109.03564); Su Jianlin, https://kexue.fm/archives/8671
    """
    from nlptool.commands.encode import model_spec
    from nlptool.core.device import resolve_device
    from nlptool.core.nsp import fit, load_nsp_model, nsp_data, set_trainable

    run = TrainingRun(
        out, force=force, resume=resume, seed=seed, save_every=save_every, metrics_out=metrics_out, report_to=report_to
    )
    layers = _parse_layers(train_layers)
    docs = _read_corpus_with_progress(corpus, text_col, show=run.main)
    if not docs:
        raise no_rows_error(corpus, "give a corpus with text")
    data = nsp_data(docs, eval_fraction=eval_fraction, seed=seed, max_pairs=max_pairs)
    nsp_model, tokenizer, model_name = load_nsp_model(model_spec(model), seed=seed)
    trainable = set_trainable(nsp_model, layers)  # a bad --train-layers fails here, before --out is created
    dev_name = resolve_device(device)
    run.make_out_dir()
    if run.main:
        info(_summary(corpus, data, model_name, trainable, train_layers))
    options = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay}
    config = run.config(**options, warmup_ratio=warmup, device=dev_name, group_by_length=True, log_every=50)
    with TrainingProgress("pairs") as on_progress:
        hooks = {"config": config, "on_progress": with_before(on_progress, _before_line)}
        result = fit(nsp_model, tokenizer, data, run.out_dir, train_layers=layers, max_length=max_length, **hooks)
    if not run.main:
        return
    if result.after:
        _print_accuracy_table(result)
    params = _params(train_layers, config, max_length=max_length, max_pairs=max_pairs, eval_fraction=eval_fraction)
    # write=: this module's name for write_metrics, which tests replace to interrupt a finished run
    run.finish(result.metrics, inputs=[corpus], model=model_name, params=params, write=write_metrics)
    steps, seconds, speed = result.metrics["steps"], result.metrics["train_seconds"], result.metrics["pairs_per_s"]
    info(
        f"nsp-adapt: model saved to {run.out_dir} ({steps} steps in {seconds:.1f} s, {speed:.1f} pairs/s); use it "
        f"with: nlptool zero-shot INPUT --labels ... --model {run.out_dir}"
    )


def _print_accuracy_table(result: Any) -> None:
    rows = [["before (untrained head)", 100 * result.before.get("nsp_accuracy", float("nan"))]]
    rows.append(["after", 100 * result.after["nsp_accuracy"]])
    print_table("nsp-adapt: held-out NSP accuracy", ["", "accuracy %"], rows)


def _params(train_layers: str, config: Any, **options: Any) -> dict[str, Any]:
    """The run's parameters for metrics.json (the option values)."""
    return {
        "train_layers": train_layers,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "warmup": config.warmup_ratio,
        "weight_decay": config.weight_decay,
        "max_length": options["max_length"],
        "max_pairs": options["max_pairs"],
        "eval_fraction": options["eval_fraction"],
        "device": config.device,
    }


def _read_corpus_with_progress(corpus: str, text_field: str, *, show: bool = True) -> list[list[str]]:
    """Read and sentence-split the corpus with a progress bar on stderr (bytes of the file; shown after 2 s; only on
    rank 0 under torchrun)."""
    from nlptool.core.nsp import read_corpus

    if not show:
        return read_corpus(corpus, text_field=text_field)
    path = Path(corpus)
    total = path.stat().st_size if path.is_file() else None
    with progress("nsp-adapt: reading and splitting the corpus", total=total, unit="bytes") as advance:
        return read_corpus(corpus, text_field=text_field, on_progress=advance)


def _parse_layers(value: str) -> int | None:
    """``--train-layers``: 'all' → None (everything trains); an integer ≥ 0 → that many top layers (else exit 2)."""
    from nlptool.core.errors import NlptoolError
    from nlptool.core.nsp import parse_train_layers

    try:
        return parse_train_layers(value)
    except NlptoolError as exc:
        raise typer.BadParameter(str(exc), param_hint="--train-layers") from None


def _summary(corpus: str, data: Any, model_name: str, trainable: int, train_layers: str) -> str:
    """The line that says what is about to be trained."""
    from nlptool.core.nsp import IS_NEXT

    is_next = sum(p.label == IS_NEXT for p in data.pairs)
    return (
        f"nsp-adapt: {data.documents} documents, {data.sentences} sentences from {corpus}; {len(data.pairs)} training "
        f"pairs ({is_next} IsNext), {len(data.eval_pairs)} held-out pairs from {len(data.eval_docs)} documents; model "
        f"{model_name}, training {trainable:,} parameters (--train-layers {train_layers})"
    )


def _before_line(metrics: dict) -> str:
    """The line for the dev metric measured before training."""
    return f"held-out NSP accuracy before training: {100 * metrics['nsp_accuracy']:.2f} %"

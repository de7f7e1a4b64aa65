"""``nlptool nsp-adapt``: train a next-sentence-prediction head on unlabelled documents (for encoders without one)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from nlptool.commands._common import (
    DeviceOpt,
    ForceOpt,
    MetricsOutOpt,
    ModelOpt,
    SaveEveryOpt,
    SeedOpt,
    TrainingProgress,
    check_out_dir,
    hidden_alias,
    info,
    interrupt_safe_output,
    no_rows_error,
    print_table,
    progress,
    seed_everything,
    write_metrics,
)
from nlptool.core.errors import NlptoolError


@interrupt_safe_output
def nsp_adapt(
    corpus: Annotated[
        str,
        typer.Option(
            "--corpus",
            help="Unlabelled documents: plain text with blank lines between documents, or JSONL with one document "
            "per line (--text-col); '-' for stdin.",
        ),
    ],
    out: Annotated[str, typer.Option("--out", help="Output model folder (must be new or empty, or --force).")],
    model: ModelOpt = None,
    text_col: Annotated[
        str,
        typer.Option("--text-col", hidden_alias("--text-field"), help="JSONL corpus: the field holding a document."),
    ] = "text",
    train_layers: Annotated[
        str,
        typer.Option(
            "--train-layers",
            help="What trains besides the NSP head (pooler + 2-way classifier): the top N transformer layers, or "
            "'all' (the whole encoder, embeddings included). 0: the head alone. Fewer layers: faster steps (the "
            "frozen layers need no backward pass).",
        ),
    ] = "2",
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training pairs.", min=1)] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs per optimizer step.", min=1)] = 32,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, linear decay).", min=0.0)] = 5e-5,
    warmup: Annotated[
        float, typer.Option("--warmup", help="Warm-up as a fraction of all steps.", min=0.0, max=1.0)
    ] = 0.1,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.", min=0.0)] = 0.01,
    max_length: Annotated[int, typer.Option("--max-length", help="Max tokens of a sentence pair.", min=8)] = 128,
    max_pairs: Annotated[
        int | None, typer.Option("--max-pairs", help="Train on at most this many pairs (a seeded subset).", min=1)
    ] = None,
    eval_fraction: Annotated[
        float,
        typer.Option(
            "--eval-fraction", help="Documents held out for NSP accuracy (whole documents).", min=0.0, max=0.9
        ),
    ] = 0.05,
    device: DeviceOpt = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/training/checkpoint-last.")] = False,
    save_every: SaveEveryOpt = 0,
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
    import torch

    from nlptool.commands.encode import model_spec
    from nlptool.core.device import resolve_device
    from nlptool.core.io import check_output_path
    from nlptool.core.models import load_model, load_tokenizer, resolve_model
    from nlptool.core.nsp import IS_NEXT, NSPScorer, build_nsp_pairs, nsp_model_class, split_documents
    from nlptool.core.train import TrainConfig
    from nlptool.core.train import train as run_training

    out_dir = Path(out)
    check_out_dir(out_dir, force=force, resume=resume)
    check_output_path(metrics_out, force)
    layers_spec = _parse_layers(train_layers)
    seed_everything(seed)

    docs = _read_corpus_with_progress(corpus, text_col)
    if not docs:
        raise no_rows_error(corpus, "give a corpus with text")
    n_sentences = sum(len(d) for d in docs)
    train_docs, eval_docs = split_documents(docs, eval_fraction, seed=seed)
    pairs = build_nsp_pairs(train_docs, seed=seed, max_pairs=max_pairs)
    eval_pairs = build_nsp_pairs(eval_docs, seed=seed + 1) if eval_docs else []

    resolved = resolve_model(model_spec(model), role="a BERT-family model for 'nsp-adapt'")
    model_class = nsp_model_class(resolved)
    tokenizer = load_tokenizer(resolved)
    nsp_model = load_model(resolved, model_class)
    trainable = _freeze(nsp_model, layers_spec)
    dev_name = resolve_device(device)
    nsp_model.to(dev_name)
    scorer = NSPScorer(nsp_model, tokenizer, max_length=max_length)
    out_dir.mkdir(exist_ok=True)
    info(
        f"nsp-adapt: {len(docs)} documents, {n_sentences} sentences from {corpus}; {len(pairs)} training pairs "
        f"({sum(p.label == IS_NEXT for p in pairs)} IsNext), {len(eval_pairs)} held-out pairs from {len(eval_docs)} "
        f"documents; model {resolved.name}, training {trainable:,} parameters (--train-layers {train_layers})"
    )

    def evaluate(_model: Any) -> dict[str, float]:  # the scorer holds the same model
        if not eval_pairs:
            return {}
        p = scorer.score_pairs([e.a for e in eval_pairs], [e.b for e in eval_pairs], shorten="longest", batch_size=64)
        gold = [e.label == IS_NEXT for e in eval_pairs]
        correct = sum((pi > 0.5) == g for pi, g in zip(p, gold, strict=True))
        return {"nsp_accuracy": correct / len(eval_pairs)}

    before = evaluate(nsp_model) if not resume else {}
    if before:
        info(f"held-out NSP accuracy before training: {100 * before['nsp_accuracy']:.2f} %")

    encoded = scorer.encode_pairs([p.a for p in pairs], [p.b for p in pairs], shorten="longest")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def collate(idx: list[int]) -> dict[str, torch.Tensor]:
        width = max(len(encoded[i][0]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        types = torch.zeros((len(idx), width), dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            k = len(encoded[i][0])
            ids[row, :k] = torch.tensor(encoded[i][0])
            types[row, :k] = torch.tensor(encoded[i][1])
            mask[row, :k] = 1
        labels = torch.tensor([pairs[i].label for i in idx], dtype=torch.long)
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": labels}

    def compute_loss(m: Any, batch: dict) -> torch.Tensor:
        return m(**batch).loss

    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_ratio=warmup,
        seed=seed,
        device=dev_name,
        group_by_length=True,
        output_dir=str(out_dir / "training"),
        resume=resume,
        checkpoint_every=save_every,
        metric="nsp_accuracy" if eval_pairs else None,
        log_every=50,
    )
    t0 = time.perf_counter()
    with TrainingProgress("pairs") as on_progress:
        result = run_training(
            nsp_model,
            list(range(len(pairs))),
            collate,
            compute_loss,
            config,
            evaluate=evaluate if eval_pairs else None,
            lengths=[len(e[0]) for e in encoded],
            on_progress=on_progress,
            extra_state=None if resume else {"before": before},
        )
    if resume:  # measured by the run that started it, kept with its checkpoints
        before = dict(result.extra_state.get("before") or {})
    wall = time.perf_counter() - t0
    after = evaluate(nsp_model)
    nsp_model.to("cpu")
    nsp_model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

    metrics: dict[str, Any] = {
        "documents": len(docs),
        "sentences": n_sentences,
        "train_documents": len(train_docs),
        "train_pairs": len(pairs),
        "eval_documents": len(eval_docs),
        "eval_pairs": len(eval_pairs),
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "wall_seconds": wall,
        "pairs_per_s": result.examples_per_s,
        "trainable_parameters": trainable,
        "nsp_accuracy_before": before.get("nsp_accuracy"),
        "nsp_accuracy": after.get("nsp_accuracy"),
    }
    if after:
        print_table(
            "nsp-adapt: held-out NSP accuracy",
            ["", "accuracy %"],
            [
                ["before (untrained head)", 100 * before.get("nsp_accuracy", float("nan"))],
                ["after", 100 * after["nsp_accuracy"]],
            ],
        )
    params = {
        "train_layers": train_layers,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "warmup": warmup,
        "weight_decay": weight_decay,
        "max_length": max_length,
        "max_pairs": max_pairs,
        "eval_fraction": eval_fraction,
        "device": dev_name,
    }
    write_metrics(
        str(out_dir / "metrics.json"),
        metrics,
        force=True,
        seed=seed,
        inputs=[corpus],
        model=resolved.name,
        params=params,
    )
    write_metrics(metrics_out, metrics, force=force, seed=seed, inputs=[corpus], model=resolved.name, params=params)
    shutil.rmtree(out_dir / "training" / "checkpoint-last", ignore_errors=True)  # last: an interrupt can --resume
    info(
        f"nsp-adapt: model saved to {out_dir} ({result.steps} steps in {result.train_seconds:.1f} s, "
        f"{result.examples_per_s:.1f} pairs/s); use it with: nlptool zero-shot INPUT --labels ... --model {out_dir}"
    )


def _read_corpus_with_progress(corpus: str, text_field: str) -> list[list[str]]:
    """Read and sentence-split the corpus with a progress bar on stderr (bytes of the file; shown after 2 s)."""
    from nlptool.core.nsp import read_corpus

    path = Path(corpus)
    total = path.stat().st_size if path.is_file() else None
    with progress("nsp-adapt: reading and splitting the corpus", total=total, unit="bytes") as advance:
        return read_corpus(corpus, text_field=text_field, on_progress=advance)


def _parse_layers(value: str) -> int | None:
    """'all' → None (everything trains); an integer ≥ 0 → that many top layers."""
    text = str(value).strip().lower()
    if text == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        raise typer.BadParameter(
            f"'{value}' is neither 'all' nor a number of layers", param_hint="--train-layers"
        ) from None
    if n < 0:
        raise typer.BadParameter("must be 'all' or >= 0", param_hint="--train-layers")
    return n


def _freeze(model: Any, top_layers: int | None) -> int:
    """Freeze all but the NSP head (pooler + classifier) and the top ``top_layers`` encoder layers; returns the number
    of trainable parameters. ``None`` trains everything."""
    if top_layers is None:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = getattr(model, model.base_model_prefix, None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if base is None or layers is None:
        raise NlptoolError(
            f"cannot find the encoder layers of {type(model).__name__} to train only the top ones; "
            "use --train-layers all"
        )
    if top_layers > len(layers):
        raise NlptoolError(f"--train-layers {top_layers}: the model has only {len(layers)} layers; use 'all'")
    model.requires_grad_(False)
    for layer in list(layers)[len(layers) - top_layers :]:
        layer.requires_grad_(True)
    pooler = getattr(base, "pooler", None)
    if pooler is None:
        raise NlptoolError(f"{type(model).__name__} has no pooler layer; the NSP head needs one")
    pooler.requires_grad_(True)
    for name, module in model.named_children():
        if name != model.base_model_prefix:
            module.requires_grad_(True)  # the classifier (cls.seq_relationship)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

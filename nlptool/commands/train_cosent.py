"""``nlptool train-cosent``: train a sentence encoder with CoSENT (or the two baselines it is compared with)."""

from __future__ import annotations

import shutil
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from nlptool.commands._common import (
    DeviceOpt,
    ForceOpt,
    HeaderOpt,
    MetricsOutOpt,
    ModelOpt,
    SaveEveryOpt,
    SeedOpt,
    TrainingProgress,
    check_out_dir,
    info,
    interrupt_safe_output,
    print_table,
    seed_everything,
    warn,
    write_metrics,
)
from nlptool.commands.encode import PoolingOpt, model_spec
from nlptool.commands.eval_sts import LabelCol, LabelType, Text1Col, Text2Col, constant_value
from nlptool.core.device import resolve_device

# λ defaults. Su's 20 was chosen for raw BERT, whose cosines crowd into a narrow band; on an encoder already trained
# for sentence similarity (all-MiniLM-L6-v2) λ=20 lowered STS-B dev Spearman and λ=5 raised it (BENCHMARKS.md).
RECOMMENDED_SCALE_RAW_ENCODER = 20.0
RECOMMENDED_SCALE_SENTENCE_MODEL = 5.0


class Loss(str, Enum):
    cosent = "cosent"
    softmax = "softmax"
    cosine_mse = "cosine-mse"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@interrupt_safe_output
def train_cosent(
    train: Annotated[str, typer.Option("--train", help="Training pairs: CSV/TSV/JSONL, two texts and a label.")],
    out: Annotated[str, typer.Option("--out", help="Output folder for the trained model (must be new or empty).")],
    dev: Annotated[
        str | None, typer.Option("--dev", help="Dev pairs: Spearman after each epoch; the best model is kept.")
    ] = None,
    model: ModelOpt = None,
    pooling: PoolingOpt = None,
    loss: Annotated[
        Loss, typer.Option("--loss", help="cosent (Su 2022), softmax (Sentence-BERT), cosine-mse (naive regression).")
    ] = Loss.cosent,
    scale: Annotated[
        float | None,
        typer.Option(
            "--scale",
            help="CoSENT's λ (cosine differences are multiplied by it). Default: 20 (Su's value, for raw encoders "
            "such as bert-base), 5 for models that are already sentence encoders (see BENCHMARKS.md).",
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training pairs.", min=1)] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs per optimizer step (global).", min=2)] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).", min=0.0)] = 2e-5,
    warmup: Annotated[
        float, typer.Option("--warmup", help="Warm-up as a fraction of all steps.", min=0.0, max=1.0)
    ] = 0.1,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.", min=0.0)] = 0.01,
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", help="Gradient clipping (0: off).", min=0.0)] = 1.0,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Batches accumulated per optimizer step.", min=1)] = 1,
    max_length: Annotated[
        int,
        typer.Option(
            "--max-length", help="Max tokens per text in training (longer texts are cut); saved with the model.", min=1
        ),
    ] = 128,
    label_type: Annotated[
        LabelType | None, typer.Option("--label-type", help="Label kind (default: detected from the training file).")
    ] = None,
    text1_col: Text1Col = None,
    text2_col: Text2Col = None,
    label_col: LabelCol = None,
    eval_every: Annotated[
        int, typer.Option("--eval-every", help="Also evaluate every N steps (0: per epoch).", min=0)
    ] = 0,
    group_by_length: Annotated[
        bool,
        typer.Option(
            "--group-by-length/--no-group-by-length",
            help="Batch pairs of similar length: less padding, about 1.5x faster on STS-B, same dev Spearman there.",
        ),
    ] = True,
    device: DeviceOpt = "auto",
    precision: Annotated[Precision, typer.Option("--precision", help="bf16/fp16 autocast (CUDA).")] = Precision.fp32,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/training/checkpoint-last.")] = False,
    save_every: SaveEveryOpt = 0,
    header: HeaderOpt = None,
    metrics_out: MetricsOutOpt = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Train a sentence encoder on labelled pairs with the CoSENT loss (ranks all pairs of cosines in a batch).

    L = log(1 + Σ_{label_i > label_j} exp(λ(cos_j − cos_i))), λ = --scale. Labels may be binary, graded scores
    (STS 0–5) or NLI (entailment > neutral > contradiction). The output folder loads with `nlptool encode OUT`,
    transformers.AutoModel and sentence_transformers.SentenceTransformer; it also holds metrics.json and
    training/train_log.jsonl. Runs under torchrun (DistributedDataParallel) without changes.

    Example: nlptool train-cosent --train stsb_train.csv --dev stsb_dev.csv --out my-model

    Reference: Su Jianlin, "CoSENT(一):比Sentence-BERT更有效的句向量方案", https://kexue.fm/archives/8847
    """
    import torch

    from nlptool.commands.eval_sts import evaluate_pairs
    from nlptool.core.cosent import SoftmaxHead, cosent_loss, cosine_mse_loss, pairwise_cosine, softmax_loss
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.io import check_output_path
    from nlptool.core.pairs import read_pairs
    from nlptool.core.train import TrainConfig, all_gather_with_grad, is_main_process, world_info
    from nlptool.core.train import train as run_training

    out_dir = Path(out)
    rank, world = world_info()
    if rank == 0:  # under torchrun only rank 0 writes, so only it checks the output
        check_out_dir(out_dir, force=force, resume=resume)
        check_output_path(metrics_out, force)
    seed_everything(seed)

    data = read_pairs(
        train,
        text1_col=text1_col,
        text2_col=text2_col,
        label_col=label_col,
        label_type=label_type.value if label_type else None,
        header=header,
    )
    dev_data = None
    if dev is not None:
        dev_data = read_pairs(
            dev,
            text1_col=text1_col,
            text2_col=text2_col,
            label_col=label_col,
            label_type=data.label_type,
            header=header,
        )
        constant = constant_value(dev_data.labels) if len(dev_data) > 1 else None
        if len(dev_data) < 2 or constant is not None:
            why = f"has {len(dev_data)} pair"
            if constant is not None:
                why = f"has one label value for every pair ({constant:g})"
            warn(
                f"--dev {dev} {why}, so dev Spearman is undefined: the dev set is not used (no dev evaluation, no "
                "best-checkpoint selection; the final weights are saved); give dev pairs with different labels"
            )
            dev_data = None
    if loss == Loss.softmax:
        class_ids = data.class_ids()  # raises for graded scores
    encoder = SentenceEncoder.load(model_spec(model), pooling=pooling.value if pooling else None, max_length=max_length)
    dev_name = resolve_device(device)
    if scale is None:
        scale = RECOMMENDED_SCALE_SENTENCE_MODEL if encoder.sentence_model else RECOMMENDED_SCALE_RAW_ENCODER
    elif not scale > 0:
        raise typer.BadParameter("must be positive", param_hint="--scale")
    if rank == 0:
        out_dir.mkdir(exist_ok=True)  # only now: bad data or a bad model leave no folder behind
        info(
            f"train-cosent: {len(data)} {data.label_type} pairs from {train}; model {encoder.name} "
            f"(pooling {encoder.pooling}, max length {encoder.max_length}); loss {loss.value}"
            + (f", λ={scale}" if loss == Loss.cosent else "")
        )

    class PairModel(torch.nn.Module):
        """One module for DDP: the encoder (and the softmax head for the Sentence-BERT objective)."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = SoftmaxHead(encoder.dim, 3 if data.label_type == "nli" else 2) if loss == Loss.softmax else None
            pooler = getattr(encoder.model, "pooler", None)
            if encoder.pooling != "pooler" and isinstance(pooler, torch.nn.Module):
                pooler.requires_grad_(False)  # unused by this pooling: no gradient (DDP insists), no weight decay

        def forward(self, features: dict) -> tuple[torch.Tensor, torch.Tensor]:
            # both sides of every pair in one forward pass (one padded batch of 2n texts): fewer, larger matmuls
            emb = self.encoder(features)
            n = emb.shape[0] // 2
            return emb[:n], emb[n:]

    pair_model = PairModel()
    labels_all = (
        class_ids if loss == Loss.softmax else (data.unit_targets() if loss == Loss.cosine_mse else data.labels)
    )
    examples = list(range(len(data)))

    def collate(idx: list[int]) -> tuple[dict, torch.Tensor]:
        features = encoder.tokenize([data.text1[i] for i in idx] + [data.text2[i] for i in idx])
        dtype = torch.long if loss == Loss.softmax else torch.float32
        return features, torch.tensor([labels_all[i] for i in idx], dtype=dtype)

    def compute_loss(m: Any, batch: Any) -> torch.Tensor:
        features, y = batch
        u, v = m(features)
        if loss == Loss.softmax:
            head = m.module.head if hasattr(m, "module") else m.head
            return softmax_loss(u, v, y, head.classifier)
        cos = pairwise_cosine(u, v)
        if loss == Loss.cosine_mse:
            return cosine_mse_loss(cos, y)
        # CoSENT couples every pair in the batch: under torchrun every process ranks the cosines of the whole global
        # batch (gathered with gradients; see nlptool.core.train for why no world-size factor is needed).
        return cosent_loss(all_gather_with_grad(cos), all_gather_with_grad(y), scale=scale)

    def evaluate(m: Any) -> dict[str, float]:
        assert dev_data is not None
        was_training = m.training
        result = evaluate_pairs(m.encoder, dev_data, batch_size=64, device=dev_name)["metrics"]
        m.train(was_training)
        return {"spearman": result["spearman"], "pearson": result["pearson"]}

    training_dir = out_dir / "training"
    best_dir = training_dir / "best"

    def save_best(m: Any, path: Path) -> None:
        m.encoder.save(path)

    before = evaluate(pair_model) if dev_data is not None and is_main_process() else None
    if before is not None:
        info(f"dev Spearman before training: {100 * before['spearman']:.2f}")

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
        metric="spearman" if dev_data is not None else None,
        greater_is_better=True,
    )
    lengths = [len(data.text1[i]) + len(data.text2[i]) for i in examples]
    with TrainingProgress("pairs", ("spearman", "Spearman")) as on_progress:
        result = run_training(
            pair_model,
            examples,
            collate,
            compute_loss,
            config,
            evaluate=evaluate if dev_data is not None else None,
            save_best=save_best if dev_data is not None else None,
            lengths=lengths,
            on_progress=on_progress,
        )
    if not is_main_process():
        return

    # The model folder: the best dev checkpoint if there was a dev set, else the final weights.
    if dev_data is not None and best_dir.is_dir():
        for item in best_dir.iterdir():
            target = out_dir / item.name
            if target.is_dir():
                shutil.rmtree(target)
            shutil.move(str(item), target)
        best_dir.rmdir()
    else:
        encoder.save(out_dir)

    metrics: dict[str, Any] = {
        "train_pairs": len(data),
        "label_type": data.label_type,
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "pairs_per_s": result.examples_per_s,
    }
    if dev_data is not None:
        final = SentenceEncoder.load(str(out_dir))
        after = evaluate_pairs(final, dev_data, batch_size=64, device=dev_name)["metrics"]
        metrics.update(
            dev_pairs=len(dev_data),
            dev_spearman_before=before["spearman"] if before else None,
            dev_spearman=after["spearman"],
            dev_pearson=after["pearson"],
            best_step=result.best_step,
        )
        print_table(
            "train-cosent",
            ["", "dev Spearman ×100"],
            [
                ["before training", 100 * (before or {}).get("spearman", float("nan"))],
                ["saved model", 100 * after["spearman"]],
            ],
        )
    params = {
        "loss": loss.value,
        "scale": scale,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "warmup": warmup,
        "weight_decay": weight_decay,
        "max_grad_norm": max_grad_norm,
        "grad_accum": grad_accum,
        "max_length": encoder.max_length,
        "pooling": encoder.pooling,
        "group_by_length": group_by_length,
        "world_size": world,
        "device": dev_name,
        "precision": precision.value,
    }
    inputs = [train, *([dev] if dev else [])]
    write_metrics(
        str(out_dir / "metrics.json"), metrics, force=True, seed=seed, inputs=inputs, model=encoder.name, params=params
    )
    write_metrics(metrics_out, metrics, force=force, seed=seed, inputs=inputs, model=encoder.name, params=params)
    # resume state is only needed while a run is unfinished: removed last, so an interrupt before here can --resume
    shutil.rmtree(training_dir / "checkpoint-last", ignore_errors=True)
    info(f"train-cosent: model saved to {out_dir} ({result.steps} steps, {result.examples_per_s:.1f} pairs/s)")

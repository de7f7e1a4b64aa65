"""``nlptool eval-sts``: Spearman/Pearson of cosine similarity against gold pair labels."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from nlptool.commands._common import (
    DeviceOpt,
    ForceOpt,
    HeaderOpt,
    LegacyPositionalArg,
    MetricsOutOpt,
    ModelOpt,
    hidden_alias,
    model_and_input,
    print_table,
    progress,
    write_metrics,
)
from nlptool.commands.encode import BatchSizeOpt, MaxLengthOpt, PoolingOpt, model_spec
from nlptool.core.device import resolve_device

Text1Col = Annotated[str | None, typer.Option("--text1-col", help="Column of the first text (default: guessed).")]
Text2Col = Annotated[str | None, typer.Option("--text2-col", help="Column of the second text (default: guessed).")]
LabelCol = Annotated[str | None, typer.Option("--label-col", help="Column of the label (default: guessed).")]


def evaluate_pairs(encoder: Any, data: Any, *, batch_size: int, device: str, advance: Any = None) -> dict[str, Any]:
    """Cosines of every pair (each distinct text encoded once) and the STS metrics for them."""
    import numpy as np

    from nlptool.core.metrics import best_threshold_accuracy, pearson, spearman

    unique = list(dict.fromkeys([*data.text1, *data.text2]))
    index = {t: i for i, t in enumerate(unique)}
    emb = encoder.encode(unique, batch_size=batch_size, normalize=True, device=device, progress=advance)
    a = emb[[index[t] for t in data.text1]]
    b = emb[[index[t] for t in data.text2]]
    cos = np.sum(a * b, axis=1).astype(np.float64)
    metrics: dict[str, Any] = {
        "pairs": len(data),
        "spearman": spearman(cos, data.labels),
        "pearson": pearson(cos, data.labels),
        "label_type": data.label_type,
    }
    if data.label_type == "binary":
        acc, threshold = best_threshold_accuracy(cos, data.labels)
        metrics["best_threshold_accuracy"] = acc
        metrics["best_threshold"] = threshold
    return {"metrics": metrics, "cosine": cos}


def eval_sts(
    pairs: Annotated[str, typer.Argument(help="Pairs file: CSV/TSV/JSONL with two texts and a label, or '-'.")],
    legacy_pairs: LegacyPositionalArg = None,
    model: ModelOpt = None,
    text1_col: Text1Col = None,
    text2_col: Text2Col = None,
    label_col: LabelCol = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            hidden_alias("--predictions-out"),
            help="Write each pair's cosine as JSONL/CSV here ('-': stdout). Default: no predictions.",
        ),
    ] = None,
    metrics_out: MetricsOutOpt = None,
    batch_size: BatchSizeOpt = 64,
    pooling: PoolingOpt = None,
    max_length: MaxLengthOpt = None,
    device: DeviceOpt = "auto",
    header: HeaderOpt = None,
    force: ForceOpt = False,
) -> None:
    """Evaluate a sentence encoder on labelled pairs: Spearman and Pearson of cosine vs label.

    For binary labels also the accuracy at the best cosine threshold (chosen on this data, so optimistic). A table
    goes to stderr; --metrics-out writes JSON (fractions: 0.8672 means 86.72 ×100). Nothing goes to stdout unless
    -o - or --metrics-out -.

    Example: nlptool eval-sts sample_data/stsb_dev_sample.csv --model my-model/ --metrics-out dev.json

    Reference: Su Jianlin, CoSENT, https://kexue.fm/archives/8847 (Spearman is the metric the post reports)
    """
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.io import check_output_path, open_writer
    from nlptool.core.pairs import read_pairs

    model, pairs = model_and_input(model, pairs, legacy_pairs, command="eval-sts")
    check_output_path(output, force)
    check_output_path(metrics_out, force)
    data = read_pairs(pairs, text1_col=text1_col, text2_col=text2_col, label_col=label_col, header=header)
    encoder = SentenceEncoder.load(model_spec(model), pooling=pooling.value if pooling else None, max_length=max_length)
    with progress("eval-sts", unit="texts") as advance:
        result = evaluate_pairs(encoder, data, batch_size=batch_size, device=resolve_device(device), advance=advance)
    metrics = result["metrics"]
    if output:
        with open_writer(output, force=force) as writer:
            for i in range(len(data)):
                writer.write(
                    {
                        "line": data.lines[i],
                        "text1": data.text1[i],
                        "text2": data.text2[i],
                        "label": float(data.labels[i]),
                        "cosine": float(result["cosine"][i]),
                    }
                )
    rows = [["pairs", metrics["pairs"]], ["spearman ×100", 100 * metrics["spearman"]]]
    rows.append(["pearson ×100", 100 * metrics["pearson"]])
    if "best_threshold_accuracy" in metrics:
        rows.append(["best-threshold accuracy ×100", 100 * metrics["best_threshold_accuracy"]])
        rows.append(["best threshold (cosine)", metrics["best_threshold"]])
    print_table(f"eval-sts: {encoder.name} on {pairs}", ["metric", "value"], rows)
    params = {"pooling": encoder.pooling, "max_length": encoder.max_length, "columns": list(data.columns)}
    write_metrics(metrics_out, metrics, force=force, inputs=[pairs], model=encoder.name, params=params)

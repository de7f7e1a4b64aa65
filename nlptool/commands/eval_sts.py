"""``nlptool eval-sts``: Spearman/Pearson of cosine similarity against gold pair labels."""

from __future__ import annotations

from enum import Enum
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


class LabelType(str, Enum):
    binary = "binary"
    score = "score"
    nli = "nli"


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


def constant_value(values: Any) -> float | None:
    """The common value when every entry of ``values`` is equal (correlations are then undefined), else None."""
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    if arr.size and bool((arr == arr[0]).all()):
        return float(arr[0])
    return None


def _label_text(value: float, label_type: str) -> str:
    if label_type == "nli":
        from nlptool.core.pairs import NLI_NAMES

        return NLI_NAMES[int(value)]
    return f"{value:g}"


def eval_sts(
    pairs: Annotated[str, typer.Argument(help="Pairs file: CSV/TSV/JSONL with two texts and a label, or '-'.")],
    legacy_pairs: LegacyPositionalArg = None,
    model: ModelOpt = None,
    text1_col: Text1Col = None,
    text2_col: Text2Col = None,
    label_col: LabelCol = None,
    label_type: Annotated[
        LabelType | None,
        typer.Option(
            "--label-type", help="Label kind: binary adds best-threshold accuracy (default: detected from PAIRS)."
        ),
    ] = None,
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
    from nlptool.core.errors import NlptoolError
    from nlptool.core.io import check_output_path, display_name, open_writer
    from nlptool.core.pairs import read_pairs

    model, pairs = model_and_input(model, pairs, legacy_pairs, command="eval-sts")
    check_output_path(output, force)
    check_output_path(metrics_out, force)
    data = read_pairs(
        pairs,
        text1_col=text1_col,
        text2_col=text2_col,
        label_col=label_col,
        label_type=label_type.value if label_type else None,
        header=header,
    )
    shown = display_name(pairs)
    if len(data) < 2:
        raise NlptoolError(f"{shown} has {len(data)} pair; Spearman needs at least 2 pairs with different labels")
    constant = constant_value(data.labels)
    if constant is not None:
        raise NlptoolError(
            f"{shown}: every label (column {data.columns[2]!r}) is {_label_text(constant, data.label_type)}, "
            "so Spearman and Pearson are undefined "
            "(no order to compare the cosines with); evaluate on pairs with at least two different labels"
        )
    encoder = SentenceEncoder.load(model_spec(model), pooling=pooling.value if pooling else None, max_length=max_length)
    with progress("eval-sts", unit="texts") as advance:
        result = evaluate_pairs(encoder, data, batch_size=batch_size, device=resolve_device(device), advance=advance)
    metrics = result["metrics"]
    constant = constant_value(result["cosine"])
    if constant is not None:
        raise NlptoolError(
            f"{shown}: model {encoder.name} gives every pair the same cosine ({constant:.6g}), so Spearman and "
            "Pearson are undefined; check the model (an untrained or collapsed encoder?) and its --pooling"
        )
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

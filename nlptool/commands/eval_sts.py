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


def __getattr__(name: str) -> Any:
    """``evaluate_pairs`` and ``constant_value`` moved to :mod:`nlptool.core.cosent`; the old import path still works
    (resolved lazily, so that ``nlptool --help`` does not import torch)."""
    if name in ("evaluate_pairs", "constant_value"):
        from nlptool.core import cosent

        return getattr(cosent, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    from nlptool.core.cosent import check_cosines, check_sts_pairs, evaluate_pairs
    from nlptool.core.encoder import SentenceEncoder
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
    check_sts_pairs(data, display_name(pairs))
    encoder = SentenceEncoder.load(model_spec(model), pooling=pooling.value if pooling else None, max_length=max_length)
    with progress("eval-sts", unit="texts") as advance:
        result = evaluate_pairs(encoder, data, batch_size=batch_size, device=resolve_device(device), advance=advance)
    metrics = result["metrics"]
    check_cosines(result["cosine"], encoder.name, display_name(pairs))
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

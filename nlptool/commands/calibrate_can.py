"""``nlptool calibrate-can``: CAN, alternating row/column normalisation of uncertain predictions against a prior."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from nlptool.commands._common import (
    ForceOpt,
    Format,
    FormatOpt,
    HeaderOpt,
    InputArg,
    MetricsOutOpt,
    OutputFormatOpt,
    OutputOpt,
    fmt_value,
    info,
    parse_csv_list,
    print_table,
    progress,
    warn,
    warn_empty,
    write_metrics,
)
from nlptool.core.errors import InputError, NlptoolError


def _positive_alpha(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value:g} is not a finite number > 0 (α = 1 leaves the rows as they are)")
    return value


# The command's options (help texts are the --help reference).
PriorOpt = Annotated[
    str | None,
    typer.Option(
        "--prior",
        help="Label prior: '0.3,0.3,0.4', or a file of label counts ('label,count' lines, one count per line, "
        "or a JSON/YAML mapping). Default: uniform.",
    ),
]
PriorFromOpt = Annotated[
    str | None, typer.Option("--prior-from", help="Count the labels of this (training) file to get the prior.")
]
PriorLabelColOpt = Annotated[
    str | None,
    typer.Option("--prior-label-col", help="Label column of --prior-from (default: --label-col, else 'label')."),
]
LabelColOpt = Annotated[
    str | None,
    typer.Option("--label-col", help="Gold label column of INPUT: adds accuracy before/after to the metrics."),
]
LabelsOpt = Annotated[
    str | None, typer.Option("--labels", help="Class names in order, 'neg,pos' (default: the --columns, else 0..C-1).")
]
FieldOpt = Annotated[str, typer.Option("--field", help="JSONL field (or CSV cell) holding the list.")]
ColumnsOpt = Annotated[
    str | None,
    typer.Option("--columns", help="Probability columns instead of a list: 'p0,p1,p2' or a glob 'prob_*'."),
]
TopKOpt = Annotated[int, typer.Option("--top-k", "-k", help="Top-k probabilities for the uncertainty.", min=2)]
ThresholdOpt = Annotated[
    float, typer.Option("--threshold", help="Rows with uncertainty < threshold are confident (τ).")
]
AlphaOpt = Annotated[
    float, typer.Option("--alpha", help="Power applied before each normalisation (α > 0).", callback=_positive_alpha)
]
IterationsOpt = Annotated[int, typer.Option("--iterations", help="Alternating normalisation rounds.", min=1)]
RenormalizeOpt = Annotated[
    bool, typer.Option("--renormalize", help="Divide rows that do not sum to 1 by their sum instead of failing.")
]


@dataclass
class _Probs:
    """Pass 1 over the input: the numbers (``None`` when there are no rows), their lines, the gold class indices
    (``None`` without --label-col), the layout, the header and the class names."""

    probs: Any
    lines: list[int]
    gold: Any
    layout: Any
    fieldnames: list[str] | None
    class_names: list[str] | None


def calibrate_can(
    input: InputArg,
    output: OutputOpt = "-",
    prior: PriorOpt = None,
    prior_from: PriorFromOpt = None,
    prior_label_col: PriorLabelColOpt = None,
    label_col: LabelColOpt = None,
    labels: LabelsOpt = None,
    field: FieldOpt = "probs",
    columns: ColumnsOpt = None,
    top_k: TopKOpt = 3,
    threshold: ThresholdOpt = 0.9,
    alpha: AlphaOpt = 1.0,
    iterations: IterationsOpt = 1,
    renormalize: RenormalizeOpt = False,
    metrics_out: MetricsOutOpt = None,
    format: FormatOpt = Format.auto,
    output_format: OutputFormatOpt = Format.auto,
    header: HeaderOpt = None,
    force: ForceOpt = False,
) -> None:
    """Calibrate uncertain predictions with CAN (classification with alternating normalization).

    Rows whose top-k entropy (normalised by log k) is below --threshold are confident; each uncertain row is
    re-estimated together with all confident rows by alternating column normalisation (towards the prior) and row
    normalisation. Output: the rows with adjusted probabilities, "pred", "adjusted" and "uncertainty".

    Example: cat preds.jsonl | nlptool calibrate-can - --prior-from train.csv --label-col label > calibrated.jsonl

    References: Jia et al., "When in Doubt: Improving Classification Performance with Alternating Normalization",
    Findings of EMNLP 2021; Su Jianlin, https://kexue.fm/archives/8728
    """
    from nlptool.commands._distributions import cli_hint
    from nlptool.core.can import calibrate, evaluate
    from nlptool.core.errors import RowError
    from nlptool.core.io import check_output_path, open_writer, replayable

    if prior is not None and prior_from is not None:
        raise typer.BadParameter("give --prior or --prior-from, not both", param_hint="--prior")
    check_output_path(output, force)
    check_output_path(metrics_out, force)

    # Two passes over the input: stdin is copied to a temporary file that core.io always removes.
    with replayable(input) as source:
        # Pass 1: only the numbers (and gold labels), not the records: CAN needs every row before adjusting any.
        data = _read_probs(source, input, field, columns, parse_csv_list(labels), label_col, format, header)
        if data.probs is None:
            warn_empty(input)
            with open_writer(output, fmt_value(output_format), force=force, fieldnames=data.fieldnames):
                pass
            write_metrics(metrics_out, {"rows": 0}, force=force, inputs=[input])
            return
        probs, lines, layout, class_names = data.probs, data.lines, data.layout, data.class_names
        prior_vec = _resolve_prior(
            prior, prior_from, prior_label_col or label_col or "label", class_names, len(probs[0])
        )
        knobs = {"k": top_k, "threshold": threshold, "alpha": alpha, "iterations": iterations}
        try:
            adjusted, mask, uncertainty = calibrate(
                probs, prior_vec, **knobs, return_mask=True, renormalize=renormalize
            )
        except RowError as exc:
            raise InputError(cli_hint(exc.message), path=input, line=lines[exc.row], field=layout.label) from None
        # Pass 2: stream the records again and write them with the adjusted numbers.
        _write_calibrated(
            source, input, data, field, adjusted, mask, uncertainty, output, output_format, format, header, force
        )

    metrics = {**evaluate(probs, adjusted, mask, data.gold), "prior": prior_vec.tolist()}
    _report(metrics, top_k, threshold)
    params = {"top_k": top_k, "threshold": threshold, "alpha": alpha, "iterations": iterations}
    params |= {"label_col": label_col, "prior": prior, "prior_from": prior_from, "labels": class_names}
    write_metrics(
        metrics_out, metrics, force=force, inputs=[input, *([prior_from] if prior_from else [])], params=params
    )


def _read_probs(
    source: str,
    input: str,
    field: str,
    columns: str | None,
    class_names: list[str] | None,
    label_col: str | None,
    format: Format,
    header: bool | None,
) -> _Probs:
    """Pass 1: the probability rows as one float64 array (``probs`` is ``None`` for an input without rows)."""
    import numpy as np

    from nlptool.commands._distributions import choose_layout, read_row
    from nlptool.core.io import read_records

    rows: list[Any] = []
    lines: list[int] = []
    gold_raw: list[str] = []
    width = None
    with read_records(source, fmt_value(format), header=header, name=input) as reader:
        layout = choose_layout(reader.fieldnames, field, columns, path=input)
        if class_names is None and layout.columns is not None:
            class_names = list(layout.columns)
        with progress("reading") as advance:
            for record in reader:
                row = read_row(record, layout, input)
                if width is None:
                    width = len(row)
                elif len(row) != width:
                    raise InputError(
                        f"{len(row)} probabilities where earlier rows have {width}; every row needs one per class",
                        path=input,
                        line=record.line,
                        field=layout.label,
                    )
                rows.append(row)
                lines.append(record.line)
                if label_col is not None:
                    gold_raw.append(_label_value(record, label_col, input))
                advance(1)
        fieldnames = reader.fieldnames
    if width is None:
        return _Probs(None, lines, None, layout, fieldnames, class_names)
    if class_names is not None and len(class_names) != width:
        raise NlptoolError(f"--labels names {len(class_names)} classes but the rows hold {width} probabilities")
    gold = None
    if label_col is not None:  # validated before anything is written
        gold = np.asarray(
            [_label_index(v, class_names, width, input, lines[i], label_col) for i, v in enumerate(gold_raw)]
        )
    return _Probs(np.asarray(rows, dtype=np.float64), lines, gold, layout, fieldnames, class_names)


def _write_calibrated(
    source: str,
    input: str,
    data: _Probs,
    field: str,
    adjusted: Any,
    mask: Any,
    uncertainty: Any,
    output: str,
    output_format: Format,
    format: Format,
    header: bool | None,
    force: bool,
) -> None:
    """Pass 2: the input records with the adjusted numbers, "pred", "adjusted" and "uncertainty"."""
    from nlptool.commands._distributions import write_row
    from nlptool.core.io import open_writer, read_records

    layout, names = data.layout, data.class_names
    out_fields = None
    if data.fieldnames is not None:
        extra = [] if layout.columns is not None or field in data.fieldnames else [field]
        out_fields = [*data.fieldnames, *extra, "pred", "adjusted", "uncertainty"]
    pred = adjusted.argmax(axis=1)
    with (
        read_records(source, fmt_value(format), header=header, name=input) as reader,
        open_writer(output, fmt_value(output_format), force=force, fieldnames=out_fields) as writer,
    ):
        for i, record in enumerate(reader):
            row = write_row(record, layout, adjusted[i], field)
            row["pred"] = names[pred[i]] if names else int(pred[i])
            row["adjusted"] = bool(mask[i])
            row["uncertainty"] = float(uncertainty[i])
            writer.write(row)


def _report(metrics: dict[str, Any], top_k: int, threshold: float) -> None:
    """The warning when almost no row is confident, and the summary on stderr (a table when there are gold labels)."""
    n, n_unc, n_conf = metrics["rows"], metrics["uncertain_rows"], metrics["confident_rows"]
    if n and n_conf < max(1, 0.05 * n):
        # CAN rescales each uncertain row against the confident ones; with (almost) none, the column normalisation
        # only pulls every row towards the prior, and near-uniform inputs all end up with the same label.
        warn(
            f"only {n_conf} of {n} rows are confident (top-{top_k} uncertainty < --threshold {threshold}): CAN "
            "has almost nothing to calibrate against and will push the rows towards the prior; check that the "
            "probabilities are not near-uniform (e.g. zero-shot scores) or lower --threshold"
        )
    if "accuracy_before" not in metrics:
        info(
            f"calibrate-can: {n} rows, {n_unc} uncertain (adjusted), "
            f"{metrics['changed_predictions']} predictions changed"
        )
        return

    def shown(v: float | None) -> float:
        return float("nan") if v is None else v

    acc_conf = shown(metrics["accuracy_confident"])
    print_table(
        "calibrate-can",
        ["rows", "n", "acc before", "acc after"],
        [
            ["all", n, metrics["accuracy_before"], metrics["accuracy_after"]],
            ["confident (unchanged)", n_conf, acc_conf, acc_conf],
            [
                "uncertain (adjusted)",
                n_unc,
                shown(metrics["accuracy_uncertain_before"]),
                shown(metrics["accuracy_uncertain_after"]),
            ],
        ],
    )


def _label_value(record: Any, col: str, path: str) -> str:
    from nlptool.core.io import get_field

    value = get_field(record, col, path)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError("empty label", path=path, line=record.line, field=col)
    return str(value).strip()


def _label_index(value: str, names: list[str] | None, width: int, path: str, line: int, col: str) -> int:
    from nlptool.core.can import class_index

    return class_index(value, names, width, path=path, line=line, field=col)


def _resolve_prior(prior: str | None, prior_from: str | None, label_col: str, names: list[str] | None, width: int):
    import numpy as np

    from nlptool.core.can import label_counts, parse_prior

    if prior_from is not None:
        counts = label_counts(prior_from, label_col, names, width)
        if (counts == 0).any():
            absent = [names[i] if names else str(i) for i in np.flatnonzero(counts == 0)]
            warn(
                f"{len(absent)} class(es) never occur in --prior-from {prior_from} ({', '.join(absent[:10])}): "
                "their prior is 0, so they get probability 0 in every adjusted row"
            )
        return counts / counts.sum()
    if prior is None:
        return np.full(width, 1.0 / width)
    try:
        return parse_prior(prior, names, width)
    except InputError:
        raise
    except NlptoolError as exc:
        raise NlptoolError(f"--{exc}") from None

"""``nlptool entropy-normalize``: power-transform distributions so that their entropy equals a target."""

from __future__ import annotations

from typing import Annotated

import typer

from nlptool.commands._common import (
    ForceOpt,
    Format,
    FormatOpt,
    HeaderOpt,
    InputArg,
    OutputFormatOpt,
    OutputOpt,
    fmt_value,
    info,
    progress,
    warn_empty,
)

# The command's options (help texts are the --help reference).
TargetOpt = Annotated[
    float | None, typer.Option("--target", "-t", help="Target entropy H* in nats.", show_default=False)
]
TargetRatioOpt = Annotated[
    float | None,
    typer.Option("--target-ratio", "-r", help="Target as a fraction of the maximum: H* = r·log(n).", min=0.0),
]
FieldOpt = Annotated[str, typer.Option("--field", help="JSONL field (or CSV cell) holding the list.")]
ColumnsOpt = Annotated[
    str | None,
    typer.Option("--columns", help="Probability columns instead of a list: 'p0,p1,p2' or a glob 'prob_*'."),
]
OutputFieldOpt = Annotated[str, typer.Option("--output-field", help="Field for the normalised list (list input).")]
LogitsOpt = Annotated[bool, typer.Option("--logits", help="Rows are logits: softmax them first.")]
ClipOpt = Annotated[
    bool, typer.Option("--clip", help="Clamp targets outside a row's reachable range instead of failing.")
]
RenormalizeOpt = Annotated[
    bool, typer.Option("--renormalize", help="Divide rows that do not sum to 1 by their sum instead of failing.")
]
TolOpt = Annotated[float, typer.Option("--tol", help="Convergence: |H(p~) - H*| <= tol (nats).", min=0.0)]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Rows per vectorised batch.", min=1)]


def entropy_normalize(
    input: InputArg,
    target: TargetOpt = None,
    target_ratio: TargetRatioOpt = None,
    output: OutputOpt = "-",
    field: FieldOpt = "probs",
    columns: ColumnsOpt = None,
    output_field: OutputFieldOpt = "probs",
    logits: LogitsOpt = False,
    clip: ClipOpt = False,
    renormalize: RenormalizeOpt = False,
    tol: TolOpt = 1e-9,
    batch_size: BatchSizeOpt = 20000,
    format: FormatOpt = Format.auto,
    output_format: OutputFormatOpt = Format.auto,
    header: HeaderOpt = None,
    force: ForceOpt = False,
) -> None:
    """Rescale distributions to a target entropy: p~ = p^γ / Σ p^γ with γ solved per row.

    Order is preserved; γ < 1 flattens, γ > 1 sharpens. Output: the input rows with the normalised distribution
    (the list in --output-field, or the --columns overwritten), "gamma" (null in JSON when γ = ∞, i.e. the limit:
    uniform over the tied maxima) and "entropy".

    Example: nlptool entropy-normalize preds.jsonl --target-ratio 0.5 -o flat.jsonl

    Reference: Su Jianlin, "概率分布的熵归一化 (Entropy Normalization)", https://kexue.fm/archives/8829
    """
    from nlptool.commands._distributions import choose_layout, cli_hint, read_row, write_row
    from nlptool.core.entropy import entropy, normalize_rows
    from nlptool.core.errors import InputError, RowError
    from nlptool.core.io import check_output_path, chunked, open_writer, read_records

    if (target is None) == (target_ratio is None):
        raise typer.BadParameter("give exactly one of --target (nats) or --target-ratio", param_hint="--target")
    check_output_path(output, force)
    with read_records(input, fmt_value(format), header=header) as reader:
        layout = choose_layout(reader.fieldnames, field, columns, path=input)
        fieldnames = None
        if reader.fieldnames is not None:
            extra = [] if layout.columns is not None or output_field in reader.fieldnames else [output_field]
            fieldnames = [*reader.fieldnames, *extra, "gamma", "entropy"]
        total = 0
        with (
            open_writer(output, fmt_value(output_format), force=force, fieldnames=fieldnames) as writer,
            progress("entropy-normalize") as advance,
        ):
            for chunk in chunked(reader, batch_size):
                rows = [read_row(r, layout, input) for r in chunk]
                try:
                    out_probs, out_gamma = normalize_rows(
                        rows,
                        target,
                        target_ratio=target_ratio,
                        logits=logits,
                        tol=tol,
                        clip=clip,
                        renormalize=renormalize,
                    )
                except RowError as exc:
                    line = chunk[exc.row].line
                    raise InputError(cli_hint(exc.message), path=input, line=line, field=layout.label) from None
                for record, p, g in zip(chunk, out_probs, out_gamma, strict=True):
                    row = write_row(record, layout, p, output_field)
                    row["gamma"] = float(g)
                    row["entropy"] = float(entropy(p))
                    writer.write(row)
                writer.fh.flush()
                total += len(chunk)
                advance(len(chunk))
    if total == 0:
        warn_empty(input)
    if output != "-":
        info(f"entropy-normalize: {total} rows written to {output}")

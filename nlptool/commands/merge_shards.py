"""``nlptool merge-shards``: join the part files of a ``--shard i/n`` prediction into one output, in input order."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from nlptool.commands._common import ForceOpt, info


class PartFormat(str, Enum):
    """Formats of part files; ``auto``: by the extension of OUTPUT (.npy, .npz, .csv, .tsv; else JSONL)."""

    auto = "auto"
    jsonl = "jsonl"
    csv = "csv"
    tsv = "tsv"
    npy = "npy"
    npz = "npz"


def merge_shards(
    output: Annotated[
        str,
        typer.Argument(help="The output the shards were run with (-o OUTPUT): merges OUTPUT.part-0-of-n ... into it."),
    ],
    to: Annotated[
        str | None,
        typer.Option("--to", help="Write the merged rows here instead of OUTPUT ('-': stdout; JSONL/CSV/TSV only)."),
    ] = None,
    keep_parts: Annotated[bool, typer.Option("--keep-parts", help="Keep the part files after merging.")] = False,
    part_format: Annotated[
        PartFormat,
        typer.Option(
            "--format",
            help="Format of the parts; auto: by the extension of OUTPUT (.npy, .npz, .csv, .tsv), else JSONL "
            "(what encode writes to any other name).",
        ),
    ] = PartFormat.auto,
    force: ForceOpt = False,
) -> None:
    """Merge OUTPUT.part-i-of-n files (from --shard i/n runs of a predictor) into OUTPUT, rows in input order.

    The shards split the input round-robin (row k went to shard k mod n), so the merge takes one row from each part in
    turn. JSONL, CSV/TSV (one header), .npy (rows) and .npz (every array along its first axis) are merged; the parts
    are checked (all of 0..n-1 present, row counts of one split, same columns or shapes) and removed afterwards.

    Example: nlptool encode big.txt --shard 0/2 -o emb.npy & nlptool encode big.txt --shard 1/2 -o emb.npy; wait;
    nlptool merge-shards emb.npy
    """
    from nlptool.core.shard import merge_shards as merge

    fmt = None if part_format is PartFormat.auto else part_format.value
    rows = merge(output, force=force, to=to, keep_parts=keep_parts, fmt=fmt)
    if to != "-":
        info(f"merge-shards: {rows} rows written to {to or output}")

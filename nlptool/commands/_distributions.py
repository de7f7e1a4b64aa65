"""Reading and writing rows that hold a probability distribution (or logits): shared by entropy-normalize and
calibrate-can.

A distribution sits either in one JSONL field holding a list (``probs`` by default; a CSV cell holding a JSON list
also works) or in several numeric columns chosen with ``--columns`` (a comma-separated list, or a glob such as
``'prob_*'`` matched against the header in order).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nlptool.core.errors import InputError, NlptoolError
from nlptool.core.io import Record, get_field, to_float, to_float_list


@dataclass
class DistributionLayout:
    """Where the numbers live in each row: a list ``field`` or the scalar ``columns``."""

    field: str | None
    columns: list[str] | None

    @property
    def label(self) -> str:
        """How errors name the place: the list field, or the columns."""
        return self.field if self.field is not None else ",".join(self.columns or [])

    @property
    def names(self) -> list[str] | None:
        """Class names implied by the layout (the column names), if any."""
        return self.columns


def choose_layout(
    fieldnames: Sequence[str] | None, field: str, columns: str | None, *, path: str
) -> DistributionLayout:
    """Decide the layout from ``--field``/``--columns`` and the header (``fieldnames`` is None for JSONL)."""
    if columns:
        specs = [c.strip() for c in columns.split(",") if c.strip()]
        if fieldnames is None:  # JSONL: columns are plain field names, globs cannot be resolved without a header
            if any(any(ch in s for ch in "*?[") for s in specs):
                raise NlptoolError(f"--columns globs need a CSV/TSV header; list the JSONL fields of {path} by name")
            return DistributionLayout(None, specs)
        chosen: list[str] = []
        for spec in specs:
            matches = [f for f in fieldnames if fnmatch.fnmatchcase(f, spec)]
            if not matches:
                raise InputError(
                    f"no column matches --columns '{spec}' (columns: {', '.join(fieldnames)})", path=path, line=1
                )
            chosen += [m for m in matches if m not in chosen]
        if len(chosen) < 2:
            raise NlptoolError(f"--columns selects {len(chosen)} column(s) of {path}; a distribution needs at least 2")
        return DistributionLayout(None, chosen)
    if fieldnames is not None and field not in fieldnames:
        raise InputError(
            f"no column '{field}' holding a list; pass --columns with the probability columns "
            f"(e.g. --columns '{','.join(fieldnames[:3])}' or a glob such as 'p_*'); columns: {', '.join(fieldnames)}",
            path=path,
            line=1,
        )
    return DistributionLayout(field, None)


def read_row(record: Record, layout: DistributionLayout, path: str) -> list[float]:
    """The numbers of one row, with file:line:field errors."""
    if layout.field is not None:
        return to_float_list(get_field(record, layout.field, path), path=path, line=record.line, field=layout.field)
    assert layout.columns is not None
    return [to_float(get_field(record, c, path), path=path, line=record.line, field=c) for c in layout.columns]


def write_row(record: Record, layout: DistributionLayout, values: Sequence[float], out_field: str) -> dict[str, Any]:
    """A copy of the record's fields with the distribution replaced (columns) or stored in ``out_field`` (list)."""
    row = dict(record.data)
    if layout.columns is not None:
        for name, v in zip(layout.columns, values, strict=True):
            row[name] = float(v)
    else:
        row[out_field] = [float(v) for v in values]
    return row


_CLI_FLAGS = {"renormalize=True": "--renormalize", "clip=True": "--clip", "logits=True": "--logits"}


def cli_hint(message: str) -> str:
    """Core messages name keyword arguments (``clip=True``); on the command line they are flags (``--clip``)."""
    for keyword, flag in _CLI_FLAGS.items():
        message = message.replace(keyword, flag)
    return message

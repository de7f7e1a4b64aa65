"""Sentence-pair files for CoSENT training and STS evaluation: two texts and a label per row.

Layouts read without extra flags:

- CSV/TSV with a header naming the columns (``sentence1,sentence2,score``; ``text1``/``text_a``/``s1`` ...; labels
  ``score``/``label``/``similarity``/``gold_label``);
- headerless CSV/TSV such as the STS-B files (``sentence1,sentence2,score``) and the SentEval-CN layout
  (``text1<TAB>text2<TAB>label``): the first three columns, in that order;
- JSONL with the same field names.

Column options override the guesses. Label types:

- ``binary``: 0/1 (paraphrase / not);
- ``score``: graded similarity such as STS 0–5;
- ``nli``: ``entailment`` > ``neutral`` > ``contradiction`` (also ``e``/``n``/``c``), ranked as 2 > 1 > 0.

The type is detected when not given: any NLI name among the labels → ``nli`` (then every label must be one); all
labels 0 or 1 → ``binary``; other numbers → ``score``.
Every bad row (missing or empty text, unparsable label, an NLI label outside the set) is an error naming the file,
line and field; nothing is skipped silently.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nlptool.core.errors import InputError, NlptoolError
from nlptool.core.io import display_name, read_records

LABEL_TYPES = ("binary", "score", "nli")
NLI_SCORES = {"contradiction": 0.0, "neutral": 1.0, "entailment": 2.0, "c": 0.0, "n": 1.0, "e": 2.0}
NLI_NAMES = ("contradiction", "neutral", "entailment")

TEXT1_NAMES = ("sentence1", "text1", "text_a", "sentence_a", "s1", "query", "premise", "0")
TEXT2_NAMES = ("sentence2", "text2", "text_b", "sentence_b", "s2", "document", "hypothesis", "1")
LABEL_NAMES = ("score", "label", "similarity", "gold_label", "relatedness_score", "2")


@dataclass
class PairData:
    """Pairs read from one file: texts, float labels (NLI as 0/1/2), and where each row came from."""

    path: str
    text1: list[str]
    text2: list[str]
    labels: np.ndarray
    lines: list[int]
    label_type: str
    columns: tuple[str, str, str]
    label_range: tuple[float, float] = field(default=(0.0, 1.0))

    def __len__(self) -> int:
        return len(self.text1)

    def class_ids(self) -> np.ndarray:
        """Integer classes for classification losses (binary 0/1, NLI 0/1/2)."""
        if self.label_type == "score":
            raise NlptoolError(
                f"{display_name(self.path)} has graded scores, not classes; the softmax loss needs binary or NLI "
                "labels (use --loss cosent or cosine-mse)"
            )
        return self.labels.astype(np.int64)

    def unit_targets(self) -> np.ndarray:
        """Labels rescaled to [0, 1] by the label range (STS 0–5 → score/5), for the cosine-MSE baseline."""
        lo, hi = self.label_range
        return (self.labels - lo) / (hi - lo) if hi > lo else np.zeros_like(self.labels)


def _pick(fieldnames: Sequence[str], requested: str | None, candidates: Sequence[str], what: str, path: str) -> str:
    if requested is not None:
        if requested not in fieldnames:
            raise InputError(
                f"no column '{requested}' for the {what} (columns: {', '.join(fieldnames)})", path=path, line=1
            )
        return requested
    lowered = {f.lower(): f for f in fieldnames}
    for c in candidates:
        if c in lowered:
            return lowered[c]
    raise InputError(
        f"cannot tell which column holds the {what} (columns: {', '.join(fieldnames)}); "
        f"name it with --{what.replace(' ', '-')}-col",
        path=path,
        line=1,
    )


def read_pairs(
    path: str,
    *,
    text1_col: str | None = None,
    text2_col: str | None = None,
    label_col: str | None = None,
    label_type: str | None = None,
    header: bool | None = None,
    fmt: str | None = None,
    label_range: tuple[float, float] | None = None,
) -> PairData:
    """Read a pairs file (see the module docstring). ``label_range`` fixes the scale for :meth:`unit_targets`
    (default: 0–5 for STS-style scores up to 5, else the observed min–max)."""
    if label_type is not None and label_type not in LABEL_TYPES:
        raise NlptoolError(f"unknown label type '{label_type}'; choose one of {', '.join(LABEL_TYPES)}")
    text1: list[str] = []
    text2: list[str] = []
    raw: list[object] = []
    lines: list[int] = []
    with read_records(path, fmt, header=header) as reader:
        names = reader.fieldnames
        it = iter(reader)
        first = next(it, None)
        if first is None:
            raise NlptoolError(f"no rows in {display_name(path)}; give a pairs file with at least one row")
        fields = names if names is not None else list(first.data)
        c1 = _pick(fields, text1_col, TEXT1_NAMES, "text1", path)
        c2 = _pick(fields, text2_col, TEXT2_NAMES, "text2", path)
        cl = _pick(fields, label_col, LABEL_NAMES, "label", path)
        if len({c1, c2, cl}) < 3:
            raise NlptoolError(f"{display_name(path)}: text1, text2 and label columns must differ ({c1}, {c2}, {cl})")
        for record in itertools.chain([first], it):
            data = record.data
            for col, bucket in ((c1, text1), (c2, text2)):
                value = data.get(col)
                if value is None:
                    raise InputError("missing text", path=path, line=record.line, field=col)
                if not isinstance(value, str):
                    raise InputError(
                        f"expected text, found {type(value).__name__}", path=path, line=record.line, field=col
                    )
                if not value.strip():
                    raise InputError("empty text; remove the row or fill it in", path=path, line=record.line, field=col)
                bucket.append(value)
            if cl not in data or data[cl] is None or (isinstance(data[cl], str) and not data[cl].strip()):
                raise InputError("missing label", path=path, line=record.line, field=cl)
            raw.append(data[cl])
            lines.append(record.line)
    labels, kind = _parse_labels(raw, lines, label_type, path, cl)
    if label_range is None:
        lo, hi = float(labels.min()), float(labels.max())
        if kind == "score" and lo >= 0 and hi <= 5:
            lo, hi = 0.0, 5.0
        elif kind == "binary":
            lo, hi = 0.0, 1.0
        elif kind == "nli":
            lo, hi = 0.0, 2.0
        label_range = (lo, hi)
    return PairData(path, text1, text2, labels, lines, kind, (c1, c2, cl), label_range)


def _parse_labels(
    raw: list[object], lines: list[int], label_type: str | None, path: str, col: str
) -> tuple[np.ndarray, str]:
    as_text = [str(v).strip().lower() for v in raw]
    # One NLI name among the labels makes it an NLI file, so that a stray label is reported on its own line
    # (reading the file as numbers would blame the first valid NLI label instead).
    looks_nli = any(v in NLI_SCORES for v in as_text)
    if label_type == "nli" or (label_type is None and looks_nli):
        out = []
        for v, original, line in zip(as_text, raw, lines, strict=True):
            if v not in NLI_SCORES:
                hint = "" if label_type == "nli" else " (other labels in the file are NLI names, so it is read as NLI)"
                raise InputError(
                    f"NLI label '{str(original).strip()}' is not one of {', '.join(NLI_NAMES)} or e/n/c{hint}",
                    path=path,
                    line=line,
                    field=col,
                )
            out.append(NLI_SCORES[v])
        return np.asarray(out, dtype=np.float64), "nli"
    values = []
    for v, line in zip(raw, lines, strict=True):
        if isinstance(v, bool):
            values.append(float(v))
            continue
        try:
            x = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InputError(
                f"label '{v}' is not a number (or an NLI label: {', '.join(NLI_NAMES)})",
                path=path,
                line=line,
                field=col,
            ) from None
        if not np.isfinite(x):
            raise InputError(f"label {v} is not finite", path=path, line=line, field=col)
        values.append(x)
    arr = np.asarray(values, dtype=np.float64)
    is_binary = bool(np.isin(arr, (0.0, 1.0)).all())
    if label_type == "binary" and not is_binary:
        bad = int(np.flatnonzero(~np.isin(arr, (0.0, 1.0)))[0])
        raise InputError(f"binary labels must be 0 or 1, found {raw[bad]}", path=path, line=lines[bad], field=col)
    kind = label_type or ("binary" if is_binary else "score")
    return arr, kind

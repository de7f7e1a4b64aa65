"""Subjects, answers and the KgCLUE metric of kg-qa: split/join a subject's meaning, parse/format ``'S ||| P ||| O'``,
KgCLUE's normalisation, character LCS and F1, and :func:`kgclue_scores` (KgCLUE's ``evaluate_f1_em.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nlptool.core.errors import InputError, NlptoolError

OPEN, CLOSE = "（", "）"
ANSWER_SEP = " ||| "


def split_subject(subject: str) -> tuple[str, str]:
    """``'A（B（C））'`` → ``('A', 'B（C）')``: the base name and the meaning in the final balanced parentheses.

    A subject without a trailing ``）``, with unbalanced parentheses, or that is all parenthesis (nothing before the
    ``（``) is returned whole with an empty meaning. Trailing whitespace is ignored.
    """
    s = subject.rstrip()
    if not s.endswith(CLOSE):
        return subject, ""
    depth = 0
    for i in range(len(s) - 1, -1, -1):
        ch = s[i]
        if ch == CLOSE:
            depth += 1
        elif ch == OPEN:
            depth -= 1
            if depth == 0:
                base = s[:i]
                if not base.strip():
                    return subject, ""
                return base, s[i + 1 : -1]
    return subject, ""


def join_subject(base: str, meaning: str) -> str:
    """Inverse of :func:`split_subject`."""
    return f"{base}{OPEN}{meaning}{CLOSE}" if meaning else base


def parse_answer(text: Any, *, path: str | None = None, line: int | None = None) -> tuple[str, str, str]:
    """``'S ||| P ||| O'`` → ``(S, P, O)``; anything else is an :class:`InputError` naming file and line."""
    if not isinstance(text, str):
        raise InputError(
            f"expected a string 'S ||| P ||| O', found {type(text).__name__}", path=path, line=line, field="answer"
        )
    parts = text.split(ANSWER_SEP)
    if len(parts) != 3:
        raise InputError(
            f"expected 'subject ||| predicate ||| object' (3 parts separated by ' ||| '), found {len(parts)} part(s) "
            f"in '{text[:60]}'",
            path=path,
            line=line,
            field="answer",
        )
    return parts[0], parts[1], parts[2]


def format_answer(subject: str, predicate: str, obj: str) -> str:
    return ANSWER_SEP.join((subject, predicate, obj))


def normalize(text: str) -> str:
    """KgCLUE's normalisation: lower case, whitespace runs collapsed to one space, ends stripped."""
    return " ".join(text.lower().split())


def lcs_length(a: str, b: str) -> int:
    """Length of the longest common subsequence of two strings (the ``pylcs.lcs`` that KgCLUE's script calls)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    prev = [0] * (len(b) + 1)
    for ca in a:
        cur = [0]
        for j, cb in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if ca == cb else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def f1_sim(a: str, b: str) -> float:
    """KgCLUE's character F1: ``2·LCS / (|a| + |b|)``, and 0 when both are empty."""
    if not a and not b:
        return 0.0
    return 2.0 * lcs_length(a, b) / (len(a) + len(b))


def kgclue_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """KgCLUE's ``evaluate_f1_em.py`` on answers ``'S ||| P ||| O'`` paired by position.

    Returns fractions (0–1, unrounded; the script prints them ×100): ``EM_S/P/O/All``, ``F1_S/P/O/All``
    (``All``: F1 of the concatenation ``S+P+O``; EM of the whole triple) and ``Score = 0.5·EM_O + 0.5·F1_O``
    (the script's ``EMF1``).
    """
    if len(predictions) != len(references):
        raise NlptoolError(f"{len(predictions)} predictions for {len(references)} references; they pair by position")
    if not references:
        raise NlptoolError("no references to score")
    keys = [f"{m}_{f}" for m in ("EM", "F1") for f in ("All", "S", "P", "O")]
    totals = dict.fromkeys(keys, 0.0)
    for pred, ref in zip(predictions, references, strict=True):
        ps, pp, po = (normalize(x) for x in parse_answer(pred))
        rs, rp, ro = (normalize(x) for x in parse_answer(ref))
        totals["EM_S"] += ps == rs
        totals["EM_P"] += pp == rp
        totals["EM_O"] += po == ro
        totals["EM_All"] += (ps, pp, po) == (rs, rp, ro)
        totals["F1_S"] += f1_sim(ps, rs)
        totals["F1_P"] += f1_sim(pp, rp)
        totals["F1_O"] += f1_sim(po, ro)
        totals["F1_All"] += f1_sim(ps + pp + po, rs + rp + ro)
    out = {k: v / len(references) for k, v in totals.items()}
    out["Score"] = 0.5 * out["EM_O"] + 0.5 * out["F1_O"]
    return out

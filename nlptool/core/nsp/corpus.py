"""Unlabelled documents for NSP training: sentence splitting, corpus reading, held-out documents and BERT's
NSP pairs. See :mod:`nlptool.core.nsp`."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nlptool.core.errors import InputError, NlptoolError
from nlptool.core.nsp.scoring import IS_NEXT, NOT_NEXT

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc e.g i.e u.s u.k inc co corp ltd no gen col lt sgt rep sen gov jan feb mar apr "
    "jun jul aug sep sept oct nov dec mt ft fig al approx dept est".split()
)
_CJK_END = "。！？；…"
_BOUNDARY = re.compile(r"([。！？；…]+|[.!?]+)([”’」』）)\]\"']*)")
_CJK_CHAR = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


_NON_SPACE = re.compile(r"\S")  # re's \s is exactly str.isspace()
_OPENERS = "\"'“‘([「『"
_TOKEN_QUOTES = "(\"'“‘"  # stripped from the front of the word before a period
_LONGEST_ABBREVIATION = max(len(a) for a in _ABBREVIATIONS)


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences at English and Chinese sentence punctuation.

    Rules: a line break always ends a sentence. Chinese ``。！？；…`` (and any closing quotes or brackets after them)
    end a sentence wherever they stand. ASCII ``. ! ?`` end one when followed by white space and then an upper-case
    letter, a digit, an opening quote or bracket, or a CJK character (or directly by a CJK character), unless the
    period closes a known abbreviation (Mr., U.S., Inc., ...) or a single-letter initial (J. Smith).

    Linear in the length of the text: every candidate boundary looks only at the white space after it and at most a
    few characters before it (no copies of the rest of the line, no search over everything before it), so a
    one-line document of a megabyte splits in about a second.
    """
    sentences: list[str] = []
    for line in str(text).splitlines():
        start = 0
        content_end = len(line.rstrip())  # past the last non-space character
        for m in _BOUNDARY.finditer(line):
            end = m.end()
            if end >= content_end:  # only white space follows
                continue
            punct = m.group(1)
            if not any(c in _CJK_END for c in punct):
                nxt_at = _NON_SPACE.search(line, end).start()  # type: ignore[union-attr]  # exists: end < content_end
                spaced = nxt_at > end
                nxt = line[nxt_at]
                cjk_next = bool(_CJK_CHAR.match(nxt))
                if not (cjk_next or (spaced and (nxt.isupper() or nxt.isdigit() or nxt in _OPENERS))):
                    continue
                if punct == ".":
                    token = _word_before(line, m.start(1))
                    if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
                        continue
            piece = line[start:end].strip()
            if piece:
                sentences.append(piece)
            start = end
        piece = line[start:].strip()
        if piece:
            sentences.append(piece)
    return sentences


def _word_before(line: str, stop: int) -> str:
    """The white-space-delimited word ending at ``line[stop]``, lower-cased, without leading quotes or brackets, when
    it could be an abbreviation or an initial; ``""`` otherwise (no word, or too long to be one).

    Looks at a bounded number of characters (plus a run of leading quotes) instead of the whole word, so that a long
    run of text without spaces costs no more than its length over all its boundaries.
    """
    window = _LONGEST_ABBREVIATION + 1
    lo = max(0, stop - window)
    k = stop
    while k > lo and not line[k - 1].isspace():
        k -= 1
    if k > lo or k == 0 or line[k - 1].isspace():  # the word starts within the window
        return line[k:stop].lower().lstrip(_TOKEN_QUOTES)
    # The word is longer than the window: it can only be an abbreviation if everything before its last
    # ``_LONGEST_ABBREVIATION`` characters is leading quotes/brackets, which lstrip would remove.
    j = stop - _LONGEST_ABBREVIATION  # the first character that may belong to the abbreviation
    i = j - 1
    while i >= 0 and line[i] in _TOKEN_QUOTES:
        i -= 1
    if i >= 0 and not line[i].isspace():
        return ""  # a non-quote character further left: the stripped word is longer than any abbreviation
    return line[j:stop].lower().lstrip(_TOKEN_QUOTES)


def read_corpus(
    path: str | Path,
    *,
    text_field: str = "text",
    fmt: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """Read unlabelled documents as lists of sentences.

    Formats (by ``fmt`` or the extension; ``.jsonl``/``.json``/``.ndjson`` are JSONL, anything else plain text):

    - plain text: documents separated by one or more blank lines; every line is split into sentences
      (:func:`split_sentences`), so one paragraph or sentence per line works best;
    - JSONL: one document per line in the field ``text_field`` (a string; its line breaks also end sentences).

    ``-`` reads stdin (JSONL when its line 1 starts with ``{``). Empty documents are skipped. Errors name the file
    (``<stdin>``) and line; text must be UTF-8. ``on_progress(n)`` is called as the file is read, with the UTF-8
    bytes of each line (plain text) or of each document's text (JSONL), for a progress bar.
    """
    from nlptool.core.io import replayable

    name = str(path)
    if name != "-" and not Path(name).is_file():
        raise NlptoolError(f"corpus file {path} does not exist; check the path")
    with replayable(name) as source:
        return _read_corpus(source, name, text_field, fmt, on_progress)


def _read_corpus(
    source: str, name: str, text_field: str, fmt: str | None, on_progress: Callable[[int], None] | None
) -> list[list[str]]:
    from nlptool.core.io import format_from_path, open_lines, read_records

    kind = fmt or format_from_path(name)
    if kind is None and name == "-":  # stdin: JSONL when line 1 starts with '{'
        with open_lines(source, name=name) as lines:
            first = next(iter(lines), "")
        kind = "jsonl" if first.lstrip().startswith("{") else "text"
    kind = kind or "text"
    docs: list[list[str]] = []
    if kind == "jsonl":
        with read_records(source, "jsonl", name=name) as reader:
            for rec in reader:
                if text_field not in rec.data:
                    present = ", ".join(list(rec.data)[:8]) or "none"
                    raise InputError(
                        f"missing (fields present: {present}); choose the field with --text-col",
                        path=name,
                        line=rec.line,
                        field=text_field,
                    )
                value = rec.data[text_field]
                if not isinstance(value, str):
                    raise InputError(
                        f"expected a string, found {type(value).__name__}",
                        path=name,
                        line=rec.line,
                        field=text_field,
                    )
                sents = split_sentences(value)
                if sents:
                    docs.append(sents)
                if on_progress is not None:
                    on_progress(len(value.encode("utf-8")))
        return docs
    if kind not in ("text", "txt"):
        raise NlptoolError(f"corpus {name}: unsupported format '{kind}'; give plain text or JSONL")
    with open_lines(source, name=name) as lines:
        current: list[str] = []
        for line in lines:
            if on_progress is not None:
                on_progress(len(line.encode("utf-8")))
            if not line.strip():
                if current:
                    docs.append(current)
                    current = []
                continue
            current += split_sentences(line)
        if current:
            docs.append(current)
    return docs


@dataclass(frozen=True)
class NSPPair:
    """One NSP training example: segments A and B, ``label`` :data:`IS_NEXT` (B follows A) or :data:`NOT_NEXT`."""

    a: str
    b: str
    label: int


def split_documents(
    docs: Sequence[list[str]], eval_fraction: float, *, seed: int = 0
) -> tuple[list[list[str]], list[list[str]]]:
    """Hold out whole documents (a seeded shuffle; ``round(fraction * n)``, at least 2 when the fraction is > 0) so
    that no held-out pair shares a document with a training pair."""
    if not 0.0 <= eval_fraction < 1.0:
        raise NlptoolError(f"the held-out fraction must be in [0, 1), got {eval_fraction}")
    idx = list(range(len(docs)))
    random.Random(seed).shuffle(idx)
    n_eval = 0 if eval_fraction == 0 else max(2, round(eval_fraction * len(docs)))
    if n_eval and len(docs) - n_eval < 2:
        raise NlptoolError(
            f"the corpus has {len(docs)} documents; holding out {n_eval} leaves fewer than 2 for training "
            "(documents are separated by blank lines, or one per JSONL line); add documents or lower --eval-fraction"
        )
    held = sorted(idx[:n_eval])
    kept = sorted(idx[n_eval:])
    return [docs[i] for i in kept], [docs[i] for i in held]


def build_nsp_pairs(
    docs: Sequence[list[str]], *, seed: int = 0, not_next_prob: float = 0.5, max_pairs: int | None = None
) -> list[NSPPair]:
    """BERT's NSP examples from documents: for every sentence that has a successor in its document, B is that
    successor (IsNext) or, with probability ``not_next_prob``, a random sentence of another document (NotNext).

    Deterministic for a seed. ``max_pairs`` keeps a seeded random subset (in corpus order).
    """
    usable = [i for i, d in enumerate(docs) if d]
    if sum(1 for d in docs if len(d) >= 2) == 0:
        raise NlptoolError(
            "no document has two sentences, so there are no consecutive pairs; separate documents with blank lines "
            "(not every sentence) and check the sentence splitting"
        )
    if len(usable) < 2:
        raise NlptoolError("NotNext pairs need sentences from at least 2 documents; the corpus has 1")
    rng = random.Random(seed)
    pairs: list[NSPPair] = []
    for i, doc in enumerate(docs):
        for k in range(len(doc) - 1):
            if rng.random() < not_next_prob:
                j = i
                while j == i:
                    j = usable[rng.randrange(len(usable))]
                other = docs[j]
                pairs.append(NSPPair(doc[k], other[rng.randrange(len(other))], NOT_NEXT))
            else:
                pairs.append(NSPPair(doc[k], doc[k + 1], IS_NEXT))
    if max_pairs is not None and len(pairs) > max_pairs:
        keep = sorted(rng.sample(range(len(pairs)), max_pairs))
        pairs = [pairs[i] for i in keep]
    return pairs

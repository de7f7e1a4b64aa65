"""Convert NER corpora to nlptool's canonical JSONL (``{"text", "entities": [{"start", "end", "label"}]}``).

Formats (``FORMATS``):

- ``conll``: one token per line, the tag in the last whitespace-separated column (CoNLL-2003: ``word POS chunk
  tag``, or ``word tag``), a blank line between sentences, ``-DOCSTART-`` lines skipped. Tags are ``O``, ``B-X``
  and ``I-X``, read so that IOB1, IOB2 (BIO) and BIOES-free mixtures all work: ``B-X`` always starts an entity and
  ``I-X`` starts one unless the previous tag was ``B-X`` or ``I-X`` (IOB1's rule; IOB2 never needs it). Tokens are
  joined by one space, so ``text`` is the sentence and offsets fall on token boundaries.
- ``bio-chars``: one character per line with its tag (People's Daily); a blank line between sentences; characters
  are joined without spaces.
- ``cluener``: JSON lines ``{"text", "label": {type: {surface: [[start, end_inclusive], ...]}}}`` (CLUENER 2020);
  the surface must match the offsets. A missing ``label`` (test files) gives no entities.
- ``token-spans``: JSON lines ``{"tokens": [...], "entity_mentions": [{"start", "end", "entity_type"}]}`` with
  token offsets, ``end`` exclusive (the GENIA nested-NER jsonlines); nested mentions are kept. ``doc_id`` and
  ``sent_id`` are carried over.

Every converter validates what it produces (:func:`nlptool.core.ner.validate_entities`) and raises
:class:`~nlptool.core.errors.InputError` naming the file and line of bad input.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from nlptool.core.errors import InputError, NlptoolError
from nlptool.core.ner import Entity, validate_entities

__all__ = ["FORMATS", "ConvertStats", "convert", "bio_to_spans"]

FORMATS = ("conll", "bio-chars", "cluener", "token-spans")


@dataclass
class ConvertStats:
    """Counts of a conversion: texts written, entities per label, ``-DOCSTART-`` lines skipped."""

    texts: int = 0
    labels: Counter = field(default_factory=Counter)
    docstarts: int = 0

    @property
    def entities(self) -> int:
        return sum(self.labels.values())


def bio_to_spans(tags: list[str], *, path: str | None = None, lines: list[int] | None = None) -> list[tuple]:
    """``(label, first, last_inclusive)`` chunks of a BIO/IOB1/IOB2 tag sequence.

    ``B-X`` starts a chunk; ``I-X`` continues a chunk of type X, or starts one after ``O`` or another type
    (IOB1, and lenient IOB2 as seqeval reads it by default). Any other tag is an :class:`InputError`.
    """
    spans: list[tuple] = []
    current: list | None = None
    for k, tag in enumerate(tags):
        if tag == "O":
            current = None
            continue
        prefix, sep, label = tag.partition("-")
        if not sep or prefix not in ("B", "I") or not label:
            raise InputError(
                f"tag '{tag}' is not O, B-TYPE or I-TYPE (BIO/IOB1/IOB2)",
                path=path,
                line=lines[k] if lines else None,
            )
        if prefix == "I" and current is not None and current[0] == label:
            current[2] = k
            continue
        current = [label, k, k]
        spans.append(current)
    return [tuple(s) for s in spans]


def _columns(path: str) -> Iterator[tuple[int, list[str] | None]]:
    """Yield ``(line, fields)`` per line; ``None`` for a blank line (sentence break). Strict UTF-8 (``core.io``)."""
    from nlptool.core.io import open_lines

    with open_lines(path) as lines:
        for raw in lines:
            line = raw.rstrip("\r\n")
            yield lines.line_no, (line.split() if line.strip() else None)


def _conll(path: str, stats: ConvertStats, *, chars: bool) -> Iterator[dict]:
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []

    def flush() -> dict | None:
        if not tokens:
            return None
        sep = "" if chars else " "
        starts, pos = [], 0
        for t in tokens:
            starts.append(pos)
            pos += len(t) + len(sep)
        text = sep.join(tokens)
        ents = [
            Entity(starts[i], starts[j] + len(tokens[j]), label)
            for label, i, j in bio_to_spans(tags, path=path, lines=lines)
        ]
        validate_entities(text, ents, path=path, line=lines[0])
        tokens.clear()
        tags.clear()
        lines.clear()
        return {"text": text, "entities": [{"start": e.start, "end": e.end, "label": e.label} for e in ents]}

    for n, fields in _columns(path):
        if fields is None or fields[0] == "-DOCSTART-":
            if fields is not None:
                stats.docstarts += 1
            doc = flush()
            if doc is not None:
                yield doc
            continue
        if len(fields) < 2:
            what = "a character and its tag" if chars else "a token and its tag (the tag in the last column)"
            raise InputError(f"expected {what}, found '{' '.join(fields)}'", path=path, line=n)
        if chars and len(fields) != 2:
            raise InputError(
                f"expected one character and a tag, found {len(fields)} fields '{' '.join(fields)}'",
                path=path,
                line=n,
            )
        tokens.append(fields[0])
        tags.append(fields[-1])
        lines.append(n)
    doc = flush()
    if doc is not None:
        yield doc


def _json_lines(path: str) -> Iterator[tuple[int, dict]]:
    from nlptool.core.io import read_records

    with read_records(path, "jsonl") as reader:
        for rec in reader:
            yield rec.line, rec.data


def _cluener(path: str) -> Iterator[dict]:
    for n, obj in _json_lines(path):
        text = obj.get("text")
        if not isinstance(text, str):
            raise InputError("missing or non-string 'text'", path=path, line=n, field="text")
        label = obj.get("label") or {}
        if not isinstance(label, dict):
            raise InputError("'label' must be {type: {surface: [[start, end], ...]}}", path=path, line=n, field="label")
        ents = []
        for etype, surfaces in label.items():
            if not isinstance(surfaces, dict):
                raise InputError(f"label '{etype}' must map surfaces to offset lists", path=path, line=n, field="label")
            for surface, pairs in surfaces.items():
                if not isinstance(pairs, list):
                    raise InputError(
                        f"offsets of '{surface}' must be a list of [start, end]", path=path, line=n, field="label"
                    )
                for pair in pairs:
                    ok = (
                        isinstance(pair, list)
                        and len(pair) == 2
                        and all(isinstance(x, int) and not isinstance(x, bool) for x in pair)
                    )
                    if not ok:
                        raise InputError(
                            f"offsets of '{surface}' must be [start, end_inclusive], got {pair!r}",
                            path=path,
                            line=n,
                            field="label",
                        )
                    start, end = pair[0], pair[1] + 1
                    if not (0 <= start < end <= len(text)) or text[start:end] != surface:
                        raise InputError(
                            f"'{etype}' '{surface}' at [{pair[0]}, {pair[1]}] does not match the text "
                            f"('{text[max(0, start) : max(0, end)]}'); CLUENER offsets are [start, end_inclusive]",
                            path=path,
                            line=n,
                            field="label",
                        )
                    ents.append(Entity(start, end, etype))
        ents = validate_entities(text, ents, path=path, line=n)
        doc: dict[str, Any] = {"text": text}
        if "id" in obj:
            doc["id"] = obj["id"]
        doc["entities"] = [{"start": e.start, "end": e.end, "label": e.label} for e in ents]
        yield doc


def _token_spans(path: str) -> Iterator[dict]:
    for n, obj in _json_lines(path):
        tokens = obj.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise InputError("'tokens' must be a list of strings", path=path, line=n, field="tokens")
        mentions = obj.get("entity_mentions", [])
        if not isinstance(mentions, list):
            raise InputError("'entity_mentions' must be a list", path=path, line=n, field="entity_mentions")
        starts, pos = [], 0
        for t in tokens:
            starts.append(pos)
            pos += len(t) + 1
        text = " ".join(tokens)
        ents = []
        for k, m in enumerate(mentions):
            if not isinstance(m, dict):
                raise InputError(f"mention {k} must be an object", path=path, line=n, field="entity_mentions")
            s, e, etype = m.get("start"), m.get("end"), m.get("entity_type", m.get("type"))
            ok = isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= len(tokens) and isinstance(etype, str)
            if not ok:
                raise InputError(
                    f"mention {k} needs token offsets 0 <= start < end <= {len(tokens)} (end exclusive) and an "
                    f"'entity_type', got {json.dumps(m)[:100]}",
                    path=path,
                    line=n,
                    field="entity_mentions",
                )
            ents.append(Entity(starts[s], starts[e - 1] + len(tokens[e - 1]), etype))
        ents = validate_entities(text, ents, path=path, line=n)
        doc: dict[str, Any] = {"text": text}
        for key in ("doc_id", "sent_id"):
            if key in obj:
                doc[key] = obj[key]
        doc["entities"] = [{"start": e.start, "end": e.end, "label": e.label} for e in ents]
        yield doc


def convert(path: str, fmt: str) -> tuple[Iterator[dict], ConvertStats]:
    """Canonical records of ``path`` read as ``fmt``, lazily, and the stats they fill in as they are consumed."""
    if fmt not in FORMATS:
        raise NlptoolError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    stats = ConvertStats()
    if fmt == "conll":
        source = _conll(path, stats, chars=False)
    elif fmt == "bio-chars":
        source = _conll(path, stats, chars=True)
    elif fmt == "cluener":
        source = _cluener(path)
    else:
        source = _token_spans(path)

    def counted() -> Iterator[dict]:
        for doc in source:
            stats.texts += 1
            stats.labels.update(e["label"] for e in doc["entities"])
            yield doc

    return counted(), stats

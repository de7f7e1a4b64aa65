"""The knowledge base and the QA files of kg-qa: :class:`KnowledgeBase`, streaming TSV KB files (with header
detection), KgCLUE-style JSONL QA files, and writing a KB back out."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlptool.core.errors import InputError, NlptoolError
from nlptool.core.kgqa.answers import format_answer, parse_answer


@dataclass
class KnowledgeBase:
    """Triples grouped by ``(subject, predicate)``: entry ``i`` is ``subjects[i], predicates[i]`` with ``objects[i]``
    (several objects per key are kept in file order)."""

    subjects: list[str] = field(default_factory=list)
    predicates: list[str] = field(default_factory=list)
    objects: list[list[str]] = field(default_factory=list)
    index: dict[tuple[str, str], int] = field(default_factory=dict)
    triples: int = 0

    def add(self, subject: str, predicate: str, obj: str) -> None:
        key = (subject, predicate)
        i = self.index.get(key)
        if i is None:
            self.index[key] = len(self.subjects)
            self.subjects.append(subject)
            self.predicates.append(predicate)
            self.objects.append([obj])
        elif obj not in self.objects[i]:
            self.objects[i].append(obj)
        self.triples += 1

    def __len__(self) -> int:
        return len(self.subjects)

    def entry(self, i: int) -> tuple[str, str, list[str]]:
        return self.subjects[i], self.predicates[i], self.objects[i]

    def has_triple(self, subject: str, predicate: str, obj: str) -> bool:
        i = self.index.get((subject, predicate))
        return i is not None and obj in self.objects[i]

    def strings(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self.subjects[i]
            yield self.predicates[i]
            yield from self.objects[i]


# Column names that make the first line of a KB file a header (all three fields must be one of these, any case).
KB_HEADER_NAMES = frozenset(
    {
        "subject", "predicate", "object", "s", "p", "o", "head", "relation", "tail", "h", "r", "t", "entity",
        "attribute", "property", "value", "sub", "pred", "obj", "subj", "rel", "实体", "主体", "主语", "属性",
        "关系", "谓语", "值", "属性值", "客体", "宾语", "头实体", "尾实体",
    }
)  # fmt: skip


def is_kb_header(fields: Sequence[str]) -> bool:
    """Whether three TSV fields are column names (``subject  predicate  object`` and the like), not a triple."""
    return len(fields) == 3 and all(f.strip().lower() in KB_HEADER_NAMES for f in fields)


def iter_kb_file(
    path: str | os.PathLike, *, name: str | None = None, report_header: bool = True
) -> Iterator[tuple[int, str, str, str]]:
    """Stream ``(line, subject, predicate, object)`` from a TSV knowledge base (KgCLUE's Knowledge.txt format).

    Blank lines are skipped; a line without exactly three tab-separated fields, or with an empty subject or
    predicate, is an :class:`InputError` naming file and line. A first line of column names
    (:func:`is_kb_header`, e.g. ``subject<TAB>predicate<TAB>object``) is skipped, with a log message unless
    ``report_header=False``. ``name`` is the file's name in messages (e.g. ``<stdin>`` for a spooled copy of stdin).
    """
    p = Path(path)
    shown = name or str(path)
    if not p.is_file():
        raise NlptoolError(f"knowledge base {shown} does not exist or is not a file; check --kb")
    first = True
    with open(p, encoding="utf-8", newline="") as fh:
        try:
            for n, raw in enumerate(fh, start=1):
                line = raw.rstrip("\r\n")
                if n == 1:
                    line = line.lstrip("\ufeff")
                if not line.strip():
                    continue
                parts = line.split("\t")
                if first:
                    first = False
                    if is_kb_header(parts):
                        if report_header:
                            logging.getLogger("nlptool").warning(
                                "%s:%d: skipped the header line '%s' (column names, not a triple)",
                                shown,
                                n,
                                " ".join(parts),
                            )
                        continue
                if len(parts) != 3:
                    raise InputError(
                        f"expected 3 tab-separated fields (subject, predicate, object), found {len(parts)}",
                        path=shown,
                        line=n,
                    )
                s, pr, o = parts
                if not s.strip():
                    raise InputError("empty subject", path=shown, line=n, field="subject")
                if not pr.strip():
                    raise InputError("empty predicate", path=shown, line=n, field="predicate")
                yield n, s, pr, o
        except UnicodeDecodeError as exc:
            raise InputError(f"not valid UTF-8 text ({exc.reason}); convert the file to UTF-8", path=shown) from None


def read_kb(path: str | os.PathLike) -> KnowledgeBase:
    """Read a TSV knowledge base (see :func:`iter_kb_file`)."""
    kb = KnowledgeBase()
    for _, s, p, o in iter_kb_file(path):
        kb.add(s, p, o)
    if not len(kb):
        raise NlptoolError(f"knowledge base {path} has no triples")
    return kb


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass
class QAExample:
    """One QA row: the question, the gold triple (``None`` when the file has no answers) and the original record."""

    line: int
    question: str
    answer: tuple[str, str, str] | None
    record: dict


def read_qa(
    path: str, *, require_answer: bool = True, question_field: str = "question", require_question: bool = True
) -> list[QAExample]:
    """Read KgCLUE-style JSONL (``{"question", "answer": "S ||| P ||| O"}``); ``-`` reads stdin.

    ``require_question=False`` (a predictions file) allows rows without a question.
    """
    out = list(
        iter_qa(path, require_answer=require_answer, question_field=question_field, require_question=require_question)
    )
    if not out:
        raise NlptoolError(f"QA file {path} has no rows")
    return out


def iter_qa(
    path: str, *, require_answer: bool = True, question_field: str = "question", require_question: bool = True
) -> Iterator[QAExample]:
    """Stream the rows of a KgCLUE-style JSONL file (see :func:`read_qa`), one :class:`QAExample` at a time."""
    from nlptool.core.io import read_records

    with read_records(path, "jsonl") as reader:
        for rec in reader:
            q = rec.data.get(question_field)
            if not require_question and q is None:
                q = ""
            elif not isinstance(q, str) or not q.strip():
                raise InputError("missing or empty question", path=path, line=rec.line, field=question_field)
            ans = rec.data.get("answer")
            triple = None
            if ans is not None or require_answer:
                if ans is None:
                    raise InputError(
                        "missing (needed for training and evaluation)", path=path, line=rec.line, field="answer"
                    )
                triple = parse_answer(ans, path=path, line=rec.line)
            yield QAExample(rec.line, q, triple, rec.data)


def answers_not_in_kb(kb: KnowledgeBase, examples: Sequence[QAExample]) -> list[QAExample]:
    """The examples whose gold ``(S, P, O)`` is not a triple of ``kb``."""
    return [e for e in examples if e.answer is not None and not kb.has_triple(*e.answer)]


def missing_answers_message(kb: KnowledgeBase, examples: Sequence[QAExample], path: str) -> tuple[int, str | None]:
    """How many gold answers of ``examples`` (read from ``path``) are not triples of ``kb``, and a warning that says so
    with up to three of them (``None`` when there are none)."""
    missing = answers_not_in_kb(kb, examples)
    if not missing:
        return 0, None
    shown = "; ".join(f"line {e.line}: {format_answer(*e.answer)}" for e in missing[:3])  # type: ignore[misc]
    return len(missing), f"{path}: {len(missing)} of {len(examples)} answers are not triples of the KB (e.g. {shown})"


def paired_answers(
    predictions: Sequence[QAExample], gold: Sequence[QAExample], *, predictions_path: str, gold_path: str
) -> list[str]:
    """The answers ``'S ||| P ||| O'`` of a predictions file, checked against the gold file they pair with by position
    (as in KgCLUE's script): as many rows, every row with an answer, and the same ``id`` where both rows have one."""
    if len(predictions) != len(gold):
        raise NlptoolError(
            f"{predictions_path} has {len(predictions)} rows but {gold_path} has {len(gold)}; they pair by "
            "position, as in KgCLUE's script"
        )
    answers = []
    for p, g in zip(predictions, gold, strict=True):
        if p.answer is None:
            raise InputError("missing", path=predictions_path, line=p.line, field="answer")
        if "id" in p.record and "id" in g.record and p.record["id"] != g.record["id"]:
            raise InputError(
                f"id {p.record['id']!r} where {gold_path} line {g.line} has id {g.record['id']!r}; "
                "rows pair by position",
                path=predictions_path,
                line=p.line,
                field="id",
            )
        parse_answer(format_answer(*p.answer))
        answers.append(format_answer(*p.answer))
    return answers


def kb_from_qa(files: Sequence[str]) -> KnowledgeBase:
    """A knowledge base of the triples in the answers of QA files (the benchmark's KgCLUE stand-in)."""
    kb = KnowledgeBase()
    for f in files:
        for e in read_qa(f):
            assert e.answer is not None
            kb.add(*e.answer)
    return kb


def write_kb(kb: KnowledgeBase, fh: Any) -> None:
    for i in range(len(kb)):
        for o in kb.objects[i]:
            fh.write(f"{kb.subjects[i]}\t{kb.predicates[i]}\t{o}\n")

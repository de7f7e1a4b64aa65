"""The knowledge base and the QA files of kg-qa: :class:`KnowledgeBase`, streaming TSV KB files (with header
detection), KgCLUE-style JSONL QA files, and writing a KB back out."""

from __future__ import annotations

import hashlib
import logging
import os
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlptool.core.errors import InputError, NlptoolError
from nlptool.core.kgqa.answers import format_answer, parse_answer


class KnowledgeBase:
    """Triples grouped by ``(subject, predicate)``: entry ``i`` is ``subjects[i], predicates[i]`` with ``objects[i]``
    (several objects per key are kept in file order, each once; entries in the order of their first triple).

    Held in compact arrays, not Python objects per triple (which cost about 550 bytes a triple: 11 GB for KgCLUE's
    20.6M-triple Knowledge.txt): the subjects and the objects as UTF-8 in two byte buffers with int64 offsets (a
    subject repeated on consecutive lines is stored once), the predicates interned, and per triple a 64-bit hash of
    its ``(subject, predicate)``. The grouping into entries and the ``(subject, predicate)`` lookup are computed on
    first use (numpy sorts of the hashes; entries whose hashes collide are told apart by their strings), about 110
    bytes a triple in all. :meth:`add` appends (and drops the grouping, which the next query recomputes).

    ``subjects``, ``predicates``, ``objects`` and ``index`` are read-only views with the interface of the lists and
    the dict they replace (``kb.objects[i]``, ``kb.index[(s, p)]``, ``kb.index.get((s, p))``).
    """

    def __init__(self) -> None:
        self.triples = 0
        self._s_blob = bytearray()  # subjects, each followed by b"\n" (the terminator finds string ends in chars())
        self._s_off = array("q", [0])
        self._o_blob = bytearray()  # objects, one per triple, each followed by b"\n"
        self._o_off = array("q", [0])
        self._t_subj = array("I")  # per triple: its subject's number
        self._t_pred = array("I")  # per triple: its predicate's number
        self._t_hash = array("q")  # per triple: hash((subject, predicate))
        self._pred_ids: dict[str, int] = {}
        self._preds: list[str] = []
        self._last_subject: str | None = None
        self._newline = False  # a string holds "\n" (only through add(); files are split into lines)
        self._groups: _Groups | None = None

    # -- building -----------------------------------------------------------------------------------------------------
    def add(self, subject: str, predicate: str, obj: str) -> None:
        if subject != self._last_subject:
            b = subject.encode("utf-8", "surrogatepass")
            self._s_blob += b
            self._s_blob += b"\n"
            self._s_off.append(len(self._s_blob))
            self._last_subject = subject
            self._newline = self._newline or "\n" in subject
        self._t_subj.append(len(self._s_off) - 2)
        pid = self._pred_ids.get(predicate)
        if pid is None:
            pid = self._pred_ids[predicate] = len(self._preds)
            self._preds.append(predicate)
            self._newline = self._newline or "\n" in predicate
        self._t_pred.append(pid)
        self._o_blob += obj.encode("utf-8", "surrogatepass")
        self._o_blob += b"\n"
        self._o_off.append(len(self._o_blob))
        self._newline = self._newline or "\n" in obj
        self._t_hash.append(self._key_hash(subject, predicate))
        self.triples += 1
        self._groups = None

    @staticmethod
    def _key_hash(subject: str, predicate: str) -> int:
        """The 64-bit hash that groups triples and finds keys (per process; collisions are resolved by the strings)."""
        return hash((subject, predicate))

    # -- the strings of a triple --------------------------------------------------------------------------------------
    def _subject_of(self, t: int) -> str:
        k = self._t_subj[t]
        return self._s_blob[self._s_off[k] : self._s_off[k + 1] - 1].decode("utf-8", "surrogatepass")

    def _object_of(self, t: int) -> str:
        return self._o_blob[self._o_off[t] : self._o_off[t + 1] - 1].decode("utf-8", "surrogatepass")

    def _same_key(self, t: int, subject: str, predicate: str) -> bool:
        return self._preds[self._t_pred[t]] == predicate and self._subject_of(t) == subject

    # -- entries ------------------------------------------------------------------------------------------------------
    @property
    def _g(self) -> _Groups:
        if self._groups is None:
            self._groups = _Groups.build(self)
        return self._groups

    def __len__(self) -> int:
        return len(self._g.first)

    def _find(self, subject: str, predicate: str) -> int | None:
        g = self._g
        h = self._key_hash(subject, predicate)
        lo = int(np.searchsorted(g.lookup_hash, h, side="left"))
        hi = int(np.searchsorted(g.lookup_hash, h, side="right"))
        for j in range(lo, hi):
            e = int(g.lookup_entry[j])
            if self._same_key(int(g.first[e]), subject, predicate):
                return e
        return None

    def _objects(self, i: int) -> list[str]:
        g = self._g
        return [self._object_of(int(t)) for t in g.kept[g.kept_off[i] : g.kept_off[i + 1]]]

    def entry(self, i: int) -> tuple[str, str, list[str]]:
        t = int(self._g.first[i])
        return self._subject_of(t), self._preds[self._t_pred[t]], self._objects(i)

    def has_triple(self, subject: str, predicate: str, obj: str) -> bool:
        i = self._find(subject, predicate)
        return i is not None and obj in self._objects(i)

    @property
    def subjects(self) -> _View:
        return _View(self, lambda i: self._subject_of(int(self._g.first[i])))

    @property
    def predicates(self) -> _View:
        return _View(self, lambda i: self._preds[self._t_pred[int(self._g.first[i])]])

    @property
    def objects(self) -> _View:
        return _View(self, self._objects)

    @property
    def index(self) -> _Index:
        return _Index(self)

    def keys(self) -> Iterator[tuple[str, str]]:
        """``(subject, predicate)`` of every entry, in order."""
        first, preds, t_pred = self._g.first, self._preds, self._t_pred
        for b in range(0, len(first), 65_536):
            for t in first[b : b + 65_536].tolist():
                yield self._subject_of(t), preds[t_pred[t]]

    def strings(self) -> Iterator[str]:
        for i in range(len(self)):
            s, p, objs = self.entry(i)
            yield s
            yield p
            yield from objs

    def chars(self) -> set[str]:
        """The characters of every KB string after whitespace normalisation (``' '.join(text.split())``): what a
        character vocabulary needs (:func:`clean_chars` of :meth:`strings`), read from the byte buffers in blocks."""
        if self._newline:
            return clean_chars(self.strings())
        out = clean_chars(self._preds)
        space = " " in out
        for blob in (self._s_blob, self._o_blob):
            for block in _text_blocks(blob):
                cs = set(block)
                cs.discard("\n")  # the terminator
                out |= cs
                if not space and any(c.isspace() for c in cs):
                    space = any(len(t.split()) > 1 for t in block.split("\n"))
        out = {c for c in out if not c.isspace()}
        if space:
            out.add(" ")
        return out


def clean_chars(texts: Iterable[str], block: int = 65_536) -> set[str]:
    """The set of characters of ``' '.join(t.split())`` over ``texts``: every non-whitespace character, and ``' '``
    when some text has whitespace between two words. Texts are joined in blocks of ``block`` (one C-level ``set``
    per block; a block is split into words only when it holds whitespace and no space has been found yet)."""
    out: set[str] = set()
    space = False
    for part in _batched(texts, block):
        cs = set("".join(part))
        out |= cs
        if not space and any(c.isspace() for c in cs):
            space = any(len(t.split()) > 1 for t in part)
    out = {c for c in out if not c.isspace()}
    if space:
        out.add(" ")
    return out


def _batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    part: list[str] = []
    for x in items:
        part.append(x)
        if len(part) >= n:
            yield part
            part = []
    if part:
        yield part


def _text_blocks(blob: bytearray, size: int = 1 << 22) -> Iterator[str]:
    """``blob`` (UTF-8 strings each ending in ``b"\\n"``) decoded in blocks of about ``size`` bytes, cut after a
    terminator."""
    start, n = 0, len(blob)
    view = memoryview(blob)
    while start < n:
        stop = n if n - start <= size else blob.rfind(b"\n", start, start + size) + 1
        if stop <= start:  # one string longer than size
            stop = blob.find(b"\n", start + size) + 1
        yield bytes(view[start:stop]).decode("utf-8", "surrogatepass")
        start = stop


@dataclass
class _Groups:
    """The entries of a :class:`KnowledgeBase`: ``first[i]`` the first triple of entry ``i`` (entries in the order of
    their first triple), ``kept[kept_off[i]:kept_off[i + 1]]`` its triples with distinct objects (file order), and the
    lookup: ``lookup_hash`` sorted, ``lookup_entry`` the entry of each."""

    first: np.ndarray
    kept: np.ndarray
    kept_off: np.ndarray
    lookup_hash: np.ndarray
    lookup_entry: np.ndarray

    @classmethod
    def build(cls, kb: KnowledgeBase) -> _Groups:
        n = kb.triples
        idx = np.int32 if n < 2**31 else np.int64
        h = np.frombuffer(kb._t_hash, dtype=np.int64) if n else np.empty(0, dtype=np.int64)
        order = np.argsort(h, kind="stable").astype(idx)  # by hash, file order among equal hashes
        hs = h[order]
        start = np.flatnonzero(np.concatenate(([True], hs[1:] != hs[:-1]))) if n else np.empty(0, dtype=np.int64)
        del hs
        sizes = np.diff(np.append(start, n))
        leader = np.empty(n, dtype=idx)  # leader[t]: the first triple with t's (subject, predicate)
        leader[order] = np.repeat(order[start], sizes)
        drop = np.zeros(n, dtype=bool)  # a repeated object of its entry
        for g in np.flatnonzero(sizes > 1).tolist():  # several triples share a hash: compare their strings
            members = order[start[g] : start[g] + sizes[g]].tolist()
            heads: dict[tuple[str, str], int] = {}
            seen: dict[int, set[str]] = {}
            for t in members:
                key = (kb._subject_of(t), kb._preds[kb._t_pred[t]])
                head = heads.setdefault(key, t)
                leader[t] = head
                obj = kb._object_of(t)
                if obj in seen.setdefault(head, set()):
                    drop[t] = True
                else:
                    seen[head].add(obj)
        del order, start, sizes
        is_first = leader == np.arange(n, dtype=idx)
        first = np.flatnonzero(is_first).astype(idx)
        entry_of = (np.cumsum(is_first, dtype=np.int64) - 1)[leader].astype(idx)
        del leader, is_first
        kept_t = np.flatnonzero(~drop).astype(idx)
        kept = kept_t[np.argsort(entry_of[kept_t], kind="stable")]
        kept_off = np.zeros(len(first) + 1, dtype=np.int64)
        np.cumsum(np.bincount(entry_of[kept_t], minlength=len(first)), out=kept_off[1:])
        del entry_of, kept_t
        fh = h[first]
        lookup = np.argsort(fh, kind="stable").astype(idx)
        return cls(first, kept, kept_off, fh[lookup], lookup)


class _View(Sequence):
    """A read-only column of a :class:`KnowledgeBase` (``kb.subjects``, ``kb.predicates``, ``kb.objects``)."""

    def __init__(self, kb: KnowledgeBase, get: Any):
        self._kb, self._get = kb, get

    def __len__(self) -> int:
        return len(self._kb)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._get(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        return self._get(i % n)


class _Index(Mapping):
    """The ``(subject, predicate) -> entry`` lookup of a :class:`KnowledgeBase` as a read-only mapping."""

    def __init__(self, kb: KnowledgeBase):
        self._kb = kb

    def __getitem__(self, key: tuple[str, str]) -> int:
        i = self._kb._find(*key) if isinstance(key, tuple) and len(key) == 2 else None
        if i is None:
            raise KeyError(key)
        return i

    def __len__(self) -> int:
        return len(self._kb)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        kb = self._kb
        return ((kb.subjects[i], kb.predicates[i]) for i in range(len(kb)))


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
    """Write ``kb`` as TSV, entry by entry (each entry's objects in its order)."""
    for i in range(len(kb)):
        s, p, objs = kb.entry(i)
        for o in objs:
            fh.write(f"{s}\t{p}\t{o}\n")

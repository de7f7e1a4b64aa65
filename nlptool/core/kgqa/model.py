"""Question answering over a knowledge base with Seq2Seq + prefix-tree constrained decoding.

A seq2seq model reads the question and generates the **key** of a triple,
``base [SEP] predicate [SEP] meaning <end>``, where ``base`` is the subject without its disambiguating meaning (the
text in the final full-width parentheses: ``守望星光（韩玉玲、刘东考演唱歌曲）`` → ``守望星光`` +
``韩玉玲、刘东考演唱歌曲``), which goes last. Beam search runs through ``generate()`` with
:class:`TrieLogitsProcessor`, which masks every step to the continuations that a
:class:`~nlptool.core.trie.TokenTrie` of all KB keys allows, so only existing entries can come out;
the object is then looked up in the KB.

References: Su Jianlin, "Seq2Seq+前缀树：检索任务新范式（以KgCLUE为例）", https://kexue.fm/archives/8802; De Cao,
Izacard, Riedel and Petroni, "Autoregressive Entity Retrieval" (GENRE), ICLR 2021. The metric is KgCLUE's
``evaluate_f1_em.py`` (CLUEbenchmark/KgCLUE, baselines/), re-implemented in :func:`kgclue_scores`.

Models (one interface, :class:`Backbone`):

- ``bart-char``: a small BART trained from scratch with a character vocabulary (:class:`CharCodec`) built from the
  training questions and every KB string, by default with a pointer-generator output that copies question characters
  (:func:`copy_bart_class`); the offline default.
- ``seq2seq``: any pretrained Hugging Face seq2seq checkpoint (T5, BART, ...) with its own tokenizer.
- ``unilm``: a BERT-family masked-LM checkpoint used UniLM-style: ``[CLS] question [SEP] key`` with segment ids 0/1
  and a seq2seq attention mask (question tokens see the question; key tokens see the question and the key tokens up
  to themselves), predicting each key token with the tied MLM output embeddings. Decoding is nlptool's own beam search
  (a masked LM has no ``generate()``), with the same logits processor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nlptool.core.errors import InputError, NlptoolError
from nlptool.core.trie import TokenTrie

OPEN, CLOSE = "（", "）"
ANSWER_SEP = " ||| "
FORMAT_VERSION = 1
CONFIG_FILE = "kgqa.json"
KB_FILE = "kb.tsv"
TRIE_FILE = "trie.npz"
VOCAB_FILE = "kgqa_vocab.json"
BACKBONES = ("bart-char", "seq2seq", "unilm")


# ---------------------------------------------------------------------------------------------------------------------
# Subjects, answers, the KgCLUE metric


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


# ---------------------------------------------------------------------------------------------------------------------
# Knowledge base and QA files


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


# ---------------------------------------------------------------------------------------------------------------------
# Tokenisation of questions and keys


class CharCodec:
    """Character vocabulary: ``[PAD] [UNK] [BOS] [EOS] [SEP]`` then characters; whitespace runs become one space.

    ``[BOS]`` is the decoder start token (the trie's root), ``[EOS]`` ends every key, ``[SEP]`` separates the parts.
    """

    kind = "char"
    SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]")

    def __init__(self, chars: Sequence[str]):
        self.itos = list(self.SPECIALS) + [c for c in chars if c not in self.SPECIALS]
        self.stoi = {c: i for i, c in enumerate(self.itos)}
        self.pad_id, self.unk_id, self.start_id, self.end_id, self.sep_id = 0, 1, 2, 3, 4
        self.sep_ids = [self.sep_id]

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharCodec:
        chars: set[str] = set()
        for t in texts:
            chars.update(_clean(t))
        return cls(sorted(chars))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        unk = self.unk_id
        return [self.stoi.get(c, unk) for c in _clean(text)]

    def encode_question(self, text: str, max_len: int) -> list[int]:
        return (self.encode(text)[: max_len - 1] or [self.unk_id]) + [self.end_id]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.itos[i] if i >= len(self.SPECIALS) else "" for i in ids if 0 <= i < len(self.itos))

    def save(self, folder: Path) -> None:
        (folder / VOCAB_FILE).write_text(
            json.dumps({"chars": self.itos[len(self.SPECIALS) :]}, ensure_ascii=False), encoding="utf-8"
        )

    @classmethod
    def load(cls, folder: Path) -> CharCodec:
        return cls(json.loads((folder / VOCAB_FILE).read_text(encoding="utf-8"))["chars"])


def _clean(text: str) -> str:
    return " ".join(text.split())


class HFCodec:
    """A Hugging Face tokenizer as a key codec: parts are tokenised without special tokens and joined by the
    tokenizer's ``[SEP]`` (or the tokens of ``' | '`` when it has none); keys end with ``eos`` (``[SEP]`` for
    BERT-family tokenizers)."""

    kind = "hf"

    def __init__(self, tokenizer: Any, *, start_id: int, end_id: int):
        self.tok = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.unk_id = tokenizer.unk_token_id
        self.start_id = int(start_id)
        self.end_id = int(end_id)
        sep = tokenizer.sep_token_id
        if sep is not None and sep != self.end_id:
            self.sep_ids = [int(sep)]
        else:
            self.sep_ids = [int(i) for i in tokenizer(" | ", add_special_tokens=False)["input_ids"]]
            if not self.sep_ids:
                raise NlptoolError("the tokenizer encodes ' | ' to nothing; cannot separate the parts of a key")
        self.sep_id = self.sep_ids[0]

    def __len__(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self.tok(_clean(text), add_special_tokens=False)["input_ids"]]

    def encode_question(self, text: str, max_len: int) -> list[int]:
        return [int(i) for i in self.tok(_clean(text), truncation=True, max_length=max_len)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(
            [i for i in ids if i not in (self.start_id, self.end_id, self.pad_id)], skip_special_tokens=True
        ).strip()

    def save(self, folder: Path) -> None:
        self.tok.save_pretrained(folder)


def key_ids(codec: Any, subject: str, predicate: str) -> list[int]:
    """The token ids of the key ``base [SEP] predicate [SEP] meaning <end>`` (without the root token)."""
    base, meaning = split_subject(subject)
    return [
        *codec.encode(base),
        *codec.sep_ids,
        *codec.encode(predicate),
        *codec.sep_ids,
        *codec.encode(meaning),
        codec.end_id,
    ]


def build_trie(kb: KnowledgeBase, codec: Any) -> tuple[TokenTrie, int]:
    """A trie of every KB key (values: KB entry indices); returns it and the number of keys that collided."""
    return TokenTrie.build(
        ((key_ids(codec, kb.subjects[i], kb.predicates[i]), i) for i in range(len(kb))),
        root=codec.start_id,
        end=codec.end_id,
    )


def build_trie_from_file(
    path: str, codec: Any, chunk_size: int = 1_000_000, *, name: str | None = None, stats: dict | None = None
) -> tuple[TokenTrie, int, int]:
    """Stream a KB file into a trie without holding the KB: values are the line numbers of each key's first triple.

    Returns the trie, the number of keys dropped as duplicates (same subject and predicate on several lines, or
    different ones that the codec tokenises identically) and the number of triples read. ``stats``, when given, gets
    ``collisions``: the distinct (subject, predicate) pairs lost because their key tokenises like another one's
    (a WordPiece tokenizer lower-cases and drops characters), counted from 64-bit hashes (8 bytes per triple).
    A KB without triples is an error.
    """
    count = 0
    hashes = array("q")

    def items() -> Iterator[tuple[list[int], int]]:
        nonlocal count
        for line, s, p, _ in iter_kb_file(path, name=name):
            count += 1
            hashes.append(hash((s, p)))
            yield key_ids(codec, s, p), line

    trie, dup = TokenTrie.build(items(), root=codec.start_id, end=codec.end_id, chunk_size=chunk_size)
    if not count:
        raise NlptoolError(
            f"knowledge base {name or path} has no triples; give TSV lines subject<TAB>predicate<TAB>object"
        )
    if stats is not None:
        stats["collisions"] = len(np.unique(np.frombuffer(hashes, dtype=np.int64))) - len(trie)
    return trie, dup, count


# ---------------------------------------------------------------------------------------------------------------------
# Constrained decoding


def token_lcs(a: Sequence[int], b: Sequence[int]) -> int:
    """LCS length of two token sequences (Su's look-ahead measures how much of the question a key covers)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


class TrieLogitsProcessor:
    """A ``generate()`` logits processor: every row may only continue along the trie.

    Each call receives the decoder prefixes (rows = batch × beams, batch-major as ``generate()`` flattens them) and
    the step's scores; it returns log-probabilities with ``-inf`` outside each row's allowed set.

    Args:
        trie: the keys; paths start with ``trie.root`` (the decoder start token).
        questions: per batch item, the question's token ids (for ``lookahead`` and ``subject_in_question``).
        num_beams: rows per batch item.
        renormalize: rescale the allowed probabilities to sum to 1 (Su's choice); otherwise only mask ("mask-only":
            a key's score stays the model's probability of it).
        lookahead: Su's rule. Once the subject is decoded, each allowed token ``t`` gets the weight
            ``w = 1 + max over the keys through t of (LCS(key, question) − LCS(prefix, question))`` and its
            probability becomes ``p^(1/w)``: continuations whose completions cover more of the question are favoured.
        subject_in_question: while the base name is decoded, allow only tokens that keep it a contiguous substring of
            the question (plus the separator); falls back to the trie alone where that leaves nothing.
        sep_id: the separator token that ends the base name.
        max_completions: look-ahead examines at most this many completions per row.
    """

    def __init__(
        self,
        trie: TokenTrie,
        questions: Sequence[Sequence[int]] | None = None,
        *,
        num_beams: int = 1,
        renormalize: bool = False,
        lookahead: bool = False,
        subject_in_question: bool = False,
        sep_id: int | None = None,
        max_completions: int = 256,
    ):
        self.trie = trie
        self.questions = [list(q) for q in questions] if questions is not None else None
        self.num_beams = num_beams
        self.renormalize = renormalize
        self.lookahead = lookahead
        self.subject_in_question = subject_in_question
        self.sep_id = sep_id
        self.max_completions = max_completions
        if (lookahead or subject_in_question) and (questions is None or sep_id is None):
            raise NlptoolError("lookahead and subject_in_question need the questions' token ids and the separator")
        self.scores_are_logprobs = num_beams > 1  # generate(): beam search passes log-probs, greedy raw logits
        self._nodes: dict[tuple[int, ...], Any] = {}
        self._lcs_cache: dict[tuple[int, tuple[int, ...]], int] = {}

    def _node(self, seq: list[int]) -> Any:
        key = tuple(seq)
        if key in self._nodes:
            return self._nodes[key]
        if len(key) == 1:
            node = self.trie.root_node() if key[0] == self.trie.root else None
        else:
            parent = self._node(seq[:-1])
            node = None if parent is None else self.trie.child(parent, key[-1])
        self._nodes[key] = node
        return node

    def allowed_tokens(self, seq: list[int], row: int) -> np.ndarray:
        """The tokens row ``row`` (prefix ``seq``, root first) may take next."""
        node = self._node(seq)
        if node is None:  # left the trie (a finished or padded beam): only the end token
            return np.array([self.trie.end], dtype=np.int64)
        allowed = self.trie.allowed(node)
        if not len(allowed):
            return np.array([self.trie.end], dtype=np.int64)
        if self.subject_in_question and self.sep_id not in seq[1:]:
            q = self.questions[row // self.num_beams]  # type: ignore[index]
            seg = seq[1:]
            n = len(seg)
            nxt = {q[i + n] for i in range(len(q) - n) if q[i : i + n] == seg}
            if n:
                nxt.add(self.sep_id)
            keep = allowed[np.isin(allowed, np.fromiter(nxt, dtype=np.int64, count=len(nxt)))]
            if len(keep):
                allowed = keep
        return allowed

    def _lookahead_weights(self, seq: list[int], row: int, allowed: np.ndarray) -> np.ndarray | None:
        if self.sep_id not in seq[1:] or len(allowed) < 2:
            return None
        q = self.questions[row // self.num_beams]  # type: ignore[index]
        b = row // self.num_beams
        done = self._lcs(b, tuple(seq[1:]), q)
        weights = np.ones(len(allowed), dtype=np.float64)
        pos = len(seq)
        for key, _ in self.trie.complete(seq, limit=self.max_completions):
            w = self._lcs(b, tuple(key[1:]), q) - done
            i = int(np.searchsorted(allowed, key[pos])) if pos < len(key) else -1
            if 0 <= i < len(allowed) and allowed[i] == key[pos]:
                weights[i] = max(weights[i], w + 1)
        return weights

    def _lcs(self, b: int, seq: tuple[int, ...], q: list[int]) -> int:
        k = (b, seq)
        v = self._lcs_cache.get(k)
        if v is None:
            v = self._lcs_cache[k] = token_lcs(seq, q)
        return v

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if not self.scores_are_logprobs:  # greedy search hands raw logits, beam search log-probabilities
            scores = torch.log_softmax(scores.float(), dim=-1)
        rows = input_ids.tolist()
        n, vocab = scores.shape
        row_idx: list[np.ndarray] = []
        col_idx: list[np.ndarray] = []
        reweight: list[tuple[int, np.ndarray, np.ndarray]] = []
        for r, seq in enumerate(rows):
            allowed = self.allowed_tokens(seq, r)
            if len(allowed) and allowed[-1] >= vocab:  # sorted: only a tokenizer larger than the head gets here
                allowed = allowed[allowed < vocab]
            row_idx.append(np.full(len(allowed), r, dtype=np.int64))
            col_idx.append(allowed)
            if self.lookahead:
                w = self._lookahead_weights(seq, r, allowed)
                if w is not None and (w > 1).any():
                    reweight.append((r, allowed, w))
        mask = torch.full((n, vocab), float("-inf"), dtype=scores.dtype, device=scores.device)
        ri = torch.from_numpy(np.concatenate(row_idx)).to(scores.device)
        ci = torch.from_numpy(np.concatenate(col_idx)).to(scores.device)
        mask[ri, ci] = 0.0
        out = scores + mask
        for r, allowed, w in reweight:
            idx = torch.from_numpy(allowed).to(scores.device)
            out[r, idx] = out[r, idx] / torch.from_numpy(w).to(out.dtype).to(scores.device)
        if self.renormalize:
            out = torch.log_softmax(out, dim=-1)
        return out


# ---------------------------------------------------------------------------------------------------------------------
# Backbones


def pad_batch(seqs: Sequence[Sequence[int]], pad: int) -> tuple[Any, Any]:
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


class Seq2SeqBackbone:
    """An encoder-decoder model (BART, T5, ...): the question is the source, the key the target."""

    def __init__(self, model: Any, codec: Any, kind: str):
        self.model = model
        self.codec = codec
        self.kind = kind

    def collate(self, examples: Sequence[tuple[list[int], list[int]]]) -> dict:
        ids, mask = pad_batch([q for q, _ in examples], self.codec.pad_id)
        labels, lmask = pad_batch([k for _, k in examples], self.codec.pad_id)
        labels[lmask == 0] = -100
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def loss(self, model: Any, batch: dict) -> Any:
        return model(**batch, use_cache=False).loss

    def generate(
        self,
        questions: Sequence[list[int]],
        make_processor: Callable[[Sequence[list[int]], int], Any] | None,
        *,
        num_beams: int,
        num_return: int,
        max_new_tokens: int,
    ) -> list[list[tuple[list[int], float]]]:
        """Beam search for each question; per question ``num_return`` ``(ids, score)`` pairs, ids root first."""
        import torch
        from transformers import LogitsProcessorList

        processor = make_processor(questions, num_beams) if make_processor is not None else None

        device = next(self.model.parameters()).device
        ids, mask = pad_batch(questions, self.codec.pad_id)
        kwargs: dict[str, Any] = {
            "input_ids": ids.to(device),
            "attention_mask": mask.to(device),
            "num_beams": num_beams,
            "num_return_sequences": num_return,
            "max_new_tokens": max_new_tokens,
            "decoder_start_token_id": self.codec.start_id,
            "eos_token_id": self.codec.end_id,
            "pad_token_id": self.codec.pad_id,
            "do_sample": False,
            "forced_bos_token_id": None,
            "forced_eos_token_id": None,
            "no_repeat_ngram_size": 0,
            "min_length": 0,
            "return_dict_in_generate": True,
            "output_scores": True,
        }
        if getattr(self.model.config, "kgqa_copy", False):
            kwargs["decoder_source_ids"] = kwargs["input_ids"]
        if num_beams > 1:  # rank beams by the key's log-probability (no length normalisation)
            kwargs.update(length_penalty=0.0, early_stopping=False)
        if processor is not None:
            kwargs["logits_processor"] = LogitsProcessorList([processor])
        with torch.no_grad():
            out = self.model.generate(**kwargs)
        seqs = out.sequences.tolist()
        if num_beams > 1:
            scores = out.sequences_scores.tolist()
        else:  # greedy: the sum of the chosen tokens' (processed) log-probabilities
            steps = torch.stack([s.float() for s in out.scores], 1)  # (n, T, V): the processed step scores
            if processor is None:  # raw logits; the trie processor already returns (masked) log-probabilities,
                steps = torch.log_softmax(steps, -1)  # and a second log-softmax would renormalise them
            chosen = out.sequences[:, 1 : 1 + steps.shape[1]]
            lp = steps.gather(2, chosen.unsqueeze(-1)).squeeze(-1)
            lp = torch.where(chosen == self.codec.pad_id, torch.zeros_like(lp), lp)
            scores = lp.sum(1).tolist()
        return _group(seqs, scores, num_return, self.codec)

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder)
        self.codec.save(folder)


def _group(seqs: list[list[int]], scores: list[float], k: int, codec: Any) -> list[list[tuple[list[int], float]]]:
    out = []
    for b in range(len(seqs) // k):
        cands = []
        for j in range(b * k, (b + 1) * k):
            s = seqs[j]
            if codec.end_id in s[1:]:
                s = s[: s.index(codec.end_id, 1) + 1]
            else:
                s = [t for t in s if t != codec.pad_id or t == codec.start_id]
            cands.append((s, float(scores[j])))
        out.append(cands)
    return out


class UniLMBackbone:
    """A BERT-family masked LM used UniLM-style (Dong et al., 2019; Su's KgCLUE baseline).

    Input ``[CLS] question [SEP] key`` with token types 0 (question) / 1 (key); the attention mask is 4-D and
    additive (0 / −inf, the form eager attention honours in transformers 5): question positions see the question,
    key positions see the question and the key up to themselves. The MLM head (output embeddings tied to the input
    embeddings) predicts key token ``i+1`` at position ``i``. Keys start at the ``[SEP]`` that ends the question (the
    trie's root) and end with ``[SEP]``.
    """

    kind = "unilm"

    def __init__(self, model: Any, codec: Any):
        self.model = model
        self.codec = codec

    @staticmethod
    def attention_bias(segments: Any, pad_mask: Any, dtype: Any) -> Any:
        """``(n, 1, L, L)`` additive mask: 0 where query ``i`` may attend key ``j``, the dtype's minimum elsewhere."""
        import torch

        n, length = segments.shape
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=segments.device))
        see = (segments[:, None, :] == 0) | causal[None]  # every position sees segment 0 and earlier positions
        see = see & (segments[:, :, None] >= segments[:, None, :])  # question positions never see the key
        see = see & pad_mask[:, None, :].bool()
        bias = torch.zeros((n, 1, length, length), dtype=dtype, device=segments.device)
        return bias.masked_fill(~see[:, None], torch.finfo(dtype).min)

    def _inputs(self, qs: Sequence[list[int]], keys: Sequence[list[int]]) -> dict:
        import torch

        seqs = [q + k for q, k in zip(qs, keys, strict=True)]
        ids, mask = pad_batch(seqs, self.codec.pad_id)
        seg = torch.zeros_like(ids)
        for i, q in enumerate(qs):
            seg[i, len(q) : len(seqs[i])] = 1
        seg = seg.masked_fill(mask == 0, 1)
        return {"input_ids": ids, "token_type_ids": seg, "pad": mask}

    def collate(self, examples: Sequence[tuple[list[int], list[int]]]) -> dict:
        import torch

        qs = [q[:-1] for q, _ in examples]  # the question's final [SEP] is the key's root
        keys = [[self.codec.start_id, *k] for _, k in examples]
        batch = self._inputs(qs, keys)
        labels = torch.full_like(batch["input_ids"], -100)
        for i, (q, k) in enumerate(zip(qs, keys, strict=True)):
            start = len(q)
            labels[i, start : start + len(k) - 1] = torch.tensor(k[1:], dtype=torch.long)
        batch["labels"] = labels
        return batch

    def _logits(self, model: Any, batch: dict) -> Any:
        dtype = next(model.parameters()).dtype
        bias = self.attention_bias(batch["token_type_ids"], batch["pad"], dtype)
        return model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"], attention_mask=bias).logits

    def loss(self, model: Any, batch: dict) -> Any:
        import torch

        logits = self._logits(model, batch)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)

    def generate(
        self,
        questions: Sequence[list[int]],
        make_processor: Callable[[Sequence[list[int]], int], Any] | None,
        *,
        num_beams: int,
        num_return: int,
        max_new_tokens: int,
    ) -> list[list[tuple[list[int], float]]]:
        """Beam search (sum of log-probabilities, as ``generate()`` with ``length_penalty=0``) with ``processor``."""
        import torch

        device = next(self.model.parameters()).device
        end = self.codec.end_id
        results = []
        for q in questions:
            qs = q[:-1]
            # one question per search: every row belongs to batch item 0
            processor = make_processor([q], 1 << 30) if make_processor is not None else None
            if processor is not None:
                processor.scores_are_logprobs = True
            beams: list[tuple[list[int], float]] = [([self.codec.start_id], 0.0)]
            finished: list[tuple[list[int], float]] = []
            for _ in range(max_new_tokens):
                if not beams:
                    break
                batch = self._inputs([qs] * len(beams), [s for s, _ in beams])
                batch = {k: v.to(device) for k, v in batch.items()}
                with torch.no_grad():
                    logits = self._logits(self.model, batch)
                pos = torch.tensor([len(qs) + len(s) - 1 for s, _ in beams], device=device)
                last = logits[torch.arange(len(beams), device=device), pos]
                prefixes = torch.tensor([s for s, _ in beams], dtype=torch.long)
                lp = torch.log_softmax(last.float(), -1)
                if processor is not None:
                    lp = processor(prefixes, lp)
                total = lp + torch.tensor([sc for _, sc in beams], device=device)[:, None]
                flat = total.flatten()
                k = min(2 * num_beams, int(torch.isfinite(flat).sum()))
                if k == 0:
                    break
                vals, idx = flat.topk(k)
                vocab = lp.shape[1]
                nxt = []
                for v, i in zip(vals.tolist(), idx.tolist(), strict=True):
                    s = beams[i // vocab][0] + [i % vocab]
                    if i % vocab == end:
                        finished.append((s, v))
                    elif len(nxt) < num_beams:
                        nxt.append((s, v))
                beams = nxt
                best_running = max((sc for _, sc in beams), default=float("-inf"))
                if len(finished) >= num_beams and best_running <= sorted(sc for _, sc in finished)[-num_beams]:
                    break  # log-probabilities only fall: no running beam can still enter the top num_beams
            finished.sort(key=lambda x: -x[1])
            top = (finished or beams)[:num_return]
            while len(top) < num_return:
                top.append(top[-1] if top else ([self.codec.start_id, end], float("-inf")))
            results.append([(s, sc) for s, sc in top])
        return results

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder)
        self.codec.save(folder)


def copy_bart_class() -> Any:
    """``CopyBartForConditionalGeneration``: BART with a pointer-generator output (See, Liu and Manning, "Get To The
    Point", ACL 2017), the copy-friendly setup for keys whose subject is written in the question.

    At each target position ``t`` the output distribution mixes generating and copying,

    ``p(y_t) = g_t * softmax(W h_t)[y_t] + (1 - g_t) * sum over source positions s with x_s = y_t of a[t, s]``,
    with the gate ``g_t = sigmoid(w·h_t + b)``, where ``a[t, s]`` is the last decoder layer's cross-attention
    (averaged over heads) on source token ``x_s``. The returned ``logits`` are ``log p`` (already normalised), so
    ``generate()``'s log-softmax leaves them unchanged. The source ids reach the decoder steps of ``generate()`` as
    the ``decoder_source_ids`` keyword (the ``decoder_`` prefix keeps it away from the encoder).
    """
    import torch
    from torch import nn
    from transformers import BartForConditionalGeneration
    from transformers.modeling_outputs import Seq2SeqLMOutput
    from transformers.models.bart.modeling_bart import shift_tokens_right

    class CopyBartForConditionalGeneration(BartForConditionalGeneration):
        def __init__(self, config: Any):
            super().__init__(config)
            self.copy_gate = nn.Linear(config.d_model, 1)

        def forward(  # type: ignore[override]
            self,
            input_ids: Any = None,
            attention_mask: Any = None,
            decoder_input_ids: Any = None,
            encoder_outputs: Any = None,
            cache: Any = None,
            labels: Any = None,
            use_cache: Any = None,
            decoder_source_ids: Any = None,
            **kwargs: Any,
        ) -> Any:
            for k in ("output_attentions", "output_hidden_states", "return_dict"):
                kwargs.pop(k, None)
            if labels is not None and decoder_input_ids is None:
                decoder_input_ids = shift_tokens_right(
                    labels, self.config.pad_token_id, self.config.decoder_start_token_id
                )
            out = super().forward(
                input_ids=input_ids,
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids,
                encoder_outputs=encoder_outputs,
                cache=cache,
                use_cache=use_cache,
                output_attentions=True,
                output_hidden_states=True,
                return_dict=True,
                **kwargs,
            )
            src = decoder_source_ids if decoder_source_ids is not None else input_ids
            if src is None:
                raise NlptoolError("the copy model needs the source ids (decoder_source_ids) to decode")
            attn = out.cross_attentions[-1].float().mean(1)  # (B, T, S)
            gate = torch.sigmoid(self.copy_gate(out.decoder_hidden_states[-1])).float()  # (B, T, 1)
            probs = torch.softmax(out.logits.float(), -1) * gate
            index = src[:, None, :].expand(-1, attn.shape[1], -1)
            probs = probs.scatter_add(2, index, attn * (1 - gate))
            logp = torch.log(probs.clamp_min(1e-12))
            loss = None
            if labels is not None:
                loss = nn.functional.nll_loss(logp.flatten(0, 1), labels.flatten(), ignore_index=-100)
            return Seq2SeqLMOutput(
                loss=loss,
                logits=logp,
                cache=out.cache,
                encoder_last_hidden_state=out.encoder_last_hidden_state,
            )

    return CopyBartForConditionalGeneration


# ---------------------------------------------------------------------------------------------------------------------
# The model folder: backbone + codec + KB + trie


@dataclass
class Candidate:
    """One decoded key: the triple (first object), every object of the KB entry, the score (sum of log-probs) and
    whether the key exists in the KB (always true under the trie)."""

    subject: str
    predicate: str
    object: str
    score: float
    in_kb: bool
    objects: list[str] = field(default_factory=list)

    @property
    def answer(self) -> str:
        return format_answer(self.subject, self.predicate, self.object)

    def as_dict(self) -> dict:
        return {"answer": self.answer, "score": self.score, "in_kb": self.in_kb, "objects": self.objects}


@dataclass
class DecodeOptions:
    """How :meth:`KgqaModel.answer` decodes (see :class:`TrieLogitsProcessor`)."""

    num_beams: int = 5
    top_k: int = 1
    constrained: bool = True
    renormalize: bool = False
    lookahead: bool = False
    subject_in_question: bool = False
    batch_size: int = 32


def _backbone_kind(model: Any) -> str:
    return "seq2seq" if getattr(model.config, "is_encoder_decoder", False) else "unilm"


class KgqaModel:
    """A kg-qa model: a backbone (``bart-char``, ``seq2seq`` or ``unilm``), its codec, the KB and the KB's trie."""

    def __init__(self, backbone: Any, kb: KnowledgeBase, *, config: dict, trie: TokenTrie | None = None):
        self.backbone = backbone
        self.codec = backbone.codec
        self.kb = kb
        self.config = config
        self.max_question = int(config.get("max_question_tokens", 64))
        if trie is None:
            trie, collisions = build_trie(kb, self.codec)
            self.collisions = collisions
        else:
            self.collisions = 0
        self.trie = trie
        self.max_key = int(np.diff(trie.offsets.astype(np.int64)).max()) if len(trie) else 1

    # -- construction -------------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        kb: KnowledgeBase,
        questions: Iterable[str],
        *,
        model: str | None = None,
        backbone: str | None = None,
        d_model: int = 256,
        layers: int = 3,
        heads: int = 4,
        ffn: int = 1024,
        dropout: float = 0.1,
        max_question_tokens: int = 64,
        copy: bool = True,
    ) -> KgqaModel:
        """A fresh model. ``model=None``: a char BART of the given size, randomly initialised (with the copy
        mechanism of :func:`copy_bart_class` unless ``copy=False``); else a pretrained checkpoint (seq2seq, or a
        BERT-family masked LM used UniLM-style; ``backbone`` forces the choice)."""
        if model is None:
            if backbone not in (None, "bart-char"):
                raise NlptoolError(f"--backbone {backbone} needs --model (a pretrained checkpoint)")
            from transformers import BartConfig, BartForConditionalGeneration

            codec = CharCodec.from_texts([*questions, *kb.strings()])
            max_pos = max(max_question_tokens, 32) + 512
            cfg = BartConfig(
                vocab_size=len(codec),
                d_model=d_model,
                encoder_layers=layers,
                decoder_layers=layers,
                encoder_attention_heads=heads,
                decoder_attention_heads=heads,
                encoder_ffn_dim=ffn,
                decoder_ffn_dim=ffn,
                max_position_embeddings=max_pos,
                dropout=dropout,
                attention_dropout=0.0,
                activation_dropout=0.0,
                pad_token_id=codec.pad_id,
                bos_token_id=codec.start_id,
                eos_token_id=codec.end_id,
                decoder_start_token_id=codec.start_id,
                forced_bos_token_id=None,
                forced_eos_token_id=None,
                scale_embedding=True,
                tie_word_embeddings=True,
            )
            if copy:
                cfg.kgqa_copy = True
                cfg._attn_implementation = "eager"  # the copy distribution reads the cross-attention weights
                net = copy_bart_class()(cfg)
            else:
                net = BartForConditionalGeneration(cfg)
            bb: Any = Seq2SeqBackbone(net, codec, "bart-char")
            kind = "bart-char"
        else:
            net, tok, kind = _load_pretrained(model, backbone)
            bb = _wrap(net, tok, kind)
        config = {
            "format": FORMAT_VERSION,
            "backbone": kind,
            "source_model": model,
            "max_question_tokens": max_question_tokens,
        }
        return cls(bb, kb, config=config)

    # -- answering ----------------------------------------------------------------------------------------------------
    def encode_questions(self, questions: Sequence[str]) -> list[list[int]]:
        return [self.codec.encode_question(q, self.max_question) for q in questions]

    def answer(
        self,
        questions: Sequence[str],
        options: DecodeOptions | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[list[Candidate]]:
        """The top ``options.top_k`` candidates per question, best first."""
        import torch

        opt = options or DecodeOptions()
        if opt.top_k < 1 or opt.num_beams < opt.top_k:
            raise NlptoolError(f"need 1 <= top_k <= num_beams, got top_k={opt.top_k}, num_beams={opt.num_beams}")
        if (opt.lookahead or opt.subject_in_question or opt.renormalize) and not opt.constrained:
            raise NlptoolError("--lookahead, --subject-in-question and --renormalize work with the trie only")
        sep = self.codec.sep_id
        trie = self.trie

        def make(qs: Sequence[list[int]], beams: int) -> TrieLogitsProcessor:
            return TrieLogitsProcessor(
                trie,
                qs,
                num_beams=beams,
                renormalize=opt.renormalize,
                lookahead=opt.lookahead,
                subject_in_question=opt.subject_in_question,
                sep_id=sep,
            )

        net = self.backbone.model
        was_training = net.training
        net.eval()
        out: list[list[Candidate]] = []
        try:
            for start in range(0, len(questions), opt.batch_size):
                chunk = questions[start : start + opt.batch_size]
                with torch.no_grad():
                    beams = self.backbone.generate(
                        self.encode_questions(chunk),
                        make if opt.constrained else None,
                        num_beams=opt.num_beams,
                        num_return=opt.num_beams if opt.num_beams > 1 else 1,
                        max_new_tokens=self.max_key + 1,
                    )
                for cands in beams:
                    out.append(self._candidates(cands, opt.top_k, opt.constrained))
                if on_batch is not None:
                    on_batch(len(chunk))
        finally:
            net.train(was_training)
        return out

    def _candidates(self, cands: list[tuple[list[int], float]], top_k: int, constrained: bool) -> list[Candidate]:
        seen: set[tuple[str, str, str]] = set()
        res: list[Candidate] = []
        for ids, score in cands:
            if not math.isfinite(score):
                continue  # a beam slot that no allowed continuation could fill
            value = self.trie.get(ids) if ids and ids[-1] == self.trie.end else None
            if value is None and constrained:
                continue  # unfinished at the length limit (beam search returns it when too few keys finish)
            if value is not None:
                s, p, objs = self.kb.entry(value)
                c = Candidate(s, p, objs[0], score, True, list(objs))
            else:
                c = self._unmatched(ids, score)
            key = (c.subject, c.predicate, c.object)
            if key in seen:
                continue
            seen.add(key)
            res.append(c)
            if len(res) == top_k:
                break
        return res

    def _unmatched(self, ids: list[int], score: float) -> Candidate:
        """A key the trie does not hold (unconstrained decoding): split on the separator, no object."""
        body = [t for t in ids[1:] if t not in (self.codec.end_id, self.codec.pad_id)]
        sep = self.codec.sep_ids
        parts: list[list[int]] = [[]]
        i = 0
        while i < len(body):
            if body[i : i + len(sep)] == sep and len(parts) < 3:
                parts.append([])
                i += len(sep)
            else:
                parts[-1].append(body[i])
                i += 1
        while len(parts) < 3:
            parts.append([])
        base, pred, meaning = (self.codec.decode(p) for p in parts)
        return Candidate(join_subject(base, meaning), pred, "", score, False, [])

    # -- files --------------------------------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, *, kb_path: str | None, copy_kb: bool = True) -> None:
        """Write the model, codec, trie and config into ``folder``; the KB is copied (``kb.tsv``) or referenced by path
        and SHA-256."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backbone.save(folder)
        cfg = dict(self.config)
        if copy_kb or kb_path is None:
            tmp = folder / f".{KB_FILE}.tmp"
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                write_kb(self.kb, fh)
            os.replace(tmp, folder / KB_FILE)
            cfg["kb"] = {"file": KB_FILE, "sha256": file_sha256(folder / KB_FILE), "source": kb_path}
        else:
            cfg["kb"] = {"path": str(Path(kb_path).resolve()), "sha256": file_sha256(kb_path)}
        cfg["kb"].update(entries=len(self.kb), triples=self.kb.triples)
        self.trie.save(folder / TRIE_FILE, meta={"kb_sha256": cfg["kb"]["sha256"], "codec": self.codec.kind})
        (folder / CONFIG_FILE).write_text(
            json.dumps(cfg, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        self.config = cfg

    @classmethod
    def load(cls, folder: str | os.PathLike, *, kb_path: str | None = None, device: str = "cpu") -> KgqaModel:
        """Load a folder written by :meth:`save`; ``kb_path`` replaces its KB (and the trie is rebuilt).

        A folder of another kind (a sentence encoder, an NER model) is refused with a line that says what it is, and a
        damaged or incomplete folder with a line that names the file (:mod:`nlptool.core.models`)."""
        from nlptool.core.models import (
            KG_QA,
            ResolvedModel,
            check_folder_files,
            check_model_folder,
            damaged,
            load_model,
            read_json_file,
        )

        shown = folder
        folder = check_model_folder(
            folder, accept={KG_QA}, role="a kg-qa model folder", hint="train one with 'nlptool kg-qa train'"
        )
        cfg_file = folder / CONFIG_FILE
        if not cfg_file.is_file():
            raise NlptoolError(
                f"{shown} has no {CONFIG_FILE}, so the kg-qa model folder is incomplete; retrain it with "
                "'nlptool kg-qa train'"
            )
        cfg = read_json_file(cfg_file)
        version = cfg.get("format")
        if isinstance(version, bool) or not isinstance(version, int):
            raise damaged(cfg_file, f"'format' is {version!r}, not a format number")
        if version != FORMAT_VERSION:
            raise NlptoolError(f"{shown}: kg-qa format {version}; this nlptool reads {FORMAT_VERSION}")
        kind = cfg.get("backbone")
        if kind not in BACKBONES:
            raise damaged(cfg_file, f"'backbone' is {kind!r}, not one of {', '.join(BACKBONES)}")
        info = cfg.get("kb")
        if kb_path is None and (
            not isinstance(info, dict)
            or not isinstance(info.get("sha256"), str)
            or not isinstance(info.get("file", info.get("path")), str)
        ):
            raise damaged(cfg_file, "'kb' does not give the file and SHA-256 of the knowledge base")
        max_question = cfg.get("max_question_tokens", 64)
        if isinstance(max_question, bool) or not isinstance(max_question, int) or max_question < 1:
            raise damaged(cfg_file, f"'max_question_tokens' is {max_question!r}, not a positive integer")
        trie = None
        if kb_path is not None:
            kb = read_kb(kb_path)
        else:
            assert isinstance(info, dict)
            if "file" in info:
                kb_file = folder / info["file"]
                if not kb_file.is_file():
                    raise NlptoolError(f"{kb_file} is missing, so the kg-qa model folder is incomplete; pass --kb")
            else:
                kb_file = Path(info["path"])
                if not kb_file.is_file():
                    raise NlptoolError(f"the KB this model was trained with, {kb_file}, is gone; pass --kb")
            if file_sha256(kb_file) != info["sha256"]:
                if "file" in info:
                    raise damaged(
                        kb_file,
                        f"its SHA-256 differs from the one {CONFIG_FILE} records",
                        fix="retrain the model, or pass --kb with the knowledge base it was trained on",
                    )
                raise NlptoolError(f"the KB {kb_file} changed since training (SHA-256 differs); pass --kb to use it")
            kb = read_kb(kb_file)
            if (folder / TRIE_FILE).is_file():
                try:
                    trie, meta = TokenTrie.load(folder / TRIE_FILE)
                except NlptoolError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a damaged .npz fails in zipfile, zlib or numpy
                    raise damaged(
                        folder / TRIE_FILE,
                        f"{type(exc).__name__}: {str(exc).strip()[:160]}",
                        fix="rebuild it with 'nlptool kg-qa build-trie', or delete it",
                    ) from None
                if not isinstance(meta, dict) or meta.get("kb_sha256") != info["sha256"]:
                    trie = None
        check_folder_files(folder, weights=True)
        if kind == "bart-char":
            from transformers import BartForConditionalGeneration

            if not (folder / VOCAB_FILE).is_file():
                raise NlptoolError(
                    f"{folder / VOCAB_FILE} is missing, so the kg-qa model folder is incomplete; retrain it with "
                    "'nlptool kg-qa train'"
                )
            vocab = read_json_file(folder / VOCAB_FILE)
            chars = vocab.get("chars") if isinstance(vocab, dict) else None
            if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
                raise damaged(folder / VOCAB_FILE, "no 'chars' list of strings")
            codec: Any = CharCodec(chars)
            bart_cfg = read_json_file(folder / "config.json")
            model_class = copy_bart_class() if bart_cfg.get("kgqa_copy") else BartForConditionalGeneration
            extra = {"attn_implementation": "eager"} if bart_cfg.get("kgqa_copy") else {}
            net = load_model(ResolvedModel("local", str(folder), str(shown)), model_class, **extra)
            if net.config.vocab_size < len(codec):
                raise damaged(
                    folder / VOCAB_FILE, f"{len(codec)} symbols, more than the model's {net.config.vocab_size}"
                )
            bb: Any = Seq2SeqBackbone(net, codec, kind)
        else:
            check_folder_files(folder, tokenizer=True)
            try:
                net, tok, _ = _load_pretrained(str(folder), kind)
            except NlptoolError:
                raise
            except Exception as exc:  # noqa: BLE001 - a damaged folder fails deep inside transformers
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                raise NlptoolError(
                    f"could not load the model in {shown} ({type(exc).__name__}: {first}); the folder is damaged: "
                    "retrain it with 'nlptool kg-qa train'"
                ) from None
            bb = _wrap(net, tok, kind)
        bb.model.to(device)
        return cls(bb, kb, config=cfg, trie=trie)


def _load_pretrained(name: str, backbone: str | None) -> tuple[Any, Any, str]:
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from nlptool.core.errors import ModelNotFoundError

    try:
        cfg = AutoConfig.from_pretrained(name)
        tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"cannot load model '{name}' ({str(exc).splitlines()[0]}); give a local folder or a "
            "hub id (with network access)"
        ) from None
    kind = backbone or ("seq2seq" if getattr(cfg, "is_encoder_decoder", False) else "unilm")
    if kind == "seq2seq":
        if not getattr(cfg, "is_encoder_decoder", False):
            raise NlptoolError(f"'{name}' is not an encoder-decoder model; use --backbone unilm for BERT-family models")
        net = AutoModelForSeq2SeqLM.from_pretrained(name)
    elif kind == "unilm":
        net, report = AutoModelForMaskedLM.from_pretrained(name, output_loading_info=True)
        missing = [k for k in report.get("missing_keys", []) if "decoder" not in k or "bias" in k]
        head_missing = [k for k in missing if k.startswith("cls.") or "lm_head" in k or "predictions" in k]
        if head_missing:
            raise NlptoolError(
                f"'{name}' has no masked-LM head ({', '.join(sorted(head_missing)[:3])} missing); "
                "UniLM decoding needs a checkpoint with its MLM head"
            )
        if tok.sep_token_id is None or tok.cls_token_id is None:
            raise NlptoolError(f"the tokenizer of '{name}' has no [CLS]/[SEP] tokens; UniLM needs a BERT-family one")
    else:
        raise NlptoolError(f"unknown backbone '{kind}'; choose one of {', '.join(BACKBONES)}")
    return net, tok, kind


def _wrap(net: Any, tok: Any, kind: str) -> Any:
    if kind == "seq2seq":
        start = net.config.decoder_start_token_id
        if start is None:
            start = tok.bos_token_id if tok.bos_token_id is not None else tok.pad_token_id
        end = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        return Seq2SeqBackbone(net, HFCodec(tok, start_id=start, end_id=end), kind)
    return UniLMBackbone(net, HFCodec(tok, start_id=tok.sep_token_id, end_id=tok.sep_token_id))


def training_pairs(model: KgqaModel, examples: Sequence[QAExample]) -> list[tuple[list[int], list[int]]]:
    """``(question ids, key ids)`` per example (key ids without the root, ending with the end token)."""
    qs = model.encode_questions([e.question for e in examples])
    out = []
    for q, e in zip(qs, examples, strict=True):
        assert e.answer is not None
        out.append((q, key_ids(model.codec, e.answer[0], e.answer[1])))
    return out


def predictions_of(cands: Sequence[Sequence[Candidate]]) -> list[str]:
    """The top answer per question (``' |||  ||| '`` when there is none)."""
    return [c[0].answer if c else format_answer("", "", "") for c in cands]


def fit(
    model: KgqaModel,
    examples: Sequence[QAExample],
    config: Any,
    *,
    dev: Sequence[QAExample] | None = None,
    eval_options: DecodeOptions | None = None,
    on_progress: Callable[[dict], None] | None = None,
) -> Any:
    """Train ``model`` on ``examples`` with the shared loop (:func:`nlptool.core.train.train`, a ``TrainConfig``).

    With ``dev``, KgCLUE's Score on ``dev`` (decoded with ``eval_options``, by default :class:`DecodeOptions`'
    defaults: the beam width and mode that prediction uses) is computed every evaluation and the best weights are
    restored at the end. Choose the decoding you will predict with: an undertrained model's flat probabilities can
    score well greedily yet make mask-only beam search prefer short wrong keys. Returns the loop's ``TrainResult``.
    """
    import torch

    from nlptool.core.train import train, unwrap_model

    pairs = training_pairs(model, examples)
    bb = model.backbone
    evaluate = save_best = None
    if dev:
        opts = eval_options or DecodeOptions()
        questions = [e.question for e in dev]
        refs = [format_answer(*e.answer) for e in dev]  # type: ignore[misc]

        def evaluate(_m: Any) -> dict[str, float]:
            return kgclue_scores(predictions_of(model.answer(questions, opts)), refs)

        def save_best(m: Any, folder: Path) -> None:
            torch.save(unwrap_model(m).state_dict(), Path(folder) / "model.pt")

        config.metric = "Score"
        config.greater_is_better = True
    result = train(
        bb.model,
        pairs,
        bb.collate,
        bb.loss,
        config,
        evaluate=evaluate,
        save_best=save_best,
        lengths=[len(q) + len(k) for q, k in pairs],
        on_progress=on_progress,
    )
    best = Path(config.output_dir) / "best" / "model.pt" if config.output_dir else None
    if dev and best is not None and best.is_file():
        bb.model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True))
    return result

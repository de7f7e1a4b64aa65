"""Constrained decoding of kg-qa: :class:`TrieLogitsProcessor` masks every decoding step to the continuations the
KB's trie allows (with Su's renormalisation, look-ahead and subject-in-question options), :func:`token_lcs` for the
look-ahead, :class:`DecodeOptions` (how :meth:`KgqaModel.answer <nlptool.core.kgqa.model.KgqaModel.answer>` decodes)
and :class:`Candidate` (one decoded triple)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nlptool.core.errors import NlptoolError
from nlptool.core.kgqa.answers import format_answer
from nlptool.core.trie import TokenTrie


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

    def select_items(self, keep: Sequence[int]) -> None:
        """From now on row ``r`` belongs to batch item ``keep[r // num_beams]`` of the current numbering (a search
        that drops settled questions calls this)."""
        if self.questions is not None:
            self.questions = [self.questions[i] for i in keep]
        new = {old: i for i, old in enumerate(keep)}
        self._lcs_cache = {(new[b], seq): v for (b, seq), v in self._lcs_cache.items() if b in new}

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

    def allowed_rows(self, rows: Sequence[list[int]], vocab: int) -> list[np.ndarray]:
        """The allowed next tokens of every row (prefixes root first; rows batch-major), limited to ids below
        ``vocab`` (the model's output size)."""
        out = []
        for r, seq in enumerate(rows):
            allowed = self.allowed_tokens(seq, r)
            if len(allowed) and allowed[-1] >= vocab:  # sorted: only a tokenizer larger than the head gets here
                allowed = allowed[allowed < vocab]
            out.append(allowed)
        return out

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        rows = input_ids.tolist()
        return self.process(rows, scores, self.allowed_rows(rows, scores.shape[1]))

    def process(self, rows: Sequence[list[int]], scores: Any, allowed_rows: Sequence[np.ndarray]) -> Any:
        """:meth:`__call__` with the rows as lists and their allowed sets (:meth:`allowed_rows`) already known."""
        import torch

        if not self.scores_are_logprobs:  # greedy search hands raw logits, beam search log-probabilities
            scores = torch.log_softmax(scores.float(), dim=-1)
        n, vocab = scores.shape
        row_idx: list[np.ndarray] = []
        col_idx: list[np.ndarray] = []
        reweight: list[tuple[int, np.ndarray, np.ndarray]] = []
        for r, (seq, allowed) in enumerate(zip(rows, allowed_rows, strict=True)):
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

    def forced_run(self, seq: list[int], row: int, first: int, limit: int, vocab: int) -> list[int]:
        """The tokens that row ``row`` (prefix ``seq``, whose only allowed next token is ``first``) is forced to take:
        ``first`` and then every token that is again the only one allowed, at most ``limit`` tokens. A forced token's
        processed log-probability is the model's (mask-only) or 0 (renormalised), and look-ahead never reweights a
        single allowed token, so the run can be scored without the processor."""
        run = [first]
        cur = [*seq, first]
        while len(run) < limit:
            allowed = self.allowed_tokens(cur, row)
            if len(allowed) != 1 or allowed[0] >= vocab:
                break
            run.append(int(allowed[0]))
            cur.append(run[-1])
        return run


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
    """How :meth:`KgqaModel.answer` decodes (see :class:`TrieLogitsProcessor`).

    ``fast_forward`` (encoder-decoder backbones, with the trie): nlptool's own beam search
    (:func:`~nlptool.core.kgqa.search.seq2seq_search`), which appends the tokens the trie forces on every live beam
    without a decoder step per token, and decodes questions in batches of similar length. It returns the keys and
    scores of ``generate()``'s beam search (``fast_forward=False``, kept as the reference) up to float rounding.
    """

    num_beams: int = 5
    top_k: int = 1
    constrained: bool = True
    renormalize: bool = False
    lookahead: bool = False
    subject_in_question: bool = False
    batch_size: int = 32
    fast_forward: bool = True

    def params(self) -> dict[str, Any]:
        """The decoding settings as ``metrics.json`` records them (``trie``: constrained decoding)."""
        return {
            "num_beams": self.num_beams,
            "top_k": self.top_k,
            "trie": self.constrained,
            "renormalize": self.renormalize,
            "lookahead": self.lookahead,
            "subject_in_question": self.subject_in_question,
        }


def prediction_record(record: dict, candidates: Sequence[Candidate]) -> dict:
    """An input row with its prediction (KgCLUE's submission format): ``answer``, the top triple ``'S ||| P ||| O'``
    (``' |||  ||| '`` when there is none), and ``candidates``, each as :meth:`Candidate.as_dict`."""
    return {
        **record,
        "answer": candidates[0].answer if candidates else format_answer("", "", ""),
        "candidates": [c.as_dict() for c in candidates],
    }

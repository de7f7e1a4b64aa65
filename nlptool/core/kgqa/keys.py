"""Codecs and keys of kg-qa: how questions and KB keys become token ids (:class:`CharCodec` for the char BART,
:class:`HFCodec` for a Hugging Face tokenizer), the key ``base [SEP] predicate [SEP] meaning <end>`` (:func:`key_ids`)
and the KB's trie of keys (:func:`build_trie`, :func:`build_trie_from_file`; the data structure is
:class:`nlptool.core.trie.TokenTrie`)."""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nlptool.core.errors import NlptoolError
from nlptool.core.kgqa.answers import split_subject
from nlptool.core.kgqa.data import KnowledgeBase, clean_chars, iter_kb_file
from nlptool.core.trie import TokenTrie

VOCAB_FILE = "kgqa_vocab.json"


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
        """The characters of the texts after whitespace normalisation (streamed; :func:`clean_chars`)."""
        return cls(sorted(clean_chars(texts)))

    @classmethod
    def from_kb(cls, kb: KnowledgeBase, questions: Iterable[str] = ()) -> CharCodec:
        """``from_texts([*questions, *kb.strings()])`` without one Python string per KB string: the KB's characters
        come from its byte buffers (:meth:`KnowledgeBase.chars`)."""
        return cls(sorted(clean_chars(questions) | kb.chars()))

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


def trie_choices(trie: TokenTrie, key: Sequence[int]) -> list[tuple[int, np.ndarray]]:
    """Where the trie gives ``key`` (token ids without the root, as :func:`key_ids` makes them) a choice:
    ``(position in key, the tokens allowed there)`` for every position whose prefix (root + ``key[:position]``) has
    two or more continuations. A key that leaves the trie (an answer that is not a KB triple) stops at the last
    position whose token the trie allows, so every listed set contains the key's own token there."""
    out: list[tuple[int, np.ndarray]] = []
    node: Any = trie.root_node()
    for t, token in enumerate(key):
        allowed = trie.allowed(node)
        i = int(np.searchsorted(allowed, token))
        if i == len(allowed) or allowed[i] != token:
            break
        if len(allowed) > 1:
            out.append((t, allowed))
        node = trie.child(node, int(token))
        if node is None:
            break
    return out


def build_trie(kb: KnowledgeBase, codec: Any) -> tuple[TokenTrie, int]:
    """A trie of every KB key (values: KB entry indices); returns it and the number of keys that collided."""
    return TokenTrie.build(
        ((key_ids(codec, s, p), i) for i, (s, p) in enumerate(kb.keys())),
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

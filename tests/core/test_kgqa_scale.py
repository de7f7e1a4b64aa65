"""The compact knowledge base and the streaming trie build (issue 13, item 4) against oracles: the dict-of-tuples KB
that :class:`KnowledgeBase` replaced, the per-string vocabulary, and a plain sorted list of keys."""

from __future__ import annotations

import io
import random
from array import array

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nlptool.core import kgqa
from nlptool.core.kgqa.data import KnowledgeBase, clean_chars
from nlptool.core.kgqa.keys import CharCodec, build_trie, key_ids
from nlptool.core.trie import TokenTrie

from ..conftest import SAMPLE_DATA

KB_FILE = SAMPLE_DATA / "kgqa_kb.tsv"


class DictKB:
    """The KnowledgeBase before issue 13 (a dict of (subject, predicate) tuples and lists of strings): the oracle."""

    def __init__(self) -> None:
        self.subjects: list[str] = []
        self.predicates: list[str] = []
        self.objects: list[list[str]] = []
        self.index: dict[tuple[str, str], int] = {}
        self.triples = 0

    def add(self, s: str, p: str, o: str) -> None:
        i = self.index.get((s, p))
        if i is None:
            self.index[(s, p)] = len(self.subjects)
            self.subjects.append(s)
            self.predicates.append(p)
            self.objects.append([o])
        elif o not in self.objects[i]:
            self.objects[i].append(o)
        self.triples += 1

    def strings(self) -> list[str]:
        return [x for i in range(len(self.subjects)) for x in (self.subjects[i], self.predicates[i], *self.objects[i])]


class CollidingKB(KnowledgeBase):
    """Every key hashes to one of two values: the strings must tell the entries apart."""

    @staticmethod
    def _key_hash(subject: str, predicate: str) -> int:
        return len(subject) % 2


def old_vocabulary(texts: list[str]) -> set[str]:
    out: set[str] = set()
    for t in texts:
        out.update(" ".join(t.split()))
    return out


def assert_same(kb: KnowledgeBase, ref: DictKB) -> None:
    assert len(kb) == len(ref.subjects) and kb.triples == ref.triples
    for i in range(len(ref.subjects)):
        assert kb.entry(i) == (ref.subjects[i], ref.predicates[i], ref.objects[i])
        assert kb.index[(ref.subjects[i], ref.predicates[i])] == i == kb.index.get((ref.subjects[i], ref.predicates[i]))
        assert kb.subjects[i] == ref.subjects[i] and kb.predicates[i] == ref.predicates[i]
        assert kb.objects[i] == ref.objects[i]
        for o in ref.objects[i]:
            assert kb.has_triple(ref.subjects[i], ref.predicates[i], o)
        assert not kb.has_triple(ref.subjects[i], ref.predicates[i], "\x00absent")
    assert list(kb.strings()) == ref.strings()
    assert list(kb.keys()) == list(zip(ref.subjects, ref.predicates, strict=True))
    assert list(kb.index) == list(ref.index)
    assert ("\x00absent", "p") not in kb.index and kb.index.get(("\x00absent", "p")) is None
    with pytest.raises(KeyError):
        kb.index[("\x00absent", "p")]
    with pytest.raises(IndexError):
        kb.subjects[len(ref.subjects)]
    a, b = io.StringIO(), io.StringIO()
    kgqa.write_kb(kb, a)
    for i in range(len(ref.subjects)):
        for o in ref.objects[i]:
            b.write(f"{ref.subjects[i]}\t{ref.predicates[i]}\t{o}\n")
    assert a.getvalue() == b.getvalue()
    assert kb.chars() == old_vocabulary(ref.strings())


WORDS = ["甲", "乙", "丙", "a b", "x", "y\u3000z", " 丁", "戊 ", "（丙）", "é", "\x1c", "q\x1cr"]
text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map("".join)
triples = st.lists(st.tuples(text, st.sampled_from(["p", "谓 词", "q"]), text), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(triples, st.booleans())
def test_random_kbs_answer_like_the_dict_kb(rows, colliding):
    kb, ref = (CollidingKB() if colliding else KnowledgeBase()), DictKB()
    for s, p, o in rows:
        kb.add(s, p, o)
        ref.add(s, p, o)
    assert_same(kb, ref)
    kb.add("新", "p", "o")  # adding after a query regroups
    ref.add("新", "p", "o")
    assert_same(kb, ref)


def test_many_triples_with_repeats_and_collisions():
    rng = random.Random(3)
    kb, ref, coll = KnowledgeBase(), DictKB(), CollidingKB()
    for _ in range(5000):  # few subjects and predicates: most keys repeat, on lines far apart
        s = rng.choice("甲乙丙丁戊己庚辛") + str(rng.randint(0, 60))
        p, o = rng.choice(["p", "q", "r"]), str(rng.randint(0, 4))
        for k in (kb, ref, coll):
            k.add(s, p, o)
    assert len(ref.subjects) < 1500 < ref.triples
    assert_same(kb, ref)
    assert_same(coll, ref)


def test_the_sample_kb_reads_as_before():
    kb, ref = kgqa.read_kb(KB_FILE), DictKB()
    for _, s, p, o in kgqa.iter_kb_file(KB_FILE):
        ref.add(s, p, o)
    assert_same(kb, ref)


def test_memory_is_bytes_not_python_objects():
    kb = KnowledgeBase()
    for i in range(20_000):
        kb.add(f"主语{i}（意义）", f"谓词{i % 50}", f"宾语{i}")
    assert len(kb) == 20_000
    held = sum(x.buffer_info()[1] * x.itemsize for x in vars(kb).values() if isinstance(x, array))
    held += sum(len(x) for x in vars(kb).values() if isinstance(x, bytearray))
    g = kb._groups
    held += sum(v.nbytes for v in vars(g).values())
    assert held / 20_000 < 160  # the dict-of-tuples KB held about 550 bytes a triple


@settings(max_examples=60, deadline=None)
@given(st.lists(text, max_size=40))
def test_clean_chars_is_the_per_string_vocabulary(texts):
    assert clean_chars(texts, block=3) == old_vocabulary(texts)
    assert clean_chars(iter(texts)) == old_vocabulary(texts)


def test_from_kb_is_from_texts_of_every_string():
    kb = kgqa.read_kb(KB_FILE)
    questions = ["陆远舟的代表作品是什么？", "a  b"]
    assert CharCodec.from_kb(kb, questions).itos == CharCodec.from_texts([*questions, *kb.strings()]).itos
    kb.add("x\ny", "p", "o")  # a newline inside a string (only through add) takes the per-string path
    assert CharCodec.from_kb(kb).itos == CharCodec(sorted(old_vocabulary(list(kb.strings())))).itos


def oracle_trie(items: list[tuple[list[int], int]], end: int) -> tuple[list[tuple[int, ...]], list[int], int]:
    """Sorted distinct keys (end appended), the first value of each, and the number of duplicates."""
    first: dict[tuple[int, ...], int] = {}
    for seq, v in items:
        k = tuple(seq) if seq and seq[-1] == end else (*seq, end)
        first.setdefault(k, v)
    keys = sorted(first)
    return keys, [first[k] for k in keys], len(items) - len(keys)


@pytest.mark.parametrize("big_at", [None, 0, 250, 599])
@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_streaming_build_is_the_sorted_oracle(big_at, chunk_size):
    """Chunks packed with 2-byte tokens are widened when a token >= 65,536 comes later (or first, or never)."""
    rng = random.Random(chunk_size)
    end = 3
    items = [([rng.randint(4, 9) for _ in range(rng.randint(0, 5))], rng.randint(-5, 10**6)) for _ in range(600)]
    if big_at is not None:
        items[big_at] = ([70_000, 5], 42)
    items += items[:50]  # duplicates: the first value wins
    trie, dups = TokenTrie.build(items, root=2, end=end, chunk_size=chunk_size)
    keys, values, expect_dups = oracle_trie(items, end)
    assert dups == expect_dups
    assert trie.tokens.dtype == (np.uint16 if big_at is None else np.uint32)
    assert [tuple(trie.key(i)[1:]) for i in range(len(trie))] == keys
    assert trie.values.tolist() == values
    assert trie.offsets.tolist() == np.cumsum([0, *map(len, keys)]).tolist()


def test_the_kb_trie_is_the_oracle_trie():
    kb = kgqa.read_kb(KB_FILE)
    codec = CharCodec.from_kb(kb)
    trie, dups = build_trie(kb, codec)
    keys, values, expect = oracle_trie([(key_ids(codec, *kb.entry(i)[:2]), i) for i in range(len(kb))], codec.end_id)
    assert dups == expect == 0
    assert [tuple(trie.key(i)[1:]) for i in range(len(trie))] == keys and trie.values.tolist() == values
    assert trie.tokens.dtype == np.uint16 and trie.offsets.dtype == np.int32 and trie.values.dtype == np.int32

"""The sorted-array trie against a brute-force oracle (the key list itself) and a nested-dict trie."""

from __future__ import annotations

import random

import numpy as np
import pytest

from nlptool.core.errors import NlptoolError
from nlptool.core.trie import DictTrie, TokenTrie

ROOT, END = 1, 2


def oracle_allowed(keys: list[tuple[int, ...]], prefix: tuple[int, ...]) -> list[int]:
    n = len(prefix)
    return sorted({k[n] for k in keys if len(k) > n and k[:n] == prefix})


def test_prefix_keys_stay_reachable():
    # "5" is a prefix of "5 6" which is a prefix of "5 6 7": the explicit end token keeps all three apart
    trie, dups = TokenTrie.build([([5], 10), ([5, 6], 11), ([5, 6, 7], 12), ([8], 13)], root=ROOT, end=END)
    assert dups == 0 and len(trie) == 4
    root = trie.root_node()
    assert trie.allowed(root).tolist() == [5, 8]
    n5 = trie.child(root, 5)
    assert trie.allowed(n5).tolist() == [END, 6]
    n56 = trie.child(n5, 6)
    assert trie.allowed(n56).tolist() == [END, 7]
    assert trie.get([ROOT, 5, END]) == 10
    assert trie.get([ROOT, 5, 6, END]) == 11
    assert trie.get([ROOT, 5, 6, 7, END]) == 12
    assert trie.get([ROOT, 5, 6]) is None  # a prefix, not a key
    assert [ROOT, 5, 6, END] in trie and [ROOT, 5, 6, 7, 8, END] not in trie
    assert trie.walk([ROOT, 9]) is None
    assert trie.walk([3, 5]) is None  # wrong root
    # completions of a prefix, in sorted order (END=2 sorts before 6)
    assert trie.complete([ROOT, 5]) == [([ROOT, 5, END], 10), ([ROOT, 5, 6, END], 11), ([ROOT, 5, 6, 7, END], 12)]
    assert trie.complete([ROOT, 5], limit=1) == [([ROOT, 5, END], 10)]
    done = trie.walk([ROOT, 8, END])
    assert trie.is_complete(done) and trie.allowed(done).tolist() == [] and trie.value(done) == 13


def test_duplicates_keep_the_first_value():
    trie, dups = TokenTrie.build([([4, 4], 1), ([3], 2), ([4, 4, END], 3)], root=ROOT, end=END)
    assert dups == 1 and trie.get([ROOT, 4, 4, END]) == 1


def test_end_inside_a_key_is_an_error():
    with pytest.raises(NlptoolError, match="end token"):
        TokenTrie.build([([4, END, 5], 1)], root=ROOT, end=END)


@pytest.mark.parametrize("chunk_size", [7, 100_000])
def test_random_keys_match_the_oracle_and_the_dict_trie(chunk_size):
    rng = random.Random(0)
    keys: dict[tuple[int, ...], int] = {}
    for i in range(600):  # small alphabet: many shared prefixes and prefix keys
        k = tuple(rng.randint(3, 7) for _ in range(rng.randint(1, 6)))
        keys.setdefault(k, i)
    items = [(list(k), v) for k, v in keys.items()]
    rng.shuffle(items)
    trie, dups = TokenTrie.build(items, root=ROOT, end=END, chunk_size=chunk_size)
    assert dups == 0 and len(trie) == len(keys)
    full = [(*k, END) for k in keys]
    dict_trie = DictTrie(END)
    for k, v in keys.items():
        dict_trie.insert([ROOT, *k, END], v)
    for k, v in keys.items():
        assert trie.get([ROOT, *k, END]) == v
        node = trie.root_node()
        for j in range(len(k) + 1):
            expect = oracle_allowed(full, (*k[:j],))
            assert trie.allowed(node).tolist() == expect
            assert sorted(dict_trie.allowed([ROOT, *k[:j]])) == expect
            assert trie.count(node) == sum(1 for f in full if f[:j] == k[:j])
            if j < len(k):
                node = trie.child(node, k[j])
    assert trie.child(trie.root_node(), 99) is None


def test_large_token_ids_use_uint32_and_save_load_round_trip(tmp_path):
    trie, _ = TokenTrie.build([([70000, 5], 0), ([5], 1)], root=ROOT, end=END)
    assert trie.tokens.dtype == np.uint32
    small, _ = TokenTrie.build([([300, 5], 0)], root=ROOT, end=END)
    assert small.tokens.dtype == np.uint16
    path = tmp_path / "t.npz"
    trie.save(path, meta={"kb_sha256": "abc"})
    again, meta = TokenTrie.load(path)
    assert meta == {"kb_sha256": "abc"}
    assert again.get([ROOT, 70000, 5, END]) == 0 and again.get([ROOT, 5, END]) == 1
    assert again.nbytes == trie.nbytes


def test_unreadable_trie_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(NlptoolError, match="rebuild it"):
        TokenTrie.load(bad)


def test_memory_is_arrays_not_dicts():
    rng = random.Random(1)
    items = [([rng.randint(5, 3000) for _ in range(20)], i) for i in range(2000)]
    trie, _ = TokenTrie.build(items, root=ROOT, end=END)
    # uint16 tokens (21 per key with the end) + int32 offsets + int32 values
    assert trie.nbytes == 2000 * 21 * 2 + 2001 * 4 + 2000 * 4

"""A memory-lean prefix tree (trie) of token sequences, for constrained decoding.

The keys are stored as **sorted token sequences** in two flat numpy arrays, not as nested Python dicts (which cost
about 2 KiB per key: tens of GB for a 20M-triple knowledge base):

- ``tokens``: every key's tokens, keys concatenated in lexicographic order (``uint16`` when every token id fits,
  else ``uint32``);
- ``offsets``: ``offsets[i]`` is where key ``i`` starts in ``tokens`` (``offsets[n]`` = ``len(tokens)``);
- ``values``: one ``int64`` payload per key (for kg-qa: the index of the knowledge-base entry).

Every key ends with the explicit ``end`` token, so a key that is a prefix of another (``A`` and ``AB``) stays
reachable: ``A <end>`` and ``A B <end>`` are distinct paths. The trie is rooted at ``root`` (a seq2seq model's
decoder start token): ``walk([root, t1, t2])`` follows the tokens after the root.

A **node** is the triple ``(lo, hi, depth)``: the keys ``lo..hi-1`` share their first ``depth`` tokens (the path to
the node). Because the keys are sorted, the tokens at position ``depth`` of those keys are sorted too, so the
children of a node are the runs of that column, and stepping to a child is two binary searches. Children of large
nodes (the root, the first characters) are cached; small nodes are answered from a gather of at most ``hi - lo``
tokens. Memory: ``itemsize * (mean key length) + 16`` bytes per key (about 70 bytes for KgCLUE keys with uint16).

Building streams: :meth:`TokenTrie.build` takes any iterable of ``(sequence, value)`` pairs, sorts them in chunks
(each chunk packed into compact arrays) and merges the sorted chunks, so the Python objects of at most one chunk are
alive at a time. Duplicate sequences keep the first value; their count is reported.
"""

from __future__ import annotations

import heapq
import os
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from nlptool.core.errors import NlptoolError

Node = tuple[int, int, int]

_CACHE_MIN_KEYS = 64  # nodes spanning at least this many keys get their children cached
_FORMAT = 1


def _pack(seq: Sequence[int]) -> bytes:
    """Big-endian uint32 bytes: byte order equals the lexicographic order of the token sequences."""
    return np.asarray(seq, dtype=">u4").tobytes()


class TokenTrie:
    """A sorted-array trie; see the module docstring.

    Args:
        tokens: flat tokens of the sorted keys (each ends with ``end``; the root token is not stored).
        offsets: ``n + 1`` start offsets into ``tokens``.
        values: ``n`` payloads.
        root: the token every path starts with (decoder start token).
        end: the token that ends every key.
    """

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, values: np.ndarray, *, root: int, end: int):
        self.tokens = tokens
        self.offsets = offsets
        self.values = values
        self.root = int(root)
        self.end = int(end)
        self._cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    # -- building -----------------------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        items: Iterable[tuple[Sequence[int], int]],
        *,
        root: int,
        end: int,
        chunk_size: int = 1_000_000,
    ) -> tuple[TokenTrie, int]:
        """Build from ``(tokens, value)`` pairs (tokens without root; ``end`` appended when missing).

        Returns the trie and the number of duplicate sequences dropped (the first value wins).
        """
        if chunk_size < 1:
            raise NlptoolError("chunk_size must be >= 1")
        runs: list[tuple[bytes, np.ndarray, np.ndarray, int]] = []
        chunk: list[tuple[bytes, int, int]] = []
        serial = 0
        max_token = max(root, end)
        for seq, value in items:
            seq = list(seq)
            if not seq or seq[-1] != end:
                seq.append(end)
            if end in seq[:-1]:
                raise NlptoolError(f"a key contains the end token {end} before its last position: {seq[:20]}")
            m = max(seq)
            if m > max_token:
                max_token = m
            if min(seq) < 0:
                raise NlptoolError(f"negative token id in key {seq[:20]}")
            chunk.append((_pack(seq), serial, int(value)))  # serial: the first occurrence wins among duplicates
            serial += 1
            if len(chunk) >= chunk_size:
                runs.append(cls._pack_run(chunk, 2 if max_token < 2**16 else 4))
                chunk = []
        if chunk or not runs:
            runs.append(cls._pack_run(chunk, 2 if max_token < 2**16 else 4))
        del chunk
        width = 2 if max_token < 2**16 else 4
        runs = [cls._widen(r, width) for r in runs]  # a run packed narrow before a wide token came
        tok_out = bytearray()  # big-endian tokens of the merged keys
        off_out = array("q", [0])
        val_out = array("q")
        duplicates = 0
        position = 0
        previous: bytes | None = None
        for key, _serial, value in heapq.merge(*(cls._iter_run(r) for r in runs)):
            if key == previous:
                duplicates += 1
                continue
            previous = key
            tok_out += key
            position += len(key)
            off_out.append(position // width)
            val_out.append(value)
        del runs
        dtype = np.uint16 if width == 2 else np.uint32
        tokens = np.frombuffer(tok_out, dtype=">u2" if width == 2 else ">u4").astype(dtype)
        del tok_out
        offsets = np.frombuffer(off_out, dtype=np.int64).copy()
        del off_out
        if offsets[-1] < 2**31:
            offsets = offsets.astype(np.int32)
        values = np.frombuffer(val_out, dtype=np.int64).copy()
        del val_out
        if len(values) and values.min() >= -(2**31) and values.max() < 2**31:
            values = values.astype(np.int32)
        return cls(tokens, offsets, values, root=root, end=end), duplicates

    @staticmethod
    def _pack_run(chunk: list[tuple[bytes, int, int]], width: int) -> tuple[bytes, np.ndarray, np.ndarray, int]:
        """Sort a chunk and pack it: big-endian tokens of ``width`` bytes (2 while every token so far fits: the same
        order as 4 bytes, half the memory), token offsets, ``(serial, value)`` rows."""
        chunk.sort()
        lengths = np.fromiter((len(k) // 4 for k, _, _ in chunk), dtype=np.int64, count=len(chunk))
        offsets = np.zeros(len(chunk) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        del lengths
        flat = b"".join(k for k, _, _ in chunk)
        if width == 2:
            flat = np.frombuffer(flat, dtype=">u4").astype(">u2").tobytes()
        meta = np.fromiter((x for _, s, v in chunk for x in (s, v)), dtype=np.int64, count=2 * len(chunk))
        chunk.clear()
        return flat, offsets, meta.reshape(-1, 2), width

    @staticmethod
    def _widen(run: tuple[bytes, np.ndarray, np.ndarray, int], width: int) -> tuple[bytes, np.ndarray, np.ndarray, int]:
        flat, offsets, meta, w = run
        if w == width:
            return run
        return np.frombuffer(flat, dtype=">u2").astype(">u4").tobytes(), offsets, meta, width

    @staticmethod
    def _iter_run(run: tuple[bytes, np.ndarray, np.ndarray, int]) -> Iterator[tuple[bytes, int, int]]:
        data, offsets, meta, width = run
        block = 65_536  # Python ints for one block of keys at a time
        for a in range(0, len(offsets) - 1, block):
            b = min(a + block, len(offsets) - 1)
            offs = (offsets[a : b + 1] * width).tolist()
            serials = meta[a:b, 0].tolist()
            values = meta[a:b, 1].tolist()
            for i in range(b - a):
                yield data[offs[i] : offs[i + 1]], serials[i], values[i]

    # -- size ---------------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (the cache of large nodes' children not included)."""
        return int(self.tokens.nbytes + self.offsets.nbytes + self.values.nbytes)

    # -- navigation ---------------------------------------------------------------------------------------------------
    def root_node(self) -> Node:
        return (0, len(self), 0)

    def _column(self, node: Node) -> np.ndarray:
        lo, hi, depth = node
        return self.tokens[self.offsets[lo:hi] + depth]

    def children(self, node: Node) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens, starts)``: the distinct next tokens of ``node`` (sorted) and where each run of keys starts.

        ``starts`` has one more entry than ``tokens`` (the node's ``hi``). A complete key (``node`` past its ``end``)
        has no children.
        """
        lo, hi, depth = node
        if hi <= lo or (hi - lo == 1 and depth >= self.offsets[lo + 1] - self.offsets[lo]):
            return np.empty(0, dtype=np.int64), np.array([lo], dtype=np.int64)
        cached = self._cache.get((lo, depth))
        if cached is not None:
            return cached
        col = self._column(node)
        if hi - lo == 1:
            out = (col.astype(np.int64), np.array([lo, hi], dtype=np.int64))
        else:
            cuts = np.flatnonzero(col[1:] != col[:-1]) + 1
            starts = np.concatenate(([0], cuts, [hi - lo])).astype(np.int64) + lo
            out = (col[starts[:-1] - lo].astype(np.int64), starts)
        if hi - lo >= _CACHE_MIN_KEYS:
            self._cache[(lo, depth)] = out
        return out

    def allowed(self, node: Node) -> np.ndarray:
        """The tokens that may follow ``node`` (sorted; empty for a complete key)."""
        return self.children(node)[0]

    def child(self, node: Node, token: int) -> Node | None:
        """The node reached from ``node`` by ``token``, or ``None`` when no key continues that way."""
        lo, hi, depth = node
        if hi - lo == 1:  # a single key left: compare directly
            start, stop = self.offsets[lo], self.offsets[lo + 1]
            if depth < stop - start and self.tokens[start + depth] == token:
                return (lo, hi, depth + 1)
            return None
        if hi - lo >= _CACHE_MIN_KEYS:
            toks, starts = self.children(node)  # cached
            i = int(np.searchsorted(toks, token))
            if i < len(toks) and toks[i] == token:
                return (int(starts[i]), int(starts[i + 1]), depth + 1)
            return None
        col = self._column(node)
        a = int(np.searchsorted(col, token, side="left"))
        if a == len(col) or col[a] != token:
            return None
        b = int(np.searchsorted(col, token, side="right"))
        return (lo + a, lo + b, depth + 1)

    def walk(self, path: Sequence[int]) -> Node | None:
        """The node at the end of ``path`` (which starts with the root token), or ``None``."""
        if not len(path) or int(path[0]) != self.root:
            return None
        node: Node | None = self.root_node()
        for t in path[1:]:
            node = self.child(node, int(t))  # type: ignore[arg-type]
            if node is None:
                return None
        return node

    def is_complete(self, node: Node) -> bool:
        """Whether ``node`` is the end of a key (its path ends with ``end``)."""
        lo, hi, depth = node
        return hi - lo == 1 and depth == self.offsets[lo + 1] - self.offsets[lo] and depth > 0

    def value(self, node: Node) -> int | None:
        """The payload of the key that ends at ``node`` (``None`` if ``node`` is not a complete key)."""
        return int(self.values[node[0]]) if self.is_complete(node) else None

    def get(self, path: Sequence[int]) -> int | None:
        """The payload of the complete key ``path`` (root first, end last), or ``None``."""
        node = self.walk(path)
        return None if node is None else self.value(node)

    def __contains__(self, path: Sequence[int]) -> bool:
        return self.get(path) is not None

    def key(self, index: int) -> list[int]:
        """Key ``index`` in sorted order, root first."""
        return [self.root, *self.tokens[self.offsets[index] : self.offsets[index + 1]].tolist()]

    def complete(self, path: Sequence[int], limit: int | None = None) -> list[tuple[list[int], int]]:
        """Every ``(key, value)`` whose key starts with ``path`` (root first), in sorted order, at most ``limit``."""
        node = self.walk(path)
        if node is None:
            return []
        lo, hi, _ = node
        if limit is not None:
            hi = min(hi, lo + limit)
        return [(self.key(i), int(self.values[i])) for i in range(lo, hi)]

    def count(self, node: Node) -> int:
        """How many keys pass through ``node``."""
        return node[1] - node[0]

    # -- files --------------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, meta: dict | None = None) -> None:
        """Write an ``.npz`` (uncompressed) with the arrays, root/end and a JSON ``meta`` dict (atomically)."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            with open(tmp, "wb") as fh:
                self.write(fh, meta)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def write(self, fh: BinaryIO, meta: dict | None = None) -> None:
        """Write the ``.npz`` of :meth:`save` to a binary stream (e.g. ``sys.stdout.buffer``); :meth:`load` reads it
        back from a file or a seekable stream."""
        import json

        np.savez(
            fh,
            tokens=self.tokens,
            offsets=self.offsets,
            values=self.values,
            header=np.array([_FORMAT, self.root, self.end], dtype=np.int64),
            meta=np.frombuffer(json.dumps(meta or {}, ensure_ascii=False).encode("utf-8"), dtype=np.uint8),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple[TokenTrie, dict]:
        """Read a file written by :meth:`save`; returns the trie and its ``meta`` dict."""
        import json

        try:
            with np.load(path, allow_pickle=False) as z:
                fmt, root, end = (int(x) for x in z["header"])
                if fmt != _FORMAT:
                    raise NlptoolError(f"trie file {path} has format {fmt}; this nlptool reads format {_FORMAT}")
                meta = json.loads(z["meta"].tobytes().decode("utf-8"))
                trie = cls(z["tokens"], z["offsets"], z["values"], root=root, end=end)
        except (OSError, KeyError, ValueError) as exc:
            raise NlptoolError(
                f"cannot read trie file {path} ({exc}); rebuild it with 'nlptool kg-qa build-trie'"
            ) from None
        return trie, meta


class DictTrie:
    """The nested-dict trie (one dict per node) that :class:`TokenTrie` replaces; kept as the benchmark's peer."""

    def __init__(self, end: int):
        self.data: dict = {}
        self.end = end

    def insert(self, seq: Sequence[int], value: int) -> None:
        d = self.data
        for t in seq:
            d = d.setdefault(t, {})
        d.setdefault(-1, value)

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        d = self.data
        for t in prefix:
            d = d.get(t)
            if d is None:
                return []
        return [k for k in d if k != -1]

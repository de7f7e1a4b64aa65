"""Benchmark: the sorted-array trie (``nlptool.core.trie.TokenTrie``) against a nested-dict trie, same keys, one run.

A synthetic KB in KgCLUE's shape is written to a TSV file (``--keys`` lines, one key each: a subject of 2-10 CJK
characters, with a meaning in full-width parentheses for 40% of them, a predicate from a pool of 3,000, a short
object). Then:

1. a character vocabulary is read from the file (first streaming pass);
2. ``TokenTrie`` is built **from the file, streaming** (``build_trie_from_file``, chunks of ``--chunk-size`` keys):
   build time, the bytes its arrays hold, bytes per key, and the process's peak RSS growth;
3. the nested-dict trie (one dict per node, the usual Python implementation) is built from the same keys: build time
   and its size (``sys.getsizeof`` summed over every node dict, plus the RSS growth);
4. lookups: for ``--sample`` random keys, a walk from the root to the end, one step per token, each step = go to the
   child + list the allowed next tokens; both tries answer the same steps (checked equal); time per step.

    python benchmarks/bench_trie.py --keys 1000000 --seed 0

Prints a table and one JSON line (last line of stdout).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import resource
import sys
import time
from pathlib import Path

from nlptool.core.kgqa import CharCodec, build_trie_from_file, iter_kb_file, key_ids
from nlptool.core.trie import DictTrie


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_kb(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    chars = [chr(0x4E00 + i) for i in range(5000)]
    predicates = ["".join(rng.choices(chars[:2000], k=rng.randint(2, 5))) for _ in range(3000)]
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(n):
            s = "".join(rng.choices(chars, k=rng.randint(2, 10)))
            if rng.random() < 0.4:
                s += "（" + "".join(rng.choices(chars, k=rng.randint(2, 12))) + "）"
            p = rng.choice(predicates)
            o = "".join(rng.choices(chars, k=rng.randint(1, 8)))
            fh.write(f"{s}\t{p}\t{o}\n")


def dict_size(d: dict) -> int:
    total = 0
    stack = [d]
    while stack:
        node = stack.pop()
        total += sys.getsizeof(node)
        stack.extend(v for v in node.values() if isinstance(v, dict))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--chunk-size", type=int, default=250_000)
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench_out/trie")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kb_path = out / f"kb_synth_{args.keys}.tsv"
    if not kb_path.exists():
        make_kb(kb_path, args.keys, args.seed)
    res: dict = {"keys_in_file": args.keys}

    t = time.perf_counter()
    codec = CharCodec.from_texts(x for _, s, p, o in iter_kb_file(kb_path) for x in (s, p, o))
    res["vocab_seconds"] = time.perf_counter() - t

    gc.collect()
    rss0 = rss_bytes()
    peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t = time.perf_counter()
    trie, dups, triples = build_trie_from_file(str(kb_path), codec, chunk_size=args.chunk_size)
    res["array"] = {
        "build_seconds": time.perf_counter() - t,
        "keys": len(trie),
        "duplicates": dups,
        "bytes": trie.nbytes,
        "bytes_per_key": trie.nbytes / len(trie),
        "token_dtype": str(trie.tokens.dtype),
        "peak_rss_growth_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak0,
        "rss_growth_bytes": rss_bytes() - rss0,
    }

    keys = [key_ids(codec, s, p) for _, s, p, _ in iter_kb_file(kb_path)]
    gc.collect()
    rss1 = rss_bytes()
    t = time.perf_counter()
    dt = DictTrie(end=codec.end_id)
    for i, k in enumerate(keys):
        dt.insert([codec.start_id, *k], i)
    build = time.perf_counter() - t
    gc.collect()
    dsize = dict_size(dt.data)
    res["dict"] = {
        "build_seconds": build,
        "bytes_getsizeof": dsize,
        "bytes_per_key": dsize / len(trie),
        "rss_growth_bytes": rss_bytes() - rss1,
        "rss_growth_per_key": (rss_bytes() - rss1) / len(trie),
    }

    rng = random.Random(args.seed + 1)
    sample = [[codec.start_id, *keys[i]] for i in rng.sample(range(len(keys)), args.sample)]
    steps = sum(len(k) for k in sample)
    for k in sample[:200]:  # the two tries agree
        node, d = trie.root_node(), dt.data[codec.start_id]
        for tok in k[1:]:
            assert sorted(x for x in d if x != -1) == trie.allowed(node).tolist()
            node, d = trie.child(node, tok), d[tok]
    times: dict[str, list[float]] = {"array": [], "dict": []}
    for _ in range(args.repeats):
        trie._cache.clear()
        t = time.perf_counter()
        for k in sample:
            node = trie.root_node()
            trie.allowed(node)
            for tok in k[1:]:
                node = trie.child(node, tok)
                trie.allowed(node)
        times["array"].append(time.perf_counter() - t)
        t = time.perf_counter()
        for k in sample:
            d = dt.data[codec.start_id]
            [x for x in d if x != -1]
            for tok in k[1:]:
                d = d[tok]
                [x for x in d if x != -1]
        times["dict"].append(time.perf_counter() - t)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    res["lookup_us_per_step"] = {k: 1e6 * v / steps for k, v in med.items()}
    res["lookup_steps"] = steps
    res["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]}

    a, d = res["array"], res["dict"]
    print(
        f"{len(trie):,} keys ({triples:,} lines, {dups} duplicates), mean key {trie.tokens.size / len(trie):.1f} tokens"
    )
    print(f"{'':28s} {'sorted arrays':>16s} {'nested dicts':>16s}")
    print(f"{'build seconds':28s} {a['build_seconds']:16.1f} {d['build_seconds']:16.1f}")
    print(f"{'bytes per key':28s} {a['bytes_per_key']:16.1f} {d['bytes_per_key']:16.1f}")
    print(f"{'total MiB':28s} {a['bytes'] / 2**20:16.1f} {d['bytes_getsizeof'] / 2**20:16.1f}")
    print(f"{'RSS growth MiB':28s} {a['rss_growth_bytes'] / 2**20:16.1f} {d['rss_growth_bytes'] / 2**20:16.1f}")
    print(f"{'peak RSS growth MiB (build)':28s} {a['peak_rss_growth_bytes'] / 2**20:16.1f} {'':>16s}")
    us = res["lookup_us_per_step"]
    print(f"{'µs per step (child+allowed)':28s} {us['array']:16.2f} {us['dict']:16.2f}")
    print(json.dumps(res, sort_keys=True))


if __name__ == "__main__":
    main()

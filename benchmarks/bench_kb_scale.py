"""Benchmark: ``kg-qa train`` and ``kg-qa build-trie`` on a knowledge base of realistic size (1M / 5M triples).

KgCLUE's Knowledge.txt has 20.6M triples and cannot be had offline. This script writes synthetic KBs in its shape with
``bench_trie.make_kb`` (seeded; subjects of 2-10 CJK characters, 40% with a meaning in full-width parentheses, 3,000
predicates, short objects) into ``--out`` (gitignored ``bench_out/``), plus a tiny question file (``--questions``
questions whose answers are triples of the KB), then measures each stage **in its own subprocess**, so that the peak
RSS is that stage's (with whatever the stage needs before it: the KB for the vocabulary, the KB and the vocabulary for
the trie):

- ``read``: stream the KB file (``iter_kb_file``), nothing kept;
- ``kb-index``: the KB held in memory with its ``(subject, predicate)`` lookup (``read_kb``);
- ``vocab``: the character vocabulary of the questions and every KB string (as ``KgqaModel.create`` builds it; the
  time is the vocabulary's alone, the peak includes the KB);
- ``trie``: the trie of every KB key (``build_trie``; time: the trie alone; peak: KB + vocabulary + trie);
- ``train-setup``: what ``kg-qa train`` does before its first step (``read_training_data``, ``build_model``,
  ``training_pairs``), through the core functions;
- ``build-trie CLI``: ``nlptool kg-qa build-trie --tokenizer char`` end to end (a child process; its peak RSS from
  ``getrusage(RUSAGE_CHILDREN)``);
- ``train CLI``: ``nlptool kg-qa train`` end to end with a tiny model (``--d-model 16 --layers 1 --ffn 16``),
  ``--epochs 1`` and the tiny question file: reading, vocabulary, trie, KB index, one optimiser step, saving the
  folder (KB copy, SHA-256, trie file).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_kb_scale.py --triples 1000000 5000000

Prints one table (stage, triples, seconds, peak RSS MiB), a linear extrapolation of each stage to 20.6M triples from
the two largest sizes measured (marked as such), and one JSON line (last line of stdout). ``--skip-over-mib M`` skips
a size whose extrapolated peak (from the smaller size) exceeds M MiB, so an unscalable code path is not run on a
shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trie import make_kb  # noqa: E402

REAL_TRIPLES = 20_600_000
STAGES = ("read", "kb-index", "vocab", "trie", "train-setup", "build-trie CLI", "train CLI")


def peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def make_questions(kb: Path, path: Path, n: int, seed: int, triples: int) -> None:
    """``n`` KgCLUE-style questions whose answers are random triples of ``kb``."""
    rng = random.Random(seed + 7)
    wanted = set(rng.sample(range(1, triples + 1), n))
    rows = []
    with open(kb, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if line_no in wanted:
                s, p, o = line.rstrip("\n").split("\t")
                rows.append({"question": f"{s}的{p}是什么？", "answer": f"{s} ||| {p} ||| {o}"})
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def trie_digest(path: str | Path) -> str:
    """SHA-256 of a trie file's arrays (names, dtypes, bytes): equal tries, whatever the zip's timestamps."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    with np.load(path) as z:
        for name in ("tokens", "offsets", "values", "header"):
            h.update(f"{name}:{z[name].dtype.str}:".encode())
            h.update(z[name].tobytes())
    return h.hexdigest()


def vocabulary(kb, questions):  # noqa: ANN001, ANN201 - what KgqaModel.create builds
    from nlptool.core.kgqa import keys

    if hasattr(keys.CharCodec, "from_kb"):  # after the fix
        return keys.CharCodec.from_kb(kb, questions)
    return keys.CharCodec.from_texts([*questions, *kb.strings()])


def run_stage(stage: str, kb: str, questions: str, out: str) -> dict:
    """One stage in this (fresh) process: its seconds and this process's peak RSS."""
    from nlptool.core import kgqa

    res: dict = {}
    if stage == "read":
        t = time.perf_counter()
        n = sum(1 for _ in kgqa.iter_kb_file(kb))
        res.update(seconds=time.perf_counter() - t, triples=n)
    elif stage in ("kb-index", "vocab", "trie"):
        t = time.perf_counter()
        kbase = kgqa.read_kb(kb)
        res["kb_seconds"] = time.perf_counter() - t
        res["kb_peak_mib"] = peak_mib(resource.RUSAGE_SELF)
        res["seconds"] = res["kb_seconds"]
        res["entries"] = len(kbase)
        if stage != "kb-index":
            qs = [e.question for e in kgqa.read_qa(questions)]
            t = time.perf_counter()
            codec = vocabulary(kbase, qs)
            res["seconds"] = res["vocab_seconds"] = time.perf_counter() - t
            res["vocab_size"] = len(codec)
            if stage == "trie":
                t = time.perf_counter()
                trie, dup = kgqa.build_trie(kbase, codec)
                res["seconds"] = time.perf_counter() - t
                res.update(keys=len(trie), duplicates=dup, trie_bytes=trie.nbytes)
    elif stage == "train-setup":
        from nlptool.core.kgqa import model as m

        t = time.perf_counter()
        data = m.read_training_data(kb, questions)
        res["read_seconds"] = time.perf_counter() - t
        settings = m.TrainSettings(d_model=16, layers=1, heads=2, ffn=16)
        t2 = time.perf_counter()
        kg = m.build_model(data, settings)
        res["model_seconds"] = time.perf_counter() - t2
        pairs = m.training_pairs(kg, data.examples)
        res.update(seconds=time.perf_counter() - t, keys=len(kg.trie), pairs=len(pairs))
    elif stage in ("build-trie CLI", "train CLI"):
        exe = [sys.executable, "-m", "nlptool"]
        kb, questions, out = (str(Path(x).resolve()) for x in (kb, questions, out))
        if stage == "build-trie CLI":
            cmd = [*exe, "kg-qa", "build-trie", "--kb", kb, "--tokenizer", "char", "-o", f"{out}/trie.npz", "--force"]
        else:
            cmd = [*exe, "kg-qa", "train", "--kb", kb, "--train", questions, "--out", f"{out}/model", "--epochs", "1"]
            cmd += ["--d-model", "16", "--layers", "1", "--heads", "2", "--ffn", "16", "--device", "cpu", "--force"]
        t = time.perf_counter()
        import nlptool

        # run in the folder above the imported package: `python -m` puts the current folder first on sys.path
        root = Path(nlptool.__file__).resolve().parents[1]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
        res["seconds"] = time.perf_counter() - t
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        res["peak_mib"] = peak_mib(resource.RUSAGE_CHILDREN)
        if stage == "build-trie CLI":
            res["trie_digest"] = trie_digest(f"{out}/trie.npz")
        else:
            from nlptool.core.kgqa import file_sha256

            res["trie_digest"] = trie_digest(f"{out}/model/trie.npz")
            res["kb_copy_sha256"] = file_sha256(f"{out}/model/kb.tsv")
        return res
    res["peak_mib"] = peak_mib(resource.RUSAGE_SELF)
    return res


def extrapolate(rows: list[dict]) -> list[dict]:
    """Per stage, a line through the two largest sizes measured, evaluated at 20.6M triples."""
    out = []
    for stage in STAGES:
        pts = sorted((r["triples"], r) for r in rows if r["stage"] == stage)
        if len(pts) < 2:
            continue
        (n1, a), (n2, b) = pts[-2], pts[-1]
        f = (REAL_TRIPLES - n2) / (n2 - n1)
        out.append(
            {
                "stage": stage,
                "triples": REAL_TRIPLES,
                "seconds": b["seconds"] + f * (b["seconds"] - a["seconds"]),
                "peak_mib": b["peak_mib"] + f * (b["peak_mib"] - a["peak_mib"]),
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--triples", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--questions", type=int, default=64)
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--skip-over-mib", type=float, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench_out/kb_scale")
    ap.add_argument("--label", default="")
    ap.add_argument("--stage-worker", nargs=4, metavar=("STAGE", "KB", "QUESTIONS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage_worker:
        print(json.dumps(run_stage(*args.stage_worker)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for n in sorted(args.triples):
        kb = out / f"kb_synth_{n}.tsv"
        if not kb.exists():
            t = time.perf_counter()
            make_kb(kb, n, args.seed)
            print(f"wrote {kb} ({n:,} triples, {kb.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f} s")
        qa = out / f"questions_{n}.jsonl"
        if not qa.exists():
            make_questions(kb, qa, args.questions, args.seed, n)
        for stage in args.stages:
            if rows:  # skip a stage whose peak, extrapolated from the smaller size, would be too large
                prev = [r for r in rows if r["stage"] == stage]
                if prev and prev[-1]["peak_mib"] * n / prev[-1]["triples"] > args.skip_over_mib:
                    print(f"skipped {stage} at {n:,}: about {prev[-1]['peak_mib'] * n / prev[-1]['triples']:.0f} MiB")
                    continue
            work = out / f"work_{n}"
            work.mkdir(exist_ok=True)
            cmd = [sys.executable, __file__, "--stage-worker", stage, str(kb), str(qa), str(work)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"stage {stage} at {n} failed:\n{proc.stderr[-3000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res.update(stage=stage, triples=n)
            rows.append(res)
            print(f"  {stage:16s} {n:>11,} {res['seconds']:9.1f} s {res['peak_mib']:9.0f} MiB", flush=True)
    ext = extrapolate(rows)
    title = f"kg-qa on a synthetic KB{' (' + args.label + ')' if args.label else ''}"
    print(f"\n{title}\n{'stage':18s} {'triples':>12s} {'seconds':>9s} {'peak RSS MiB':>13s}")
    for r in rows:
        print(f"{r['stage']:18s} {r['triples']:>12,} {r['seconds']:9.1f} {r['peak_mib']:13.0f}")
    for r in ext:
        print(f"{r['stage']:18s} {r['triples']:>12,} {r['seconds']:9.0f} {r['peak_mib']:13.0f}  (extrapolated)")
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    print(json.dumps({"label": args.label, "rows": rows, "extrapolated_20.6M": ext, "machine": machine}))


if __name__ == "__main__":
    main()

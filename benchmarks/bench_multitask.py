"""train-multitask quality: one MiniLM encoder trained on STS-B, CoNLL-2003 and AG News at once vs single-task runs.

Issue 15's quality benchmark. Three tasks on the bundled all-MiniLM-L6-v2 (mean pooling, 128 tokens):

- ``sts``: STS-B (English) train → dev Spearman ×100, CoSENT (``nlptool.core.cosent.PairTask``);
- ``ner``: CoNLL-2003 train → dev micro entity F1 ×100, Efficient GlobalPointer (``nlptool.core.ner.NerTask``,
  head lr ×30 as ``ner train``);
- ``classify``: AG News (the shared 3,800-row ``zero_shot/agnews/test.tsv``) split, stratified and seeded (seed 0),
  into 3,000 train / 800 dev → dev accuracy ×100 (``nlptool.core.classify.ClassifyTask``).

Every run takes the same number of optimizer steps (``--steps``) with one batch of ``--batch-size`` examples per task
per step, so a single-task baseline and a multi-task run see the same examples per task. Both run through
``nlptool.core.multitask.fit_multitask``: a single-task baseline with that one task and ``combine="sum"`` (``u = g``:
the update of the single-task commands, with the same data order, schedule and head learning rates as the
multi-task runs), a multi-task run with all three tasks and one ``--combine`` method. Evaluation once, after the last
step (the final weights, no checkpoint selection on dev).

``--scale ner=100`` multiplies a task's loss (the stress test: ``sum`` should collapse onto the scaled task, while
``gradnorm-sum`` and ``mgda`` are invariant to the scale of a loss).

Each run writes ``OUT/results/<system>-s<seed>[-tag].json``; ``report`` prints the table: each task's metric, the
single-task baseline of the same seed, and Δm (LibMTL: mean over tasks of the relative change ×100).

Usage::

    python benchmarks/bench_multitask.py prepare --out bench_out/mtl
    OMP_NUM_THREADS=1 python benchmarks/bench_multitask.py run --out bench_out/mtl --system single:sts --seed 0
    OMP_NUM_THREADS=1 python benchmarks/bench_multitask.py run --out bench_out/mtl --system mtl:gradnorm-sum --seed 0
    python benchmarks/bench_multitask.py report --out bench_out/mtl

Data: ``../shared/data`` (or ``NLPTOOL_SHARED_DATA``), evaluation use only; nothing is copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NLPTOOL_SHARED_DATA", REPO.parent / "shared" / "data"))
TASKS = ("sts", "ner", "classify")
MAIN_METRIC = {"sts": "spearman", "ner": "f1", "classify": "accuracy"}
#: Head learning-rate factors, the single-task commands' defaults (``ner train``, ``classify train``).
HEAD_LR_SCALE = {"ner": 30.0, "classify": 10.0}


def prepare(out: Path) -> None:
    """Write ``out/data``: the NER files as nlptool JSONL, the AG News split as JSONL (STS-B is read in place)."""
    import numpy as np

    from nlptool.core.ner_convert import convert

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        records = list(convert(str(DATA / "ner" / "conll2003" / f"{split}.txt"), "conll")[0])
        _write_jsonl(data / f"ner_{split}.jsonl", [{"text": r["text"], "entities": r["entities"]} for r in records])
    rows = []
    with open(DATA / "zero_shot" / "agnews" / "test.tsv", encoding="utf-8") as fh:
        for line in fh:
            text, label = line.rstrip("\n").rsplit("\t", 1)
            rows.append({"text": text, "label": label})
    rng = np.random.default_rng(0)
    labels = sorted({r["label"] for r in rows})
    dev_idx: list[int] = []
    for lab in labels:  # stratified: each class keeps its share of the 800 dev rows
        idx = [i for i, r in enumerate(rows) if r["label"] == lab]
        k = round(800 * len(idx) / len(rows))
        dev_idx.extend(rng.permutation(idx)[:k].tolist())
    dev_idx = dev_idx[:800] if len(dev_idx) >= 800 else dev_idx
    dev_set = set(dev_idx)
    train = [r for i, r in enumerate(rows) if i not in dev_set]
    train = [train[i] for i in rng.permutation(len(train))[:3000]]
    dev = [rows[i] for i in sorted(dev_idx)]
    _write_jsonl(data / "classify_train.jsonl", train)
    _write_jsonl(data / "classify_dev.jsonl", dev)
    print(f"wrote {data}: ner train/dev, classify {len(train)} train / {len(dev)} dev")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


class ScaledTask:
    """A task whose loss is multiplied by ``factor`` (everything else delegated): the stress test's NER × 100."""

    def __init__(self, task: Any, factor: float) -> None:
        self._task = task
        self._factor = factor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def loss(self, encoder: Any, batch: Any) -> Any:
        return self._task.loss(encoder, batch) * self._factor


def load_tasks(
    out: Path, encoder: Any, names: list[str], scales: dict[str, float], limit_dev: int | None = None
) -> dict[str, tuple]:
    """``{name: (task, train examples, dev data)}`` for ``names``."""
    from nlptool.core.classify import ClassifyTask, read_classify
    from nlptool.core.cosent import PairTask
    from nlptool.core.ner import NerTask, label_set, longest_entity_tokens, read_ner_jsonl
    from nlptool.core.pairs import read_pairs

    data = out / "data"
    tasks: dict[str, tuple] = {}
    for name in names:
        if name == "sts":
            train = read_pairs(str(DATA / "sts" / "stsb-en" / "stsb-en-train.csv"), header=False)
            dev = read_pairs(str(DATA / "sts" / "stsb-en" / "stsb-en-dev.csv"), header=False)
            task = PairTask(encoder, train.label_type)
            examples = task.examples(train)
        elif name == "ner":
            train = read_ner_jsonl(str(data / "ner_train.jsonl"))
            dev = read_ner_jsonl(str(data / "ner_dev.jsonl"))
            task = NerTask(encoder, label_set(train), max_length=128)
            examples, _ = task.windows(train)
            task.max_span_tokens = longest_entity_tokens(examples)
        else:
            train = read_classify(str(data / "classify_train.jsonl"))
            dev = read_classify(str(data / "classify_dev.jsonl"))
            task = ClassifyTask(encoder, train.label_set())
            examples = task.examples(train)
        task.name = name
        if limit_dev:  # smoke runs only
            dev = _head(dev, limit_dev)
        if name in scales:
            task = ScaledTask(task, scales[name])
        tasks[name] = (task, examples, dev)
    return tasks


def _head(dev: Any, n: int) -> Any:
    """The first ``n`` rows of a dev set (a list, or a PairData / ClassifyData of parallel lists)."""
    import dataclasses

    if isinstance(dev, list):
        return dev[:n]
    cut = {}
    for f in dataclasses.fields(dev):
        v = getattr(dev, f.name)
        cut[f.name] = v[:n] if hasattr(v, "__len__") and not isinstance(v, (str, tuple)) else v
    return dataclasses.replace(dev, **cut)


def run(args: argparse.Namespace) -> None:
    import torch

    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.multitask import fit_multitask
    from nlptool.core.seeding import seed_everything
    from nlptool.core.train import TrainConfig

    kind, _, what = args.system.partition(":")
    if kind not in ("single", "mtl") or (kind == "single" and what not in TASKS):
        raise SystemExit(f"--system {args.system}: use single:sts|ner|classify or mtl:METHOD")
    names = [what] if kind == "single" else list(args.tasks)
    scales = dict((k, float(v)) for k, v in (s.split("=") for s in args.scale))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    seed_everything(args.seed)
    encoder = SentenceEncoder.load(args.model, max_length=128)
    tasks = load_tasks(args.out, encoder, names, scales, args.limit_dev)
    config = TrainConfig(
        epochs=1,
        max_steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        eval_every=args.steps,
        log_every=50,
        device="cpu",
        lr_scale={f"heads.{n}.": HEAD_LR_SCALE[n] for n in names if n in HEAD_LR_SCALE} or None,
    )
    t0 = time.perf_counter()
    fit = fit_multitask(
        encoder,
        [t for t, _, _ in tasks.values()],
        {n: ex for n, (_, ex, _) in tasks.items()},
        config,
        out_dir=None,
        dev={n: dev for n, (_, _, dev) in tasks.items()},
        combine="sum" if kind == "single" else what,
        main_task=args.main_task,
        normalize=args.mgda_normalize,
    )
    seconds = time.perf_counter() - t0
    evals = [e for e in fit.train_result.history if e.get("event") == "eval"]
    metrics = evals[-1]["metrics"] if evals else {}
    doc = {
        "system": args.system,
        "tasks": names,
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "scale": scales,
        "main_task": args.main_task,
        "mgda_normalize": args.mgda_normalize,
        "metrics": metrics,
        "main": {n: metrics.get(f"{n}.{MAIN_METRIC[n]}") for n in names},
        "train_seconds": fit.train_result.train_seconds,
        "wall_seconds": seconds,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    res = args.out / "results"
    res.mkdir(parents=True, exist_ok=True)
    tag = f"-{args.tag}" if args.tag else ""
    path = res / f"{args.system.replace(':', '-')}-s{args.seed}{tag}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(doc, indent=1))


def report(out: Path) -> None:
    docs = [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]
    base: dict[tuple[str, int], float] = {}
    for d in docs:
        if d["system"].startswith("single:") and not d["scale"]:
            (name,) = d["tasks"]
            base[(name, d["seed"])] = d["main"][name]
    head = f"{'system':<28} {'seed':>4} " + " ".join(f"{t:>9}" for t in TASKS)
    print(head + f" {'Δm':>7} {'min Δ':>7} {'s/step':>7}")
    groups: dict[str, list[tuple[dict, float | None, float | None]]] = {}
    for d in sorted(docs, key=lambda d: (d["system"].startswith("mtl"), d["system"], str(d["scale"]), d["seed"])):
        label = d["system"] + (f"({d['main_task']})" if d.get("main_task") else "")
        label += f"({d['mgda_normalize']})" if d.get("mgda_normalize", "none") != "none" else ""
        label += "".join(f" {k}×{v:g}" for k, v in d["scale"].items())
        cells = []
        rel, diffs = [], []
        for t in TASKS:
            v = d["main"].get(t)
            cells.append(f"{100 * v:9.2f}" if v is not None else f"{'':>9}")
            b = base.get((t, d["seed"]))
            if v is not None and b is not None and d["system"].startswith("mtl"):
                rel.append((v - b) / abs(b) * 100)
                diffs.append(100 * (v - b))
        dm = sum(rel) / len(rel) if rel else None
        md = min(diffs) if diffs else None
        groups.setdefault(label, []).append((d, dm, md))
        dm_s = f"{dm:7.2f}" if dm is not None else f"{'':>7}"
        md_s = f"{md:7.2f}" if md is not None else f"{'':>7}"
        per_step = d["train_seconds"] / d["steps"]
        print(f"{label:<28} {d['seed']:>4} " + " ".join(cells) + f" {dm_s} {md_s} {per_step:7.2f}")
    if any(len(rows) > 1 for rows in groups.values()):
        # over seeds: the mean of each metric, of Δm (± its sample standard deviation) and of the largest drop
        print(f"\nmean over seeds\n{'system':<28} {'seeds':>5} " + " ".join(f"{t:>9}" for t in TASKS), end="")
        print(f" {'Δm':>7} {'± sd':>6} {'min Δ':>7}")
        for label, rows in groups.items():
            cells = []
            for t in TASKS:
                vals = [d["main"][t] for d, _, _ in rows if d["main"].get(t) is not None]
                cells.append(f"{100 * statistics.mean(vals):9.2f}" if vals else f"{'':>9}")
            dms = [dm for _, dm, _ in rows if dm is not None]
            mds = [md for _, _, md in rows if md is not None]
            dm_s = f"{statistics.mean(dms):7.2f}" if dms else f"{'':>7}"
            sd_s = f"{statistics.stdev(dms):6.2f}" if len(dms) > 1 else f"{'':>6}"
            md_s = f"{statistics.mean(mds):7.2f}" if mds else f"{'':>7}"
            seeds = ",".join(str(d["seed"]) for d, _, _ in rows)
            print(f"{label:<28} {seeds:>5} " + " ".join(cells) + f" {dm_s} {sd_s} {md_s}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["prepare", "run", "report"])
    p.add_argument("--out", type=Path, default=REPO / "bench_out" / "mtl")
    p.add_argument("--system", default="mtl:gradnorm-sum", help="single:TASK or mtl:METHOD")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--main-task", default=None, help="for mtl:main-aux")
    p.add_argument("--mgda-normalize", default="none", help="for mtl:mgda: none, l2 or loss")
    p.add_argument("--scale", nargs="*", default=[], help="NAME=FACTOR: multiply a task's loss (stress test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--model", default=None, help="encoder (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--tag", default="")
    p.add_argument("--limit-dev", type=int, default=None, help="first N dev rows per task (smoke runs only)")
    args = p.parse_args(argv)
    if args.action == "prepare":
        prepare(args.out)
    elif args.action == "run":
        run(args)
    else:
        report(args.out)


if __name__ == "__main__":
    sys.exit(main())

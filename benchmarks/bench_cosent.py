"""CoSENT training and encoding against sentence-transformers, in one run, on the same backbone and settings.

Runs (each training run in its own subprocess with the same thread count):

- ``ours-<loss>``: ``nlptool train-cosent`` (loss cosent | cosine-mse | softmax);
- ``st-cosent``: sentence-transformers ``CoSENTLoss`` (raw 0–5 scores: only their order matters);
- ``st-cosine``: sentence-transformers ``CosineSimilarityLoss`` (scores / 5).

Every trained model is evaluated by the same code (``nlptool.core.cosent.evaluate_pairs``: Spearman of cosine
vs score on the dev file). Throughput is training pairs per second of the training loop (ours: the loop's own clock;
sentence-transformers: the wall time of ``fit``), median over the runs of a configuration. ``--encode`` also compares
``SentenceEncoder.encode`` with ``SentenceTransformer.encode`` on the dev sentences (interleaved repeats, medians).

Example:
    PYTHONPATH=. python benchmarks/bench_cosent.py --runs ours-cosent,st-cosent,st-cosine --seeds 42 --encode
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "sts" / "stsb-en"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", default=str(DATA / "stsb-en-train.csv"))
    p.add_argument("--dev", default=str(DATA / "stsb-en-dev.csv"))
    p.add_argument("--model", default=None, help="model folder or hub id (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--runs", default="ours-cosent,st-cosent,st-cosine")
    p.add_argument("--seeds", default="42")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--warmup", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--scale", type=float, default=20.0)
    p.add_argument("--limit-train", type=int, default=0, help="use only the first N training pairs (0: all)")
    p.add_argument("--extra", default="", help="extra flags for our train-cosent runs, e.g. '--group-by-length'")
    p.add_argument("--encode", action="store_true", help="also compare encode throughput")
    p.add_argument("--encode-repeats", type=int, default=3)
    p.add_argument("--out-dir", default=str(REPO / "bench_out" / "cosent"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    p.add_argument("--loss", default=None, help=argparse.SUPPRESS)
    p.add_argument("--save", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def model_location(spec: str | None) -> str:
    from nlptool.core.models import resolve_model

    return resolve_model(spec).location


def limited_train(args: argparse.Namespace, workdir: Path) -> str:
    if not args.limit_train:
        return args.train
    lines = Path(args.train).read_text(encoding="utf-8").splitlines(keepends=True)[: args.limit_train]
    path = workdir / f"train_first{args.limit_train}.csv"
    path.write_text("".join(lines), encoding="utf-8")
    return str(path)


def evaluate(model_dir: str, dev: str) -> dict:
    from nlptool.core.cosent import evaluate_pairs
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.pairs import read_pairs

    enc = SentenceEncoder.load(model_dir)
    return evaluate_pairs(enc, read_pairs(dev), batch_size=64, device="cpu")["metrics"]


def st_worker(args: argparse.Namespace) -> None:
    """Train with sentence-transformers' fit and print one JSON line."""
    import torch
    from sentence_transformers import InputExample, SentenceTransformer, losses
    from torch.utils.data import DataLoader

    from nlptool.core.pairs import read_pairs
    from nlptool.core.seeding import seed_everything

    seed_everything(args.seed)
    data = read_pairs(args.train)
    model = SentenceTransformer(model_location(args.model), device="cpu")
    model.max_seq_length = args.max_length
    if args.loss == "cosent":
        examples = [
            InputExample(texts=[a, b], label=float(y))
            for a, b, y in zip(data.text1, data.text2, data.labels, strict=True)
        ]
        loss = losses.CoSENTLoss(model, scale=args.scale)
    else:
        targets = data.unit_targets()
        examples = [
            InputExample(texts=[a, b], label=float(y)) for a, b, y in zip(data.text1, data.text2, targets, strict=True)
        ]
        loss = losses.CosineSimilarityLoss(model)
    loader = DataLoader(
        examples, shuffle=True, batch_size=args.batch_size, generator=torch.Generator().manual_seed(args.seed)
    )
    steps = len(loader) * args.epochs
    start = time.perf_counter()
    model.fit(
        train_objectives=[(loader, loss)],
        epochs=args.epochs,
        warmup_steps=int(args.warmup * steps),
        optimizer_params={"lr": args.lr},
        weight_decay=args.weight_decay,
        show_progress_bar=False,
    )
    seconds = time.perf_counter() - start
    model.save(args.save)
    print(json.dumps({"train_seconds": seconds, "pairs_per_s": len(data) * args.epochs / seconds, "steps": steps}))


def run_ours(args: argparse.Namespace, loss: str, seed: int, train: str, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "nlptool",
        "-q",
        "train-cosent",
        "--train",
        train,
        "--out",
        str(out),
        "--loss",
        loss,
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--warmup",
        str(args.warmup),
        "--weight-decay",
        str(args.weight_decay),
        "--max-length",
        str(args.max_length),
        "--scale",
        str(args.scale),
        "--seed",
        str(seed),
        "--force",
        *args.extra.split(),
    ]
    if args.model:
        cmd += ["--model", args.model]
    subprocess.run(cmd, check=True, timeout=7200)
    doc = json.loads((out / "metrics.json").read_text())
    return {
        "train_seconds": doc["metrics"]["train_seconds"],
        "pairs_per_s": doc["metrics"]["pairs_per_s"],
        "steps": doc["metrics"]["steps"],
    }


def run_st(args: argparse.Namespace, loss: str, seed: int, train: str, out: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "st",
        "--loss",
        loss,
        "--seed",
        str(seed),
        "--train",
        train,
        "--save",
        str(out),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--warmup",
        str(args.warmup),
        "--weight-decay",
        str(args.weight_decay),
        "--max-length",
        str(args.max_length),
        "--scale",
        str(args.scale),
    ]
    if args.model:
        cmd += ["--model", args.model]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=7200)
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_encode(args: argparse.Namespace) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    from nlptool.core.batching import length_batches
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.pairs import read_pairs

    dev = read_pairs(args.dev)
    texts = list(dict.fromkeys(dev.text1 + dev.text2))
    ours = SentenceEncoder.load(args.model, max_length=args.max_length)
    peer = SentenceTransformer(model_location(args.model), device="cpu")
    peer.max_seq_length = args.max_length
    times: dict[str, list[float]] = {"ours": [], "sentence-transformers": []}
    a = b = None
    for _ in range(args.encode_repeats):
        t = time.perf_counter()
        a = ours.encode(texts, batch_size=64, normalize=True, device="cpu")
        times["ours"].append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.inference_mode():
            b = peer.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        times["sentence-transformers"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    # padding of batches of 64 sorted by characters (sentence-transformers) and by tokens (ours)
    n_tok = [len(x) for x in ours.tokenizer(texts, truncation=True, max_length=ours.max_length)["input_ids"]]
    by_chars = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    char_batches = [by_chars[k : k + 64] for k in range(0, len(texts), 64)]
    padding = {
        name: sum(len(b) * max(n_tok[i] for i in b) - sum(n_tok[i] for i in b) for b in batches)
        for name, batches in (("by_chars", char_batches), ("by_tokens", length_batches(n_tok, 64)))
    }
    return {
        "tokens": sum(n_tok),
        "padding": padding,
        "texts": len(texts),
        "median_s": med,
        "texts_per_s": {k: len(texts) / v for k, v in med.items()},
        "ratio_ours_vs_st": med["sentence-transformers"] / med["ours"],
        "max_abs_diff": float(abs(a - b).max()),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker == "st":
        st_worker(args)
        return
    out_root = Path(args.out_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    threads = os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count())
    print(
        f"bench_cosent: train={args.train} (limit {args.limit_train or 'all'}) dev={args.dev} epochs={args.epochs} "
        f"batch={args.batch_size} lr={args.lr} warmup={args.warmup} wd={args.weight_decay} max_len={args.max_length} "
        f"scale={args.scale} seeds={args.seeds} threads={threads} extra='{args.extra}'",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        train = limited_train(args, Path(tmp))
        base = evaluate(model_location(args.model), args.dev)
        print(f"dev Spearman before training: {100 * base['spearman']:.2f}", flush=True)
        results = []
        for run in [r.strip() for r in args.runs.split(",") if r.strip()]:
            side, loss = run.split("-", 1)
            for seed in [int(s) for s in args.seeds.split(",")]:
                out = out_root / f"{run}-seed{seed}"
                fn = run_ours if side == "ours" else run_st
                timing = fn(args, loss, seed, train, out)
                met = evaluate(str(out), args.dev)
                row = {"run": run, "seed": seed, "dev_spearman": met["spearman"], **timing}
                results.append(row)
                print(
                    f"{run:22s} seed {seed:4d}  dev Spearman {100 * met['spearman']:6.2f}  "
                    f"{timing['pairs_per_s']:7.1f} pairs/s  ({timing['train_seconds']:.0f} s)",
                    flush=True,
                )
    summary = {}
    for run in dict.fromkeys(r["run"] for r in results):
        rows = [r for r in results if r["run"] == run]
        summary[run] = {
            "dev_spearman_mean": statistics.mean(r["dev_spearman"] for r in rows),
            "dev_spearman_runs": [r["dev_spearman"] for r in rows],
            "pairs_per_s_median": statistics.median(r["pairs_per_s"] for r in rows),
        }
    print("\nrun                     dev Spearman (mean)   pairs/s (median)")
    for run, s in summary.items():
        print(f"{run:22s}  {100 * s['dev_spearman_mean']:18.2f}   {s['pairs_per_s_median']:16.1f}")
    enc = bench_encode(args) if args.encode else None
    if enc:
        print(
            f"\nencode {enc['texts']} dev sentences, batch 64 (median of {args.encode_repeats}): "
            f"ours {enc['texts_per_s']['ours']:.1f} texts/s, sentence-transformers "
            f"{enc['texts_per_s']['sentence-transformers']:.1f} texts/s, ratio {enc['ratio_ours_vs_st']:.2f}x, "
            f"max abs diff {enc['max_abs_diff']:.2e}; padding of batches of 64 sorted by characters "
            f"{enc['padding']['by_chars']}, by tokens {enc['padding']['by_tokens']} ({enc['tokens']} tokens)"
        )
    print(
        "RESULT "
        + json.dumps(
            {
                "before": base["spearman"],
                "runs": results,
                "summary": summary,
                "encode": enc,
                "args": {k: v for k, v in vars(args).items() if k not in ("worker", "save")},
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()

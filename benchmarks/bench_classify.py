"""classify: nlptool's text classifier (``nlptool.core.classify.fit``) against transformers'
``AutoModelForSequenceClassification`` fine-tuned from the same MiniLM weights with the same budget, on AG News.

Data: ``../shared/data/zero_shot/agnews/test.tsv`` (3,800 rows, ``description<TAB>label``, no header; research use,
nothing is copied into the repository), split per seed by a seeded stratified split (scikit-learn
``train_test_split``, ``random_state=seed``) into 3,000 training and 800 dev rows.

Systems, all from the bundled all-MiniLM-L6-v2 (``nlptool.core.models.default_model_path()``), max length 128, the
same epochs, batch size, peak lr, warm-up (10 %, linear decay), AdamW weight decay 0.01 (not on biases and norms),
clipping 1.0 and seed; one process, the same thread count, run one after the other:

- ``ours``: ``nlptool.core.classify.fit`` (mean pooling, dropout 0.1 + linear head at lr × ``--head-lr-scale``, the
  command's default 10; batches grouped by length, the command's default), no dev evaluation during training.
- ``ours-hls1``: the same with the head at the encoder's lr (``head_lr_scale=1``), as the peer.
- ``ours-nogroup``: the same as ``ours`` with shuffled, ungrouped batches (the peer's batching).
- ``peer``: ``AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=4)`` (BERT's pooler on [CLS],
  dropout, linear; MiniLM ships no pooler weights, so the pooler starts random, as any user of this class gets) in a
  plain PyTorch loop: shuffled batches (``torch.Generator`` seeded), tokenized per batch (padding to the longest),
  ``torch.optim.AdamW`` with the same parameter groups and the same lr multiplier per step
  (``nlptool.core.train.weight_decay_groups``, ``lr_multiplier``), clipping 1.0.

Reported per system: dev accuracy and macro-F1 (argmax), training throughput in examples/s (training loop only,
tokenization included, evaluation excluded: ours from the shared loop's clock, the peer's timed around its loop).
Then CAN (``nlptool.core.can.calibrate``, defaults k=3, τ=0.9, α=1, 1 iteration, ``renormalize=True``, the prior
from the training split's label frequencies, as ``bench_can_real.py`` does) on each system's dev probabilities:
accuracy before/after and the number of uncertain rows.

Example (under the shared CPU lock, 2 threads):
    OMP_NUM_THREADS=2 flock /tmp/nlptool_cpu.lock .venv/bin/python benchmarks/bench_classify.py --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("NLPTOOL_SHARED_DATA", REPO.parent / "shared" / "data")) / "zero_shot" / "agnews"
SYSTEMS = ("ours", "peer", "ours-hls1", "ours-nogroup")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA / "test.tsv"))
    p.add_argument("--seeds", default="0", help="comma-separated seeds (one split and one run of each system each)")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--train-size", type=int, default=3000)
    p.add_argument("--dev-size", type=int, default=800)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--warmup", type=float, default=0.1)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--head-lr-scale", type=float, default=10.0)
    p.add_argument("--out-dir", default=str(REPO / "bench_out" / "classify"))
    p.add_argument(
        "--speed-rounds",
        type=int,
        default=0,
        help="instead of the accuracy runs: training throughput of ours and peer only, interleaved: this many rounds, "
        "each running every system for --speed-steps steps from a fresh model, in an order rotated every round",
    )
    p.add_argument("--speed-steps", type=int, default=20)
    p.add_argument(
        "--from-log",
        help="print the table of the JSON result lines of an earlier run's stderr (one per system) instead of running",
    )
    return p.parse_args(argv)


def load_split(
    path: str, seed: int, train_size: int, dev_size: int
) -> tuple[list[str], list[str], list[str], list[str]]:
    from sklearn.model_selection import train_test_split

    texts, labels = [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                text, label = line.rstrip("\n").rsplit("\t", 1)
                texts.append(text)
                labels.append(label)
    x_tr, x_dev, y_tr, y_dev = train_test_split(
        texts, labels, train_size=train_size, test_size=dev_size, stratify=labels, random_state=seed
    )
    return x_tr, y_tr, x_dev, y_dev


def run_ours(
    args: argparse.Namespace, seed: int, data: tuple, *, head_lr_scale: float, group: bool, max_steps: int | None = None
) -> dict:
    import torch

    from nlptool.core.classify import ClassifyData, fit, predict_proba
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.seeding import seed_everything
    from nlptool.core.train import TrainConfig

    x_tr, y_tr, x_dev, y_dev = data
    seed_everything(seed)
    encoder = SentenceEncoder.load(None, pooling="mean", max_length=args.max_length)
    train = ClassifyData("train", x_tr, y_tr, list(range(1, len(x_tr) + 1)))
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_ratio=args.warmup,
        seed=seed,
        device="cpu",
        group_by_length=group,
        max_steps=max_steps,
    )
    result = fit(encoder, train, None, config=config, head_lr_scale=head_lr_scale)
    task = result.task
    if max_steps is not None:  # the speed mode: no prediction
        return {"train_seconds": result.metrics["train_seconds"], "steps": result.metrics["steps"],
                "examples_per_s": result.metrics["texts_per_s"]}  # fmt: skip
    t0 = time.perf_counter()
    probs = predict_proba(encoder, task, x_dev, batch_size=64)
    eval_s = time.perf_counter() - t0
    del encoder
    torch.set_grad_enabled(True)
    return {
        "labels": task.labels,
        "probs": probs,
        "train_seconds": result.metrics["train_seconds"],
        "steps": result.metrics["steps"],
        "examples_per_s": result.metrics["texts_per_s"],
        "eval_seconds": eval_s,
    }


def run_peer(args: argparse.Namespace, seed: int, data: tuple, labels: list[str], max_steps: int | None = None) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from nlptool.core.models import default_model_path
    from nlptool.core.seeding import seed_everything
    from nlptool.core.train import lr_multiplier, weight_decay_groups

    hf_logging.set_verbosity_error()
    x_tr, y_tr, x_dev, _ = data
    index = {lab: i for i, lab in enumerate(labels)}
    y = torch.tensor([index[lab] for lab in y_tr])
    path = str(default_model_path())
    seed_everything(seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    opt = torch.optim.AdamW(weight_decay_groups(model, 0.01), lr=args.lr)
    n = len(x_tr)
    steps_per_epoch = -(-n // args.batch_size)
    total = steps_per_epoch * args.epochs if max_steps is None else max_steps
    warmup = min(int(np.ceil(args.warmup * total)), total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_multiplier(i + 1, total, warmup))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    steps = examples = 0
    t0 = time.perf_counter()
    while steps < total:  # epochs of shuffled batches until the step budget is spent
        order = torch.randperm(n, generator=gen).tolist()
        for start in range(0, n, args.batch_size):
            if steps == total:
                break
            idx = order[start : start + args.batch_size]
            batch = tokenizer(
                [x_tr[i] for i in idx], padding="longest", truncation=True, max_length=args.max_length,
                return_tensors="pt",
            )  # fmt: skip
            loss = model(**batch, labels=y[idx]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            steps += 1
            examples += len(idx)
    train_s = time.perf_counter() - t0
    if max_steps is not None:
        return {"train_seconds": train_s, "steps": steps, "examples_per_s": examples / train_s}
    model.eval()
    probs = np.zeros((len(x_dev), len(labels)))
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(x_dev), 64):
            batch = tokenizer(
                x_dev[start : start + 64], padding="longest", truncation=True, max_length=args.max_length,
                return_tensors="pt",
            )  # fmt: skip
            probs[start : start + 64] = torch.softmax(model(**batch).logits.double(), -1).numpy()
    eval_s = time.perf_counter() - t0
    return {
        "labels": labels,
        "probs": probs,
        "train_seconds": train_s,
        "steps": steps,
        "examples_per_s": examples / train_s,
        "eval_seconds": eval_s,
    }


def score(run: dict, y_dev: list[str], y_tr: list[str]) -> dict:
    from nlptool.core.can import calibrate
    from nlptool.core.metrics import accuracy, macro_f1

    labels = run["labels"]
    index = {lab: i for i, lab in enumerate(labels)}
    gold = np.asarray([index[lab] for lab in y_dev])
    probs = run["probs"]
    pred = probs.argmax(axis=1)
    prior = np.bincount([index[lab] for lab in y_tr], minlength=len(labels)) / len(y_tr)
    adjusted, mask, _ = calibrate(probs, prior, k=3, threshold=0.9, alpha=1.0, iterations=1, return_mask=True,
                                  renormalize=True)  # fmt: skip
    return {
        "accuracy": accuracy(gold, pred),
        "macro_f1": macro_f1(gold, pred, len(labels)),
        "can_accuracy_after": accuracy(gold, adjusted.argmax(axis=1)),
        "can_uncertain": int(mask.sum()),
        "can_changed": int((adjusted.argmax(axis=1) != pred).sum()),
        "examples_per_s": run["examples_per_s"],
        "train_seconds": run["train_seconds"],
        "steps": run["steps"],
        "eval_seconds": run["eval_seconds"],
    }


def main(argv: list[str] | None = None) -> None:
    import torch
    import transformers

    args = parse_args(argv)
    if args.from_log:
        lines = Path(args.from_log).read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.startswith('{"seed"')]
        print_table(rows, args, [s for s in args.systems.split(",") if s], "(from the log of the run)")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    systems = [s for s in args.systems.split(",") if s]
    if args.speed_rounds:
        speed(args, systems)
        return
    rows: list[dict[str, Any]] = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        data = load_split(args.data, seed, args.train_size, args.dev_size)
        labels = sorted(set(data[1]))
        for system in systems:
            if system == "peer":
                run = run_peer(args, seed, data, labels)
            else:
                hls = 1.0 if system == "ours-hls1" else args.head_lr_scale
                run = run_ours(args, seed, data, head_lr_scale=hls, group=system != "ours-nogroup")
            row = {"seed": seed, "system": system, **score(run, data[3], data[1])}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    meta = {
        "argv": sys.argv,
        "args": vars(args),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (out_dir / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    versions = f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}"
    print_table(rows, args, systems, versions)


def speed(args: argparse.Namespace, systems: list[str]) -> None:
    """Interleaved training throughput: round r trains every system for ``--speed-steps`` optimizer steps (seed
    ``first seed + r``: each round draws other batches, the same for every system's shuffling seed), the order of the
    systems rotated by one each round; the loop's own time only (model loading excluded). Prints each round's
    examples/s, the per-round ratio to the peer, and their medians."""
    import statistics

    import torch

    seed0 = int(args.seeds.split(",")[0])
    data = load_split(args.data, seed0, args.train_size, args.dev_size)
    labels = sorted(set(data[1]))
    rates: dict[str, list[float]] = {s: [] for s in systems}
    for r in range(args.speed_rounds):
        order = systems[r % len(systems) :] + systems[: r % len(systems)]
        for system in order:
            if system == "peer":
                run = run_peer(args, seed0 + r, data, labels, max_steps=args.speed_steps)
            else:
                hls = 1.0 if system == "ours-hls1" else args.head_lr_scale
                run = run_ours(args, seed0 + r, data, head_lr_scale=hls, group=system != "ours-nogroup",
                               max_steps=args.speed_steps)  # fmt: skip
            rates[system].append(run["examples_per_s"])
            print(json.dumps({"round": r, "system": system, **run}), file=sys.stderr, flush=True)
    print(f"training throughput, AG News {args.train_size} train rows (seed {seed0}), batch {args.batch_size}, "
          f"{args.speed_steps} steps per system per round, {args.speed_rounds} rounds rotated; torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s)")  # fmt: skip
    print()
    print("| system | examples/s per round | median | median ratio to peer |")
    print("|---|---|---|---|")
    for system in systems:
        ratio = "-"
        if "peer" in rates and system != "peer":
            ratio = f"{statistics.median(a / b for a, b in zip(rates[system], rates['peer'], strict=True)):.2f}"
        per = " / ".join(f"{v:.2f}" for v in rates[system])
        print(f"| {system} | {per} | {statistics.median(rates[system]):.2f} | {ratio} |")


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace, systems: list[str], versions: str) -> None:
    print(f"AG News {args.train_size} train / {args.dev_size} dev (stratified), MiniLM-L6, {args.epochs} epoch(s), "
          f"batch {args.batch_size}, lr {args.lr:g}, warmup {args.warmup:g}, max length {args.max_length}; "
          f"{versions}")  # fmt: skip
    print()
    print("| seed | system | dev acc | macro-F1 | train ex/s | × peer | CAN acc after | uncertain | changed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        peer = next((r for r in rows if r["seed"] == row["seed"] and r["system"] == "peer"), None)
        ratio = f"{row['examples_per_s'] / peer['examples_per_s']:.2f}" if peer else "-"
        print(
            f"| {row['seed']} | {row['system']} | {100 * row['accuracy']:.2f} | {100 * row['macro_f1']:.2f} | "
            f"{row['examples_per_s']:.1f} | {ratio} | {100 * row['can_accuracy_after']:.2f} | "
            f"{row['can_uncertain']} | {row['can_changed']} |"
        )
    if len({r["seed"] for r in rows}) > 1:
        print()
        print("| system | mean dev acc | mean train ex/s |")
        print("|---|---|---|")
        for system in systems:
            rs = [r for r in rows if r["system"] == system]
            print(f"| {system} | {100 * np.mean([r['accuracy'] for r in rs]):.2f} | "
                  f"{np.mean([r['examples_per_s'] for r in rs]):.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()

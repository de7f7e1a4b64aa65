"""Su Jianlin's five-task CoSENT protocol on the Chinese SentEval sets (ATEC, BQ, LCQMC, PAWSX, STS-B).

For each task: train ``nlptool train-cosent`` on ``<task>.train.data`` with ``--dev <task>.valid.data``, then report
the test Spearman (×100) of the saved model with ``nlptool eval-sts`` on ``<task>.test.data``, next to the numbers Su
published (CoSENT post, BERT-base Chinese, test): ATEC 49.74, BQ 72.38, LCQMC 78.69, PAWSX 60.00, STS-B 80.14.

It needs a Chinese encoder (``--model``, e.g. a local copy of bert-base-chinese or chinese-roberta-wwm-ext) and the
tasks' train splits. ``../shared/data/sts/senteval_cn`` holds only the valid/test splits (plus STS-B train), so here
the script runs STS-B alone and says which train files are missing; point ``--data-dir`` at a full copy of the data
(the files of the CoSENT_Pytorch repository) to run all five. Before training it also prints the untrained model's
test Spearman, the baseline the post compares against.

Example:
    PYTHONPATH=. python benchmarks/bench_cosent_cn.py --model /models/bert-base-chinese --pooling first-last-avg
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = {"ATEC": 49.74, "BQ": 72.38, "LCQMC": 78.69, "PAWSX": 60.00, "STS-B": 80.14}


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, timeout=24 * 3600)


def spearman(model: str, pairs: Path, out: Path, extra: list[str]) -> float:
    metrics = out / f"eval-{pairs.stem}.json"
    run(
        [
            sys.executable,
            "-m",
            "nlptool",
            "-q",
            "eval-sts",
            str(pairs),
            "--model",
            model,
            "--metrics-out",
            str(metrics),
            "--force",
            *extra,
        ]
    )
    return 100 * json.loads(metrics.read_text())["metrics"]["spearman"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a Chinese encoder: local folder or hub id")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "sts" / "senteval_cn"))
    p.add_argument("--tasks", default="ATEC,BQ,LCQMC,PAWSX,STS-B")
    p.add_argument("--out-dir", default=str(REPO / "bench_out" / "cosent_cn"))
    p.add_argument("--pooling", default=None, help="e.g. cls or first-last-avg (Su's runs); default: the model's")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--scale", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()

    data, out_root = Path(args.data_dir), Path(args.out_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    pool = ["--pooling", args.pooling] if args.pooling else []
    rows = []
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        folder = data / task
        train, valid, test = (folder / f"{task}.{s}.data" for s in ("train", "valid", "test"))
        if not train.is_file() or not test.is_file():
            missing = ", ".join(str(f) for f in (train, test) if not f.is_file())
            print(f"{task}: skipped, missing {missing}", flush=True)
            rows.append({"task": task, "skipped": missing})
            continue
        out = out_root / task
        before = spearman(args.model, test, out_root, pool + ["--max-length", str(args.max_length)])
        cmd = [
            sys.executable,
            "-m",
            "nlptool",
            "-q",
            "train-cosent",
            "--model",
            args.model,
            "--train",
            str(train),
            "--out",
            str(out),
            "--force",
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch_size),
            "--lr",
            str(args.lr),
            "--max-length",
            str(args.max_length),
            "--scale",
            str(args.scale),
            "--seed",
            str(args.seed),
            *pool,
        ]
        if valid.is_file():
            cmd += ["--dev", str(valid)]
        run(cmd)
        after = spearman(str(out), test, out_root, [])
        rows.append({"task": task, "before": before, "after": after, "published": PUBLISHED.get(task)})
        print(
            f"{task:6s} test Spearman: untrained {before:6.2f}  CoSENT {after:6.2f}  (Su: {PUBLISHED.get(task)})",
            flush=True,
        )
    print("RESULT " + json.dumps({"rows": rows, "args": vars(args)}, sort_keys=True, ensure_ascii=False))


if __name__ == "__main__":
    main()

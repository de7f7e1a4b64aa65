"""Benchmark: seconds per optimizer step of the multi-task trainer's methods against one backward of the summed loss.

The cost the issue asks about (issue 15, "Cost"): the trainer's gradient hook backs each task's loss up on its own,
moves the encoder's gradient into a per-task buffer, accumulates the float64 Gram matrix parameter by parameter and
writes ``Σ wᵢ gᵢ`` back. Its peer here is the plain loop on the same model and batches: ``train()`` without a hook,
one backward of the summed loss (``plain``). Target: ≤ 1.15× ``plain`` for every method.

Setup: the bundled all-MiniLM-L6-v2 (``SentenceEncoder.load(None)``), CoSENT on STS-B en training pairs and an EGP
head on CoNLL-2003 training sentences (``../shared/data``), ``--batch-size`` examples per task per step, max length
64, fp32, one torch thread by default. Every round runs every setting for ``--steps`` optimizer steps (one ``train()``
call each: ``TrainResult.train_seconds``, the loop proper, set-up excluded), in an order rotated every round, so all
settings see the same machine load; reported: the median over rounds of seconds per step, and its ratio to
``plain``'s median.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_multitask_step.py --rounds 5

Prints a table and one JSON line (the last line of stdout).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
METHODS = ("sum", "gradnorm-sum", "mgda", "pcgrad", "loss-norm", "main-aux")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from nlptool.core.cosent import PairTask
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.multitask import GradientCombiner, MultiTaskModel, VirtualExamples
    from nlptool.core.multitask.trainer import _collate_for
    from nlptool.core.ner import NerTask, label_set, read_ner_jsonl
    from nlptool.core.ner_convert import convert
    from nlptool.core.pairs import read_pairs
    from nlptool.core.seeding import seed_everything
    from nlptool.core.train import TrainConfig, train

    n = args.batch_size * args.steps * 4
    pairs = read_pairs(str(DATA / "sts" / "stsb-en" / "stsb-en-train.csv"))
    records = list(convert(str(DATA / "ner" / "conll2003" / "train.txt"), "conll")[0])[:n]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "conll.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        texts = read_ner_jsonl(str(path))
    seed_everything(0)
    encoder = SentenceEncoder.load(None, max_length=64)
    sts = PairTask(encoder, pairs.label_type)
    ner = NerTask(encoder, label_set(texts), max_length=64)
    windows, _ = ner.windows(texts)
    tasks = [sts, ner]
    examples = [sts.examples(pairs)[:n], windows]
    model = MultiTaskModel(encoder, tasks)
    virtual = VirtualExamples([len(e) for e in examples], seed=0)
    collate = _collate_for(tasks, examples, virtual)
    config = TrainConfig(
        max_steps=args.steps, batch_size=args.batch_size, lr=1e-6, warmup_steps=0, device=args.device, log_every=0
    )

    def summed(m, batch):
        return sum(m(batch).values())

    settings = ["plain", *METHODS]
    times: dict[str, list[float]] = {s: [] for s in settings}
    for r in range(args.rounds):
        order = settings[r % len(settings) :] + settings[: r % len(settings)]
        for name in order:
            hook = None
            if name != "plain":
                hook = GradientCombiner(model, name, main=0 if name == "main-aux" else None)
            result = train(model, virtual, collate, summed, config, gradient_hook=hook)
            times[name].append(result.train_seconds / result.steps)
    base = statistics.median(times["plain"])
    rows = {
        s: {"s_per_step": statistics.median(times[s]), "ratio": statistics.median(times[s]) / base} for s in settings
    }
    print(f"{'setting':<14} {'s/step':>8} {'× plain':>8}")
    for s in settings:
        print(f"{s:<14} {rows[s]['s_per_step']:8.3f} {rows[s]['ratio']:8.3f}")
    print(
        json.dumps(
            {
                "rows": rows,
                "times": times,
                "args": vars(args),
                "torch": torch.__version__,
                "machine": platform.processor() or platform.machine(),
                "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
            }
        )
    )


if __name__ == "__main__":
    main()

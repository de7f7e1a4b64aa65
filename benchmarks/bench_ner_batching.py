"""How ``ner predict`` should batch on CPU: a cap on padded tokens per batch against plain batches of 64 windows.

``nlptool.core.ner.predict_spans`` (tokenize, forward, decode, merge; end to end) on a slice of CoNLL-2003
*training* sentences (not dev, which the NER tables report), with a trained model folder, for each token cap in
``--caps`` (0: no cap, batches of ``--batch-size`` windows only). The caps are timed interleaved, in a rotating order,
``--repeats`` times after one untimed warm-up each; the script prints medians, the ratio to the uncapped run and the
padding each cap leaves. Run it once per thread count (``--threads``).

Example (the measurement behind ``CPU_MAX_BATCH_TOKENS = 1024``; any ``ner train`` output folder):
    flock /tmp/nlptool_cpu.lock python benchmarks/bench_ner_batching.py --model-dir bench_out/ner/work/conll/model-egp \
        --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NLPTOOL_SHARED_DATA", REPO.parent / "shared" / "data")) / "ner"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True, help="a folder written by 'nlptool ner train'")
    p.add_argument("--train-file", default=str(DATA / "conll2003" / "train.txt"), help="CoNLL-2003 training file")
    p.add_argument("--start", type=int, default=2000, help="first training sentence of the slice")
    p.add_argument("--texts", type=int, default=2000, help="sentences in the slice")
    p.add_argument("--caps", default="0,512,768,1024,1536", help="token caps to compare (0: none)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch

    from nlptool.core.batching import length_batches
    from nlptool.core.ner import SpanNerModel, encode_windows, predict_spans
    from nlptool.core.ner_convert import convert

    torch.set_num_threads(args.threads)
    records = list(convert(args.train_file, "conll")[0])[args.start : args.start + args.texts]
    texts = [r["text"] for r in records]
    model, tok, cfg = SpanNerModel.load(args.model_dir)
    caps = [int(c) for c in args.caps.split(",")]
    windows, _ = encode_windows(tok, texts, max_length=cfg["max_length"], stride=cfg["stride"])
    lengths = [len(w) for w in windows]
    print(
        f"{len(texts)} training sentences from {args.train_file} [{args.start}:{args.start + len(texts)}], "
        f"{len(windows)} windows, {sum(lengths)} tokens (max {max(lengths)}); {args.threads} thread(s); "
        f"batch size {args.batch_size}; {args.repeats} repeats"
    )
    pad = {}
    for cap in caps:
        batches = length_batches(lengths, args.batch_size, cap)
        pad[cap] = (len(batches), sum(len(b) * lengths[b[0]] for b in batches) - sum(lengths))
    times: dict[int, list[float]] = {c: [] for c in caps}
    for cap in caps:
        predict_spans(model, tok, texts[:64], batch_size=args.batch_size, max_batch_tokens=cap)  # warm-up
    for repeat in range(args.repeats):
        for cap in caps[repeat % len(caps) :] + caps[: repeat % len(caps)]:
            t0 = time.perf_counter()
            predict_spans(model, tok, texts, batch_size=args.batch_size, max_batch_tokens=cap)
            times[cap].append(time.perf_counter() - t0)
    base = statistics.median(times[caps[0]])
    print(f"\n| token cap | batches | padding tokens | median s | texts/s | × cap {caps[0]} | raw s |")
    print("|---|---|---|---|---|---|---|")
    for cap in caps:
        med = statistics.median(times[cap])
        print(
            f"| {cap or 'none'} | {pad[cap][0]} | {pad[cap][1]} | {med:.3f} | {len(texts) / med:.1f} | "
            f"{base / med:.3f} | {', '.join(f'{t:.3f}' for t in times[cap])} |"
        )


if __name__ == "__main__":
    main()

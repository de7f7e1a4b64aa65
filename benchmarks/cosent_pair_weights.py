"""How concentrated is CoSENT's gradient? For random batches of STS-B dev pairs, with the cosines a model gives them,
CoSENT's gradient on each violating pair (label_i > label_j) is proportional to w_ij = exp(λ(cos_j − cos_i)) / Z,
Z = 1 + Σ exp(...). This script reports, per λ, the mean effective number of pairs that share the gradient
(1 / Σ w², the participation ratio) and the weight of the single heaviest pair, plus the spread of the cosines.

Example: PYTHONPATH=. python benchmarks/cosent_pair_weights.py --scales 2,5,10,20 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", default=str(REPO.parent / "shared" / "data" / "sts" / "stsb-en" / "stsb-en-dev.csv"))
    p.add_argument("--model", default=None)
    p.add_argument("--scales", default="2,5,10,20")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from nlptool.core.cosent import evaluate_pairs
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.pairs import read_pairs

    data = read_pairs(args.pairs)
    enc = SentenceEncoder.load(args.model)
    cos = evaluate_pairs(enc, data, batch_size=64, device="cpu")["cosine"]
    y = data.labels
    rng = np.random.default_rng(args.seed)
    print(
        f"{enc.name} on {args.pairs}: {len(y)} pairs; cosine mean {cos.mean():.3f}, std {cos.std():.3f}, "
        f"range [{cos.min():.3f}, {cos.max():.3f}]"
    )
    out = {"model": enc.name, "cos_mean": float(cos.mean()), "cos_std": float(cos.std()), "scales": {}}
    print("λ     effective pairs (1/Σw²)   heaviest pair weight   ordered pairs per batch")
    for scale in [float(s) for s in args.scales.split(",")]:
        eff, top, nviol = [], [], []
        for _ in range(args.batches):
            idx = rng.choice(len(y), args.batch_size, replace=False)
            c, t = cos[idx], y[idx]
            mask = t[:, None] > t[None, :]
            logits = scale * (c[None, :] - c[:, None])[mask]
            if logits.size == 0:
                continue
            z = np.concatenate([[0.0], logits])
            w = np.exp(z - z.max())
            w = w[1:] / w.sum()  # weights of the pairs (the "1 +" term takes the rest)
            share = w / w.sum()
            eff.append(1.0 / np.sum(share**2))
            top.append(share.max())
            nviol.append(logits.size)
        out["scales"][str(scale)] = {
            "effective_pairs": float(np.mean(eff)),
            "top_weight": float(np.mean(top)),
            "pairs": float(np.mean(nviol)),
        }
        print(f"{scale:<5g} {np.mean(eff):24.1f} {np.mean(top):22.3f} {np.mean(nviol):27.1f}")
    print("RESULT " + json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()

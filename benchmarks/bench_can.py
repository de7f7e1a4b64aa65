"""Benchmark: vectorised ``calibrate`` against the per-row ``calibrate_reference`` (CAN) in one run.

Synthetic predictions: labels drawn from a skewed class distribution, logits ``N(0, noise^2)`` plus ``boost`` on the
true class, divided by ``--temperature`` and softmaxed, so that some rows are confident and some are not. The prior
given to CAN is the label distribution. Both implementations get the same input; the reference is timed on all
confident rows plus the first ``--ref-rows`` uncertain rows (its cost is linear in the number of uncertain rows), and
its full-input time is extrapolated from that. Repeats are interleaved (vectorised, reference, ...) so that drifts in
machine load hit both; medians are reported. The maximum absolute difference is taken over the rows both computed.

    python benchmarks/bench_can.py --rows 100000 --classes 20 --repeats 5 --seed 0 --iterations 1

Prints a plain table and one JSON line (last line of stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

from nlptool.core.can import calibrate, calibrate_reference, topk_uncertainty


def make_data(rows: int, classes: int, seed: int, noise: float, boost: float, temperature: float):
    rng = np.random.default_rng(seed)
    class_freq = rng.dirichlet(np.full(classes, 2.0))
    labels = rng.choice(classes, size=rows, p=class_freq)
    logits = rng.normal(size=(rows, classes)) * noise
    logits[np.arange(rows), labels] += boost
    logits /= temperature
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    prior = np.bincount(labels, minlength=classes) / rows
    return probs, labels, prior


def timed_interleaved(fns: dict, repeats: int):
    """Run each function once per repeat, in turn (so slow drifts in machine load hit all alike); medians + results."""
    times = {name: [] for name in fns}
    results = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}, results


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=1)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--noise", type=float, default=1.5, help="std of the Gaussian logits")
    ap.add_argument("--boost", type=float, default=3.0, help="logit added to the true class")
    ap.add_argument("--temperature", type=float, default=1.0, help="logits are divided by this before softmax")
    ap.add_argument(
        "--ref-rows",
        type=int,
        default=200,
        help="uncertain rows the reference is timed on (0 = all; then nothing is extrapolated)",
    )
    args = ap.parse_args(argv)

    probs, labels, prior = make_data(args.rows, args.classes, args.seed, args.noise, args.boost, args.temperature)
    params = dict(prior=prior, k=args.k, threshold=args.threshold, alpha=args.alpha, iterations=args.iterations)
    unc = topk_uncertainty(probs, k=args.k)
    uncertain = ~(unc < args.threshold)
    n_unc = int(uncertain.sum())
    n_conf = args.rows - n_unc

    unc_idx = np.flatnonzero(uncertain)
    ref_unc = unc_idx if args.ref_rows <= 0 or args.ref_rows >= n_unc else unc_idx[: args.ref_rows]
    extrapolated = len(ref_unc) < n_unc
    subset = np.sort(np.concatenate([np.flatnonzero(~uncertain), ref_unc]))  # confident rows keep their order
    fns = {
        "vectorised": lambda: calibrate(probs, return_mask=True, **params),
        "reference": lambda: calibrate_reference(probs[subset], return_mask=True, **params),
    }
    if extrapolated:
        # fixed part (validation, uncertainty) measured on the confident rows alone; the per-row part scales linearly
        fns["reference_fixed"] = lambda: calibrate_reference(probs[~uncertain], **params)
    medians, results = timed_interleaved(fns, args.repeats)
    t_vec, (out_vec, mask_vec, _) = medians["vectorised"], results["vectorised"]
    t_ref_sub, (out_ref, mask_ref, _) = medians["reference"], results["reference"]
    if extrapolated:
        t_fixed = medians["reference_fixed"]
        per_row = max(t_ref_sub - t_fixed, 0.0) / max(len(ref_unc), 1)
        t_ref = t_fixed + per_row * n_unc
    else:
        t_ref = t_ref_sub

    max_diff = float(np.abs(out_ref - out_vec[subset]).max())
    masks_equal = bool(np.array_equal(mask_ref, mask_vec[subset]))
    acc_before = float((probs.argmax(axis=1) == labels).mean())
    acc_after = float((out_vec.argmax(axis=1) == labels).mean())

    print(
        f"CAN benchmark: rows={args.rows} classes={args.classes} k={args.k} threshold={args.threshold} "
        f"alpha={args.alpha} iterations={args.iterations} repeats={args.repeats} seed={args.seed}"
    )
    print(f"uncertain rows: {n_unc} of {args.rows} ({n_unc / args.rows:.1%}); confident: {n_conf}")
    print(f"{'implementation':<24}{'rows timed':>12}{'s, all rows':>14}{'rows/s':>16}  note")
    print(f"{'calibrate (vectorised)':<24}{args.rows:>12}{t_vec:>14.4f}{args.rows / t_vec:>16.0f}  measured (median)")
    note = (
        f"EXTRAPOLATED to all {args.rows} rows from {len(ref_unc)} of {n_unc} uncertain rows "
        f"(+{n_conf} confident rows as context)"
        if extrapolated
        else "measured (median)"
    )
    print(f"{'calibrate_reference':<24}{len(subset):>12}{t_ref:>14.4f}{args.rows / t_ref:>16.0f}  {note}")
    if extrapolated:
        print(
            f"  reference measured on its subset: {t_ref_sub:.4f} s for {len(subset)} rows "
            f"({len(ref_unc)} uncertain); fixed part on confident rows alone: {t_fixed:.4f} s"
        )
    print(f"speed ratio (reference / vectorised): {t_ref / t_vec:.1f}x")
    print(
        f"max abs difference on the {len(subset)} rows both computed: {max_diff:.3e}; adjusted masks equal: "
        f"{masks_equal}"
    )
    print(f"argmax accuracy vs synthetic labels: before {acc_before:.4f}, after {acc_after:.4f}")
    print(
        json.dumps(
            {
                "bench": "can",
                "rows": args.rows,
                "classes": args.classes,
                "k": args.k,
                "threshold": args.threshold,
                "alpha": args.alpha,
                "iterations": args.iterations,
                "repeats": args.repeats,
                "seed": args.seed,
                "uncertain_rows": n_unc,
                "uncertain_fraction": n_unc / args.rows,
                "vectorised_s": t_vec,
                "vectorised_rows_per_s": args.rows / t_vec,
                "reference_s": t_ref,
                "reference_rows_per_s": args.rows / t_ref,
                "reference_extrapolated": extrapolated,
                "reference_uncertain_rows_timed": int(len(ref_unc)),
                "reference_subset_s": t_ref_sub,
                "speed_ratio": t_ref / t_vec,
                "max_abs_diff": max_diff,
                "compared_rows": int(len(subset)),
                "masks_equal": masks_equal,
                "accuracy_before": acc_before,
                "accuracy_after": acc_after,
                "numpy": np.__version__,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()

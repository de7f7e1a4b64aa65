"""Benchmark: vectorised entropy normalisation against a per-row scipy ``brentq`` reference, in one run.

Random Dirichlet rows (alpha = 0.5); target ``H* = target_ratio * log(k)``. The vectorised
``nlptool.core.entropy.normalize`` runs on all rows; the reference (implemented here: ``brentq`` on ``gamma`` per
row, Python loop) runs on the first ``--ref-rows`` rows only, and its throughput is extrapolated as rows/s. Accuracy
is compared on those shared rows.

    python benchmarks/bench_entropy.py --rows 100000 --classes 20 --repeats 5 --seed 0 --target-ratio 0.5

Prints a plain-text table and one JSON line (``RESULT {...}``) for BENCHMARKS.md.

Reference: Su Jianlin, "概率分布的熵归一化", 2021, https://kexue.fm/archives/8829
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import scipy
from scipy.optimize import brentq

from nlptool.core.entropy import entropy, normalize


def _powered(logp: np.ndarray, gamma: float) -> np.ndarray:
    z = gamma * logp
    z -= z.max()
    w = np.exp(z)
    return w / w.sum()


def _row_entropy(w: np.ndarray) -> float:
    w = w[w > 0]
    return float(-np.sum(w * np.log(w)))


def reference_row(p: np.ndarray, h_star: float) -> tuple[np.ndarray, float]:
    """Solve H(p**g / sum p**g) = h_star for one row with brentq on g in [0, b], b found by doubling."""
    nz = p > 0
    logp = np.log(p[nz])

    def f(g: float) -> float:
        return _row_entropy(_powered(logp, g)) - h_star

    b = 1.0
    while f(b) > 0:
        b *= 2.0
    g = brentq(f, 0.0, b, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)
    out = np.zeros_like(p)
    out[nz] = _powered(logp, g)
    return out, g


def reference(probs: np.ndarray, h_star: float) -> tuple[np.ndarray, np.ndarray]:
    outs, gammas = zip(*(reference_row(row, h_star) for row in probs), strict=True)
    return np.array(outs), np.array(gammas)


def _median_time(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000, help="rows for the vectorised run")
    ap.add_argument("--classes", type=int, default=20, help="classes per row (k)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-ratio", type=float, default=0.5, help="H* = ratio * log(k)")
    ap.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    ap.add_argument("--ref-rows", type=int, default=2000, help="rows timed for the per-row brentq reference")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    probs = rng.dirichlet(np.full(args.classes, args.alpha), size=args.rows)
    h_star = args.target_ratio * np.log(args.classes)
    ref_rows = min(args.ref_rows, args.rows)

    normalize(probs[:100], target_ratio=args.target_ratio)  # warm-up
    t_vec, (vec_p, vec_g) = _median_time(lambda: normalize(probs, target_ratio=args.target_ratio), args.repeats)
    t_ref, (ref_p, ref_g) = _median_time(lambda: reference(probs[:ref_rows], h_star), args.repeats)

    vec_rps = args.rows / t_vec
    ref_rps = ref_rows / t_ref
    res = {
        "rows": args.rows,
        "classes": args.classes,
        "target_ratio": args.target_ratio,
        "alpha": args.alpha,
        "seed": args.seed,
        "repeats": args.repeats,
        "ref_rows": ref_rows,
        "vectorised_median_s": t_vec,
        "vectorised_rows_per_s": vec_rps,
        "reference_median_s": t_ref,
        "reference_rows_per_s": ref_rps,
        "speedup": vec_rps / ref_rps,
        "max_abs_diff_probs": float(np.max(np.abs(vec_p[:ref_rows] - ref_p))),
        "max_abs_diff_gamma": float(np.max(np.abs(vec_g[:ref_rows] - ref_g))),
        "max_abs_entropy_err_vectorised": float(np.max(np.abs(entropy(vec_p) - h_star))),
        "max_abs_entropy_err_reference": float(np.max(np.abs(entropy(ref_p) - h_star))),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }

    print(
        f"entropy normalisation: {args.rows} Dirichlet(alpha={args.alpha}) rows x {args.classes} classes, "
        f"H* = {args.target_ratio} x log({args.classes}) = {h_star:.6f} nats, seed {args.seed}, "
        f"median of {args.repeats} repeats"
    )
    print(
        f"reference (per-row scipy brentq) timed on the first {ref_rows} rows only; its rows/s is extrapolated "
        "from that subset"
    )
    print()
    print(f"{'method':<34}{'rows timed':>12}{'median s':>12}{'rows/s':>14}")
    print(f"{'normalize (vectorised numpy)':<34}{args.rows:>12}{t_vec:>12.4f}{vec_rps:>14.0f}")
    print(f"{'reference (brentq per row)':<34}{ref_rows:>12}{t_ref:>12.4f}{ref_rps:>14.0f}")
    print()
    print(f"speedup (rows/s ratio):            {res['speedup']:.1f}x")
    print(f"max |p_vec - p_ref| (shared rows): {res['max_abs_diff_probs']:.3g}")
    print(f"max |g_vec - g_ref| (shared rows): {res['max_abs_diff_gamma']:.3g}")
    print(f"max |H - H*| vectorised (all):     {res['max_abs_entropy_err_vectorised']:.3g}")
    print(f"max |H - H*| reference (shared):   {res['max_abs_entropy_err_reference']:.3g}")
    print("RESULT " + json.dumps(res, sort_keys=True))
    return res


if __name__ == "__main__":
    main()

"""Benchmark: ``nlptool.core.multitask.combine`` (PCGrad, exact MGDA) against TorchJD's aggregators, same inputs.

Run it in a separate environment that has TorchJD (it is imported only here, never by nlptool)::

    python3 -m venv /work/venv-peer && /work/venv-peer/bin/pip install torch==2.13.0 torchjd numpy
    OMP_NUM_THREADS=1 PYTHONPATH=$PWD /work/venv-peer/bin/python benchmarks/bench_multitask_combine.py

Random gradient sets (the Jacobian J, T × P, float64): every row ``randn(P)/√P`` plus a shared direction with a random
signed coefficient (so tasks agree and conflict in realistic mixes), each row scaled by ``exp(N(0, 1))``; T in
{2, 3, 5, 8}, P in {10, 1000}, ``--seeds`` seeds each.

Conventions compared like with like (read from TorchJD's source): both aggregators return ``wᵀJ``: TorchJD's
``PCGrad`` sums the projected rows (Yu et al.'s Algorithm 1, no mean), as ours; TorchJD's ``MGDA`` returns
``Σ αᵢ gᵢ`` with α on the simplex (Frank-Wolfe, Sener & Koltun's Algorithm 2, from the uniform α, ``epsilon=1e-3``,
``max_iters=100``), as ours. Both compute the Gramian from J in J's dtype (float64 here).

(a) PCGrad: max |u_ours − u_torchjd| over the coordinates. T = 2 (the order does not matter) is the target
    comparison; for T > 2 TorchJD draws one ``torch.randperm(T)`` per task i in task order, so the same seed is set
    before its call and the same permutations (i removed) are handed to ours as ``orders``.
(b) MGDA KKT residuals, relative to maxᵢ‖gᵢ‖² (scale-free): the stationarity residual
    ``maxᵢ∈S |⟨gᵢ,u⟩ − ‖u‖²|`` on the support ``S = {αᵢ > 1e-6}`` (Frank-Wolfe almost never sets an α exactly to 0,
    hence the threshold; for ours S = {αᵢ > 0} gives the same), and the violation ``max(0, maxᵢ ‖u‖² − ⟨gᵢ,u⟩)``
    of the optimality condition; and ``‖u‖`` of both (ours must never be larger), medians and maxima.
(c) time per call on J (Gramian included) of ours vs TorchJD's aggregator, 1 torch thread, interleaved with the
    order rotated every repetition; medians over the repetitions, then the median over the sets of each (T, P).

Prints tables and one JSON line (last line of stdout).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import numpy as np
import torch
import torchjd
from torchjd.aggregation import MGDA, PCGrad

from nlptool.core.multitask import combine

TS = (2, 3, 5, 8)
PS = (10, 1000)


def make_jacobian(t: int, p: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(t, p, dtype=torch.float64, generator=gen) / math.sqrt(p)
    shared = torch.randn(p, dtype=torch.float64, generator=gen) / math.sqrt(p)
    g = g + 0.5 * torch.randn(t, 1, dtype=torch.float64, generator=gen) * shared
    return g * torch.exp(torch.randn(t, 1, dtype=torch.float64, generator=gen))


def torchjd_orders(t: int, seed: int) -> list[list[int]]:
    """The permutations TorchJD's PCGradWeighting draws after ``torch.manual_seed(seed)`` (one per task, i removed)."""
    torch.manual_seed(seed)
    return [[j for j in torch.randperm(t).tolist() if j != i] for i in range(t)]


def kkt(j: torch.Tensor, u: torch.Tensor, alpha: np.ndarray, support_eps: float) -> tuple[float, float]:
    scale = float((j * j).sum(dim=1).max())
    inner = (j @ u).numpy()
    usq = float(u @ u)
    sup = alpha > support_eps
    stationarity = float(np.max(np.abs(inner[sup] - usq))) / scale
    violation = max(0.0, float(np.max(usq - inner))) / scale
    return stationarity, violation


def mgda_alpha_torchjd(agg: MGDA, j: torch.Tensor) -> np.ndarray:
    return agg.gramian_weighting(j @ j.T).numpy()


def timed(fn, *args, **kw) -> float:
    t0 = time.perf_counter()
    fn(*args, **kw)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--reps", type=int, default=15, help="timed calls per implementation and set")
    args = ap.parse_args()
    torch.set_num_threads(1)

    mgda_peer = MGDA()  # epsilon=1e-3, max_iters=100
    pcgrad_peer = PCGrad()
    rows_pc: dict[tuple[int, int], list[float]] = {}
    rows_mgda: dict[tuple[int, int], dict[str, list[float]]] = {}
    rows_time: dict[tuple[str, int, int], dict[str, list[float]]] = {}
    never_larger = True

    for t in TS:
        for p in PS:
            pcd, md = [], {k: [] for k in ("stat_ours", "viol_ours", "stat_fw", "viol_fw", "norm_gap")}
            tm = {
                ("pcgrad", t, p): {"ours": [], "torchjd": []},
                ("mgda", t, p): {"ours": [], "torchjd": []},
            }
            for seed in range(args.seeds):
                j = make_jacobian(t, p, 1000 * t + 10 * p + seed)
                # (a) PCGrad with the same orders
                orders = torchjd_orders(t, seed)
                u_ours, _ = combine(j, "pcgrad", orders=orders)
                torch.manual_seed(seed)
                u_peer = pcgrad_peer(j)
                pcd.append(float((u_ours - u_peer).abs().max()))
                # (b) MGDA
                u_ours, w_ours = combine(j, "mgda")
                u_fw = mgda_peer(j)
                a_fw = mgda_alpha_torchjd(mgda_peer, j)
                s, v = kkt(j, u_ours, w_ours.numpy(), 0.0)
                md["stat_ours"].append(s)
                md["viol_ours"].append(v)
                s, v = kkt(j, u_fw, a_fw, 1e-6)
                md["stat_fw"].append(s)
                md["viol_fw"].append(v)
                n_ours, n_fw = float(u_ours.norm()), float(u_fw.norm())
                md["norm_gap"].append((n_fw - n_ours) / max(n_ours, 1e-300))
                if n_ours > n_fw * (1 + 1e-12):
                    never_larger = False
                # (c) timing, interleaved and rotated
                calls = [
                    (("pcgrad", "ours"), lambda j=j, o=orders: combine(j, "pcgrad", orders=o)),
                    (("pcgrad", "torchjd"), lambda j=j: pcgrad_peer(j)),
                    (("mgda", "ours"), lambda j=j: combine(j, "mgda")),
                    (("mgda", "torchjd"), lambda j=j: mgda_peer(j)),
                ]
                for _, fn in calls:  # warm-up
                    fn()
                per = {k: [] for k, _ in calls}
                for r in range(args.reps):
                    for k in range(len(calls)):
                        key, fn = calls[(k + r) % len(calls)]
                        per[key].append(timed(fn))
                for (meth, who), vals in per.items():
                    tm[(meth, t, p)][who].append(statistics.median(vals))
            rows_pc[(t, p)] = pcd
            rows_mgda[(t, p)] = md
            rows_time.update(tm)

    print(f"# bench_multitask_combine: torch {torch.__version__}, torchjd {_torchjd_version()}, numpy {np.__version__}")
    print(f"# {platform.processor() or platform.machine()}, {platform.python_version()}, 1 torch thread, float64 J")
    print(f"# {args.seeds} seeds per (T, P), {args.reps} timed reps per call")
    print()
    print("(a) PCGrad: max |u_ours - u_torchjd| (same permutations)")
    print(f"{'T':>3} {'P':>5} {'median':>10} {'max':>10}")
    for (t, p), d in rows_pc.items():
        print(f"{t:>3} {p:>5} {statistics.median(d):>10.2e} {max(d):>10.2e}")
    print()
    print("(b) MGDA, KKT residuals relative to max ||g_i||^2; ||u|| gap = (||u_fw|| - ||u_ours||) / ||u_ours||")
    print(
        f"{'T':>3} {'P':>5} | {'stat ours':>19} | {'viol ours':>19} | {'stat FW':>19} | {'viol FW':>19} | "
        f"{'norm gap':>19}"
    )
    print(f"{'':>9} | " + " | ".join([f"{'median':>9} {'max':>9}"] * 5))
    for (t, p), md in rows_mgda.items():
        cells = []
        for k in ("stat_ours", "viol_ours", "stat_fw", "viol_fw", "norm_gap"):
            cells.append(f"{statistics.median(md[k]):>9.2e} {max(md[k]):>9.2e}")
        print(f"{t:>3} {p:>5} | " + " | ".join(cells))
    min_gap = min(min(md["norm_gap"]) for md in rows_mgda.values())
    print(f"ours never larger ||u|| than TorchJD's MGDA (1e-12 relative slack): {never_larger}; min gap {min_gap:.2e}")
    print()
    print("(c) time per call, microseconds (median over sets of the per-set median)")
    print(f"{'method':>7} {'T':>3} {'P':>5} {'ours':>10} {'torchjd':>10} {'torchjd/ours':>13}")
    timing = {}
    for (meth, t, p), d in rows_time.items():
        o, q = statistics.median(d["ours"]) * 1e6, statistics.median(d["torchjd"]) * 1e6
        timing[f"{meth}/T{t}/P{p}"] = {"ours_us": o, "torchjd_us": q}
        print(f"{meth:>7} {t:>3} {p:>5} {o:>10.1f} {q:>10.1f} {q / o:>13.2f}")

    summary = {
        "torch": torch.__version__,
        "torchjd": _torchjd_version(),
        "seeds": args.seeds,
        "reps": args.reps,
        "pcgrad_max_abs_diff": {f"T{t}/P{p}": max(d) for (t, p), d in rows_pc.items()},
        "mgda": {
            f"T{t}/P{p}": {k: {"median": statistics.median(v), "max": max(v)} for k, v in md.items() if v}
            for (t, p), md in rows_mgda.items()
        },
        "mgda_ours_never_larger": never_larger,
        "mgda_min_norm_gap": min(min(md["norm_gap"]) for md in rows_mgda.values()),
        "timing": timing,
    }
    print(json.dumps(summary, sort_keys=True))


def _torchjd_version() -> str:
    from importlib.metadata import version

    try:
        return version("torchjd")
    except Exception:  # pragma: no cover
        return getattr(torchjd, "__version__", "?")


if __name__ == "__main__":
    main()

"""Regenerate ``sample_data/`` (the CAN demo and test samples) from the outputs of ``bench_can_real.py``.

Needs the predictions that ``benchmarks/bench_can_real.py`` wrote (with its defaults: seed 0, the bundled
all-MiniLM-L6-v2, max length 128, 5-fold cross-fit) and the data files of ``--data-dir``::

    python benchmarks/bench_can_real.py --datasets agnews,sst2
    python benchmarks/make_sample_data.py

Writes (see ``sample_data/README.md``):

- ``sst2_preds.jsonl``: first 200 rows of GLUE SST-2 dev, ``{"sentence", "label", "probs": [p_neg, p_pos]}``;
- ``agnews_preds.jsonl``: first 300 rows of the AG News file, numbers only, ``{"id", "label", "probs": [4]}``;
- ``agnews_prior.csv``: ``label,count`` over all 3,800 AG News rows.

``probs`` are the out-of-fold probabilities of the ``embed-lr`` classifier, rounded to 6 decimals; the largest entry
of each row is then set to one minus the sum of the others (also a 6-decimal number), so every row sums to 1 within
1e-9 and every entry keeps exactly 6 decimals.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_can_real import AGNEWS_CLASSES, SST2_CLASSES, load_agnews, read_sst2  # noqa: E402

SST2_ROWS = 200
AGNEWS_ROWS = 300
CLASSIFIER = "embed-lr"


def round_row(row: list[float], decimals: int = 6) -> list[float]:
    """Round to ``decimals`` and give the rounding remainder to the largest entry, so the row sums to 1."""
    r = np.round(np.asarray(row, dtype=np.float64), decimals)
    top = int(np.argmax(r))
    r[top] = round(1.0 - (r.sum() - r[top]), decimals)
    if abs(r.sum() - 1.0) > 1e-9 or (r < 0).any():
        raise ValueError(f"cannot round {row} to a distribution with {decimals} decimals")
    return [float(v) for v in r]


def read_preds(path: Path, n: int) -> list[dict]:
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; run python benchmarks/bench_can_real.py first")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec["id"] != len(rows):
                raise SystemExit(f"error: {path}: ids out of order at id {rec['id']}")
            rows.append(rec)
            if len(rows) == n:
                break
    if len(rows) < n:
        raise SystemExit(f"error: {path} has {len(rows)} rows, need {n}")
    return rows


def write_lines(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--bench-dir", type=Path, default=REPO_ROOT / "bench_out" / "can_real")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "sample_data")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    # SST-2: sentence and gold label from the GLUE file, probabilities from the benchmark's predictions.
    texts, labels = read_sst2(args.data_dir / "zero_shot/sst2_glue_dev/dev.tsv")
    preds = read_preds(args.bench_dir / f"preds_sst2_{CLASSIFIER}.jsonl", SST2_ROWS)
    lines = []
    for i, rec in enumerate(preds):
        label = SST2_CLASSES[labels[i]]
        if rec["label"] != label:
            raise SystemExit(f"error: SST-2 row {i}: prediction file says {rec['label']}, data file says {label}")
        # The GLUE file ends every sentence with a space (PTB tokenisation); it is removed here.
        out = {"sentence": texts[i].rstrip(), "label": label, "probs": round_row(rec["probs"])}
        lines.append(json.dumps(out, ensure_ascii=False))
    write_lines(args.out_dir / "sst2_preds.jsonl", lines)

    # AG News: numbers only (the text's licence is research use).
    ds = load_agnews(args.data_dir)
    preds = read_preds(args.bench_dir / f"preds_agnews_{CLASSIFIER}.jsonl", AGNEWS_ROWS)
    lines = []
    for i, rec in enumerate(preds):
        label = AGNEWS_CLASSES[ds.data.labels[i]]
        if rec["label"] != label:
            raise SystemExit(f"error: AG News row {i}: prediction file says {rec['label']}, data file says {label}")
        lines.append(json.dumps({"id": i, "label": label, "probs": round_row(rec["probs"])}, ensure_ascii=False))
    write_lines(args.out_dir / "agnews_preds.jsonl", lines)

    counts = Counter(AGNEWS_CLASSES[j] for j in ds.data.labels)
    write_lines(args.out_dir / "agnews_prior.csv", ["label,count"] + [f"{c},{counts[c]}" for c in AGNEWS_CLASSES])

    print(
        f"wrote {args.out_dir}/sst2_preds.jsonl ({SST2_ROWS} rows), agnews_preds.jsonl ({AGNEWS_ROWS} rows), "
        f"agnews_prior.csv ({len(ds.data.labels)} rows counted)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: NSP-BERT zero-shot classification after nsp-adapt, against majority class and the embedding method.

Steps (all through the ``nlptool`` CLI, so the numbers are what a user gets):

1. Unlabelled corpus: the CoNLL-2003 *training* documents (Reuters news, ``ner/conll2003/train.txt`` under
   ``--data-dir``), tokens joined back into sentences, NER labels ignored. That file has no ``-DOCSTART-`` lines, so
   documents are found by their dateline sentence (``BRUSSELS 1996-08-22``): a document starts at the headline just
   before it (or before a short byline). Datelines themselves are dropped. The corpus is written to
   ``--out-dir/conll_corpus.txt`` (never into the repository: Reuters text may not be committed). None of it is
   evaluation text.
2. ``nlptool nsp-adapt --corpus conll_corpus.txt`` on ``--model`` (default: the bundled all-MiniLM-L6-v2, which has
   no NSP head); training time and held-out NSP accuracy are reported.
3. ``nlptool zero-shot`` on SST-2 (GLUE dev, 872) and AG News (3,800 rows of the test set, description only) with
   ``--method nsp`` (the adapted model) and ``--method embedding`` (the default model), then ``calibrate-can`` on
   each output (uniform prior: no label counts of the evaluation rows are used). Majority class = the most frequent
   gold label of the evaluation rows (the usual reference line; it knows the label counts, the others do not).
   Each method is also run with ``--calibrate content-free`` (contextual calibration, Zhao et al. 2021: divide by
   the label distribution the prompts give "N/A", "" and "[MASK]"; no labels, no evaluation text); this variant was
   added and its inclusion decided before it was run on any of these rows.
4. Throughput: zero-shot NSP scoring (batched, length-sorted, ``torch.inference_mode``) against a plain loop of
   ``BertForNextSentencePrediction`` calls with batch size 1 (one tokenizer call and one forward per pair, under
   ``torch.no_grad``), on the same pairs (the first ``--speed-rows`` AG News rows x 4 labels and SST-2 rows x 2
   labels), same process, ``--speed-repeats`` times. ``--datasets ""`` skips the evaluation (speed only).

Prompts were fixed before any evaluation run (from the prompt-learning literature; nothing was tuned on these rows):
SST-2 ``"It was {}."`` after the text (suffix) with ``terrible``/``great`` (the LM-BFF / PET words); AG News
``"The above news is about {}."`` after the text, with ``world``/``sports``/``business``/``technology``.

FewCLUE (EPRSTMT, TNEWS, CSLDCP, IFLYTEK) needs a Chinese model with an NSP head (``bert-base-chinese``), which is
not available offline here: ``--datasets eprstmt,tnews,csldcp,iflytek --model-nsp bert-base-chinese`` runs them
where it is (label words: the Chinese label names; templates in ``FEWCLUE``).

    flock /tmp/nlptool_cpu.lock python benchmarks/bench_zero_shot.py

Prints a plain-text table and ``RESULT {...}`` JSON lines; writes ``--out-dir/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"

SST2_LABELS = {"template": "It was {}.", "labels": {"0": "terrible", "1": "great"}}
AGNEWS_LABELS = {
    "template": "The above news is about {}.",
    "labels": {"World": "world", "Sports": "sports", "Business": "business", "Sci/Tech": "technology"},
}

# FewCLUE (Chinese; run with --datasets eprstmt,tnews,csldcp,iflytek --model-nsp bert-base-chinese where available).
# Templates in the spirit of NSP-BERT's (prompt first, "prefix"), label words = the label names (TNEWS: the Chinese
# names of label_index2en2zh.json; EPRSTMT: 好/差), fixed a priori.
FEWCLUE = {
    "eprstmt": ("fewclue_eprstmt", "sentence", "label", "这次买的东西很{}。", "suffix"),
    "tnews": ("fewclue_tnews", "sentence", "label_desc", "这是一则{}新闻。", "prefix"),
    "csldcp": ("fewclue_csldcp", "content", "label", "这是一篇{}论文。", "prefix"),
    "iflytek": ("fewclue_iflytek", "sentence", "label_des", "这是一款{}类应用。", "prefix"),
}
EPRSTMT_WORDS = {"Negative": "差", "Positive": "好"}


def fewclue_labels(name: str, folder: Path) -> dict:
    """The labels file of a FewCLUE task: every label of its train and test files, each with its Chinese word."""
    _, _, field, template, _ = FEWCLUE[name]
    names: list[str] = []
    for split in ("train_few_all.json", "test_public.json"):
        for line in (folder / split).read_text(encoding="utf-8").split("\n"):  # not splitlines: U+2028 in texts
            if line.strip():
                value = str(json.loads(line)[field])
                if value not in names:
                    names.append(value)
    if name == "eprstmt":
        words = {y: EPRSTMT_WORDS[y] for y in names}
    elif name == "tnews":
        table = [
            json.loads(x) for x in (folder / "label_index2en2zh.json").read_text(encoding="utf-8").split("\n") if x
        ]
        zh = {row["label_desc"]: row["label_zh"] for row in table if row}
        words = {y: zh[y] for y in names}
    else:
        words = {y: y for y in names}
    return {"template": template, "labels": words}


_DATELINE = re.compile(r"^[A-Z][A-Z .'/&-]* \d{4}-\d{2}-\d{2}$")


def detokenize(tokens: list[str]) -> str:
    """Join PTB-style tokens back into a sentence (``do n't`` → ``don't``, no space before punctuation)."""
    text = " ".join(tokens)
    text = re.sub(r" ([,.;:!?%)\]}])", r"\1", text)
    text = re.sub(r"([(\[{$]) ", r"\1", text)
    text = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", text)
    return text


def conll_documents(path: Path) -> list[list[str]]:
    """CoNLL-2003 sentences grouped into documents by their datelines (see the module docstring)."""
    sentences: list[list[str]] = []
    current: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            if current:
                sentences.append(current)
                current = []
            continue
        if line.startswith("-DOCSTART-"):
            continue
        current.append(line.split()[0])
    if current:
        sentences.append(current)
    texts = [detokenize(s) for s in sentences]
    starts = [0]
    for i, t in enumerate(texts):
        if _DATELINE.match(t) and i >= 1:
            start = i - 1
            byline = texts[i - 1]
            if i >= 2 and len(byline.split()) <= 4 and not byline.endswith(".") and i - 2 >= starts[-1]:
                start = i - 2  # headline, byline, dateline
            if start > starts[-1]:
                starts.append(start)
    docs = []
    for a, b in zip(starts, [*starts[1:], len(texts)], strict=True):
        doc = [t for t in texts[a:b] if not _DATELINE.match(t) and len(t) > 1]
        if doc:
            docs.append(doc)
    return docs


def nlptool(*args: str, log: Path) -> float:
    """Run the CLI; returns wall seconds; stderr goes to ``log`` (and is shown if the command fails)."""
    cmd = [sys.executable, "-m", "nlptool", *args]
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=fh, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.stderr.write(log.read_text(encoding="utf-8"))
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return time.perf_counter() - t0


def metrics_of(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))["metrics"]


def throughput(model_dir: str, rows: list[str], prompts: list[str], batch_size: int) -> dict:
    """Batched NSPScorer vs a batch-size-1 loop of BertForNextSentencePrediction on the same (text, prompt) pairs."""
    import numpy as np
    import torch

    from nlptool.core.nsp import NSPScorer

    scorer = NSPScorer.load(model_dir, max_length=256)
    scorer.score(rows[:8], prompts, position="suffix")  # warm-up
    t0 = time.perf_counter()
    batched = scorer.score(rows, prompts, position="suffix", batch_size=64)
    t_batched = time.perf_counter() - t0
    model, tok = scorer.model, scorer.tokenizer
    model.eval()
    loop = np.zeros_like(batched)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i, text in enumerate(rows):
            for j, prompt in enumerate(prompts):
                enc = tok(text, prompt, truncation="only_first", max_length=256, return_tensors="pt")
                loop[i, j] = torch.softmax(model(**enc).logits, dim=-1)[0, 0].item()
    t_loop = time.perf_counter() - t0
    pairs = len(rows) * len(prompts)
    return {
        "pairs": pairs,
        "batched_pairs_per_s": pairs / t_batched,
        "loop_pairs_per_s": pairs / t_loop,
        "speedup": t_loop / t_batched,
        "max_abs_diff": float(np.abs(batched - loop).max()),
        "torch_threads": torch.get_num_threads(),
    }


def print_table(results: list[dict]) -> None:
    print()
    head = f"{'dataset':8} {'method':10} {'majority':>9} {'acc':>7} {'macroF1':>8} {'acc+CAN':>8} {'acc+CF':>7}"
    print(head + f" {'F1+CF':>7} {'pairs/s':>9}")
    for r in results:
        print(
            f"{r['dataset']:8} {r['method']:10} {100 * r['majority']:9.2f} {100 * r['accuracy']:7.2f} "
            f"{100 * r['macro_f1']:8.2f} {100 * r['can_accuracy']:8.2f} {100 * r['cf_accuracy']:7.2f} "
            f"{100 * r['cf_macro_f1']:7.2f} {r['pairs_per_s']:9.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out-dir", type=Path, default=REPO / "bench_out" / "zero_shot")
    ap.add_argument("--model", default=None, help="Encoder to adapt and to embed with (default: the bundled MiniLM).")
    ap.add_argument("--model-nsp", default=None, help="Skip nsp-adapt and use this NSP model (e.g. bert-base-uncased).")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-layers", default="2")
    ap.add_argument("--max-pairs", type=int, default=None)
    ap.add_argument("--speed-rows", type=int, default=200, help="Texts per dataset for the throughput comparison.")
    ap.add_argument("--speed-repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--datasets",
        default="sst2,agnews",
        help="Comma list of sst2, agnews, eprstmt, tnews, csldcp, iflytek (FewCLUE needs a Chinese NSP model).",
    )
    ap.add_argument("--limit", type=int, default=None, help="Only the first N rows of each set (smoke tests).")
    ap.add_argument("--no-speed", action="store_true", help="Skip the throughput comparison.")
    args = ap.parse_args()
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    data = args.data_dir
    model_args = ["--model", args.model] if args.model else []

    # 1. corpus
    docs = conll_documents(data / "ner" / "conll2003" / "train.txt")
    corpus = out / "conll_corpus.txt"
    corpus.write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
    n_sent = sum(len(d) for d in docs)
    print(f"corpus: {len(docs)} documents, {n_sent} sentences, {corpus.stat().st_size / 1e6:.2f} MB -> {corpus}")

    # 2. nsp-adapt
    summary: dict = {"corpus": {"documents": len(docs), "sentences": n_sent, "bytes": corpus.stat().st_size}}
    if args.model_nsp:
        nsp_model = args.model_nsp
    else:
        nsp_model = str(out / "minilm-nsp")
        adapt = ["nsp-adapt", "--corpus", str(corpus), "--out", nsp_model, "--epochs", str(args.epochs)]
        adapt += ["--train-layers", args.train_layers, "--seed", str(args.seed), "--force", *model_args]
        adapt += ["--metrics-out", str(out / "nsp_adapt.json")]
        if args.max_pairs:
            adapt += ["--max-pairs", str(args.max_pairs)]
        wall = nlptool(*adapt, log=out / "nsp_adapt.log")
        m = metrics_of(out / "nsp_adapt.json")
        summary["nsp_adapt"] = {**m, "command_wall_seconds": wall}
        print(
            f"nsp-adapt: {m['train_pairs']} pairs, {m['steps']} steps, train {m['train_seconds']:.1f} s "
            f"(command {wall:.1f} s); held-out NSP accuracy {100 * (m['nsp_accuracy_before'] or 0):.2f} -> "
            f"{100 * m['nsp_accuracy']:.2f} % on {m['eval_pairs']} pairs"
        )

    # 3. evaluation
    sets: dict = {
        "sst2": (data / "zero_shot" / "sst2_glue_dev" / "dev.tsv", ["--text-col", "sentence"], "label", SST2_LABELS,
                 "suffix", ("embedding", "nsp")),
        "agnews": (data / "zero_shot" / "agnews" / "test.tsv", ["--no-header", "--text-col", "0"], "1", AGNEWS_LABELS,
                   "suffix", ("embedding", "nsp")),
    }  # fmt: skip
    for name, (folder, text_field, label_field, _, position) in FEWCLUE.items():
        spec = fewclue_labels(name, data / "zero_shot" / folder)
        sets[name] = (data / "zero_shot" / folder / "test_public.json", ["--text-col", text_field], label_field, spec,
                      position, ("nsp",))  # fmt: skip
    results = []
    for name in [d for d in args.datasets.split(",") if d]:
        if name not in sets:
            raise SystemExit(f"unknown dataset {name}; choose from {', '.join(sets)}")
        path, cols, label_col, spec, position, methods = sets[name]
        if args.limit:
            head = out / f"{name}_head{path.suffix}"
            lines = path.read_text(encoding="utf-8").split("\n")
            head.write_text("\n".join(lines[: args.limit + 1]) + "\n", encoding="utf-8")
            path = head
        labels_file = out / f"labels_{name}.json"
        labels_file.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        names = ",".join(spec["labels"])
        for method in methods:
            model = args.model if method == "embedding" else nsp_model
            pred = out / f"{name}_{method}.jsonl"
            mfile = out / f"{name}_{method}_metrics.json"
            cmd = ["zero-shot", str(path), "--labels-file", str(labels_file), "--position", position]
            cmd += ["--method", method, *cols, "--label-col", label_col, "-o", str(pred), "--metrics-out", str(mfile)]
            cmd += ["--force", *(["--model", model] if model else [])]
            nlptool(*cmd, log=out / f"{name}_{method}.log")
            m = metrics_of(mfile)
            can_file = out / f"{name}_{method}_can.json"
            nlptool(
                "calibrate-can", str(pred), "--labels", names, "--label-col", label_col, "-o",
                str(out / f"{name}_{method}_can.jsonl"), "--metrics-out", str(can_file), "--force",
                log=out / f"{name}_{method}_can.log",
            )  # fmt: skip
            c = metrics_of(can_file)
            # contextual calibration (Zhao et al. 2021), decided before any run with it: same prompts, no labels
            cf_file = out / f"{name}_{method}_cf_metrics.json"
            cf_cmd = [*cmd[: cmd.index("-o")], "-o", str(out / f"{name}_{method}_cf.jsonl"), "--metrics-out"]
            cf_cmd += [str(cf_file), "--force", "--calibrate", "content-free", *(["--model", model] if model else [])]
            nlptool(*cf_cmd, log=out / f"{name}_{method}_cf.log")
            cf = metrics_of(cf_file)
            row = {
                "dataset": name,
                "method": method,
                "model": model or "default (all-MiniLM-L6-v2)",
                "rows": m["rows"],
                "majority": m["majority_accuracy"],
                "accuracy": m["accuracy"],
                "macro_f1": m["macro_f1"],
                "can_accuracy": c["accuracy_after"],
                "can_uncertain_rows": c["uncertain_rows"],
                "cf_accuracy": cf["accuracy"],
                "cf_macro_f1": cf["macro_f1"],
                "cf_prior": cf["content_free_prior"],
                "cf_predicted_counts": cf["predicted_counts"],
                "pairs_per_s": m["pairs_per_s"],
                "predicted_counts": m["predicted_counts"],
            }
            results.append(row)
            print("RESULT " + json.dumps(row, sort_keys=True, ensure_ascii=False), flush=True)
    summary["results"] = results

    # 4. throughput
    if args.no_speed:
        print_table(results)
        (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True), encoding="utf-8")
        return
    ag_lines = (data / "zero_shot" / "agnews" / "test.tsv").read_text(encoding="utf-8").split("\n")
    sst_lines = (data / "zero_shot" / "sst2_glue_dev" / "dev.tsv").read_text(encoding="utf-8").split("\n")[1:]
    speeds = []
    for name, lines, spec in (("agnews", ag_lines, AGNEWS_LABELS), ("sst2", sst_lines, SST2_LABELS)):
        rows = [line.split("\t")[0] for line in lines[: args.speed_rows]]
        prompts = [spec["template"].replace("{}", w) for w in spec["labels"].values()]
        for repeat in range(args.speed_repeats):
            speed = {"dataset": name, "repeat": repeat, **throughput(nsp_model, rows, prompts, 64)}
            speeds.append(speed)
            print("SPEED " + json.dumps(speed, sort_keys=True), flush=True)
    summary["throughput"] = speeds

    print()
    print_table(results)
    for sp in speeds:
        print(
            f"throughput, {sp['dataset']} ({sp['pairs']} pairs, repeat {sp['repeat']}): batched "
            f"{sp['batched_pairs_per_s']:.1f} pairs/s, batch-1 loop {sp['loop_pairs_per_s']:.1f} pairs/s "
            f"({sp['speedup']:.2f}x); max |diff| {sp['max_abs_diff']:.2e}"
        )
    import torch
    import transformers

    summary["versions"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True), encoding="utf-8")


if __name__ == "__main__":
    main()

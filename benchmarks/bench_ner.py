"""NER: Efficient GlobalPointer and GlobalPointer (``nlptool ner``) against a softmax-over-BIO token classifier.

One system per invocation (so each can run as its own CPU-locked job); every result is written as JSON to
``--out-dir`` and ``--report`` prints the table of all of them with ratios to the peer.

Systems:

- ``egp`` / ``gp``: ``nlptool ner train`` then ``nlptool ner eval`` (subprocesses running the real CLI). Training
  throughput is the training loop's own clock (windows/s = sentences/s here, evaluation excluded); inference is
  ``ner eval``'s clock around prediction (tokenize, forward, decode, merge), length-sorted batches of at most 64
  windows and (the CLI's CPU default) 1,024 padded tokens.
- ``peer``: transformers ``AutoModelForTokenClassification`` (softmax over B-/I- tags and O) fine-tuned from the same
  encoder, with the same shared training loop (``nlptool.core.train``: AdamW, linear warm-up 10% and decay, weight
  decay 0.01, clipping 1.0, batches grouped by length, the same seed), epochs, lr, batch size and max length. Words
  are the space-separated tokens of the text; the first sub-token of each word carries the word's tag (the usual
  recipe). Prediction: argmax per word, BIO tags read back into spans (IOB2 rules), batch 64, length-sorted (the
  usual recipe; ``--speed`` also times it with the same token cap per batch as ours).

All systems are scored by the same function (``nlptool.core.metrics.span_prf``: exact span and type); the peer's
score is also cross-checked with seqeval on its word tags.

Tasks:

- ``conll``: CoNLL-2003 English train → dev (flat; evaluation use only, nothing is copied into the repository).
- ``genia``: GENIA nested NER: the shared ``dev.jsonlines`` split by document (the first ``--genia-train-frac`` of
  documents train, the rest evaluate); reports overall F1 and recall on nested gold entities. The peer cannot
  represent nesting and is not run.
- ``cluener`` / ``peoples-daily``: Chinese; need a Chinese encoder (``--model``), not available offline.

Examples (each under the shared CPU lock):
    flock /tmp/nlptool_cpu.lock .venv/bin/python benchmarks/bench_ner.py --task conll --system peer
    flock /tmp/nlptool_cpu.lock .venv/bin/python benchmarks/bench_ner.py --task conll --system egp
    .venv/bin/python benchmarks/bench_ner.py --report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NLPTOOL_SHARED_DATA", REPO.parent / "shared" / "data")) / "ner"
SOURCES = {
    "conll": ("conll", DATA / "conll2003" / "train.txt", DATA / "conll2003" / "dev.txt"),
    "cluener": ("cluener", DATA / "cluener" / "train.json", DATA / "cluener" / "dev.json"),
    "peoples-daily": ("bio-chars", DATA / "peoples_daily" / "example.dev", DATA / "peoples_daily" / "example.test"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="conll", choices=["conll", "genia", "cluener", "peoples-daily"])
    p.add_argument("--system", default="egp", choices=["egp", "gp", "peer"])
    p.add_argument("--model", default=None, help="encoder folder or hub id (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--head-lr-scale", type=float, default=1.0, help="ours: head lr = lr x this (--head-lr-scale)")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--limit-train", type=int, default=0, help="use only the first N training texts (0: all)")
    p.add_argument("--limit-eval", type=int, default=0, help="evaluate only the first N texts (0: all; smoke tests)")
    p.add_argument(
        "--holdout-from-train",
        type=int,
        default=0,
        help="evaluate on the last N training texts instead of the dev set, and train on the others (for choosing "
        "settings without looking at dev)",
    )
    p.add_argument("--genia-train-frac", type=float, default=0.8)
    p.add_argument("--out-dir", default=str(REPO / "bench_out" / "ner"))
    p.add_argument("--tag", default="", help="suffix for the result file name")
    p.add_argument("--report", action="store_true", help="print the table of all results in --out-dir")
    p.add_argument("--speed", action="store_true", help="interleaved throughput of peer, EGP and GP (after the runs)")
    p.add_argument("--speed-steps", type=int, default=40, help="optimizer steps per training measurement")
    p.add_argument("--speed-texts", type=int, default=1000, help="eval texts per inference measurement")
    p.add_argument("--speed-repeats", type=int, default=3)
    p.add_argument(
        "--speed-max-batch-tokens",
        type=int,
        default=1024,
        help="the token cap of the capped inference measurements (every system is timed with and without it)",
    )
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------------------------------
# Data


def prepare(args: argparse.Namespace, work: Path) -> tuple[Path, Path, dict]:
    """Canonical JSONL train/eval files for the task (in ``work``) and a description of the split."""
    from nlptool.core.ner_convert import convert

    work.mkdir(parents=True, exist_ok=True)
    train_p, eval_p = work / "train.jsonl", work / "eval.jsonl"
    if args.task == "genia":
        records, _ = convert(str(DATA / "genia_nested" / "dev.jsonlines"), "token-spans")
        records = list(records)
        docs = list(dict.fromkeys(r["doc_id"] for r in records))
        cut = int(len(docs) * args.genia_train_frac)
        train_docs = set(docs[:cut])
        train = [r for r in records if r["doc_id"] in train_docs]
        held = [r for r in records if r["doc_id"] not in train_docs]
        split = {"source": "genia_nested/dev.jsonlines", "train_docs": cut, "eval_docs": len(docs) - cut}
    else:
        fmt, tr, ev = SOURCES[args.task]
        train = list(convert(str(tr), fmt)[0])
        held = list(convert(str(ev), fmt)[0])
        split = {"train": str(tr), "eval": str(ev)}
        if args.holdout_from_train:
            if args.holdout_from_train >= len(train):
                raise SystemExit(f"--holdout-from-train {args.holdout_from_train}: only {len(train)} training texts")
            train, held = train[: -args.holdout_from_train], train[-args.holdout_from_train :]
            split = {"train": str(tr), "eval": f"the last {args.holdout_from_train} texts of {tr} (held out)"}
    if args.limit_train:
        train = train[: args.limit_train]
    if args.limit_eval:
        held = held[: args.limit_eval]
    for path, rows in ((train_p, train), (eval_p, held)):
        with open(path, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps({"text": r["text"], "entities": r["entities"]}, ensure_ascii=False) + "\n")
    split.update(train_texts=len(train), eval_texts=len(held))
    return train_p, eval_p, split


# --------------------------------------------------------------------------------------------------------------------
# Ours


def run_ours(args: argparse.Namespace, train_p: Path, eval_p: Path, work: Path) -> dict:
    model_dir = work / f"model-{args.system}{args.tag}"
    cmd = [sys.executable, "-m", "nlptool", "-q", "ner", "train", "--train", str(train_p), "--out", str(model_dir)]
    cmd += ["--head", args.system, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    cmd += ["--lr", str(args.lr), "--max-length", str(args.max_length), "--seed", str(args.seed), "--force"]
    cmd += ["--head-lr-scale", str(args.head_lr_scale)]
    if args.model:
        cmd += ["--model", args.model]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    train_wall = time.perf_counter() - t0
    train_metrics = json.loads((model_dir / "metrics.json").read_text())["metrics"]
    metrics_p = work / f"eval-{args.system}{args.tag}.json"
    cmd = [sys.executable, "-m", "nlptool", "ner", "eval", str(eval_p), "-m", str(model_dir)]
    cmd += ["--metrics-out", str(metrics_p), "--batch-size", str(args.eval_batch_size), "--force"]
    subprocess.run(cmd, check=True)
    ev = json.loads(metrics_p.read_text())["metrics"]
    return {
        "train_texts_per_s": train_metrics["windows_per_s"],
        "train_seconds": train_metrics["train_seconds"],
        "train_wall_seconds": train_wall,
        "train_windows": train_metrics["train_windows"],
        "dropped_entities": train_metrics["alignment"]["misaligned"] + train_metrics["alignment"]["unrepresentable"],
        "infer_texts_per_s": ev["texts_per_s"],
        "f1": ev["micro"]["f1"],
        "precision": ev["micro"]["precision"],
        "recall": ev["micro"]["recall"],
        "macro_f1": ev["macro"]["f1"],
        "per_type_f1": {k: v["f1"] for k, v in ev["per_type"].items()},
        "nested_gold": ev["nested_gold"],
        "nested_recall": ev["nested_recall"],
    }


# --------------------------------------------------------------------------------------------------------------------
# The peer: softmax over BIO tags


def _words(text: str) -> tuple[list[str], list[int]]:
    words = text.split(" ")
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    return words, starts


def _word_tags(example: dict) -> list[str]:
    words, starts = _words(example["text"])
    index = {s: k for k, s in enumerate(starts)}
    ends = {s + len(w): k for k, (s, w) in enumerate(zip(starts, words, strict=True))}
    tags = ["O"] * len(words)
    for e in example["entities"]:
        i, j = index[e["start"]], ends[e["end"]]
        tags[i] = f"B-{e['label']}"
        for k in range(i + 1, j + 1):
            tags[k] = f"I-{e['label']}"
    return tags


class Peer:
    """The softmax-over-BIO token classifier: data encoding, training through the shared loop, prediction."""

    def __init__(self, args: argparse.Namespace, labels: list[str], model_dir: str | None = None) -> None:
        from transformers import AutoModelForTokenClassification

        from nlptool.core.models import load_model, load_tokenizer, resolve_model

        self.args = args
        self.tag_names = ["O"] + [f"{p}-{lab}" for lab in labels for p in ("B", "I")]
        self.tag_id = {t: i for i, t in enumerate(self.tag_names)}
        resolved = resolve_model(model_dir or args.model)
        self.tok = load_tokenizer(resolved)
        kwargs = {}
        if model_dir is None:
            kwargs = {
                "num_labels": len(self.tag_names),
                "id2label": dict(enumerate(self.tag_names)),
                "label2id": self.tag_id,
            }
        self.model = load_model(resolved, AutoModelForTokenClassification, **kwargs)
        self.pad = self.tok.pad_token_id or 0

    def encode(self, rows: list[dict], with_labels: bool) -> list[dict]:
        out = []
        for r in rows:
            words, _ = _words(r["text"])
            enc = self.tok(words, is_split_into_words=True, truncation=True, max_length=self.args.max_length)
            word_ids = enc.word_ids()
            item = {"input_ids": enc["input_ids"], "word_ids": word_ids, "n_words": len(words)}
            if with_labels:
                tags = _word_tags(r)
                lab, prev = [], None
                for w in word_ids:
                    lab.append(-100 if w is None or w == prev else self.tag_id[tags[w]])
                    prev = w
                item["labels"] = lab
            out.append(item)
        return out

    def collate(self, batch: list[dict]) -> dict:
        import torch

        length = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), length), self.pad, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        labels_t = torch.full((len(batch), length), -100, dtype=torch.long)
        for k, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[k, :n] = torch.tensor(b["input_ids"])
            mask[k, :n] = 1
            if "labels" in b:
                labels_t[k, :n] = torch.tensor(b["labels"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels_t}

    @staticmethod
    def compute_loss(m, batch):  # noqa: ANN001, ANN205
        return m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss

    def train(self, rows: list[dict]) -> Any:
        from nlptool.core.train import TrainConfig, train

        items = self.encode(rows, True)
        config = TrainConfig(
            epochs=self.args.epochs,
            batch_size=self.args.batch_size,
            lr=self.args.lr,
            seed=self.args.seed,
            device="cpu",
            group_by_length=True,
            weight_decay=0.01,
            warmup_ratio=0.1,
            max_grad_norm=1.0,
        )
        return train(
            self.model, items, self.collate, self.compute_loss, config, lengths=[len(t["input_ids"]) for t in items]
        )

    def predict(self, rows: list[dict], max_tokens: int = 0) -> tuple[list[list[str]], list[list[tuple]], int]:
        """Word tags, character spans and the number of words cut off by truncation (tagged O).

        Batches of ``--eval-batch-size`` texts sorted by length; ``max_tokens`` > 0 also caps the padded tokens per
        batch, exactly as ``ner predict --max-batch-tokens`` does (the same :func:`length_batches`)."""
        import torch

        from nlptool.core.batching import length_batches
        from nlptool.core.ner_convert import bio_to_spans

        self.model.eval()
        items = self.encode(rows, False)
        word_tags: list[list[str]] = [[] for _ in items]
        truncated = 0
        lengths = [len(it["input_ids"]) for it in items]
        with torch.inference_mode():
            for idx in length_batches(lengths, self.args.eval_batch_size, max_tokens):
                batch = self.collate([items[k] for k in idx])
                logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                best = logits.argmax(-1).numpy()
                for row, k in enumerate(idx):
                    tags = ["O"] * items[k]["n_words"]
                    seen = set()
                    for pos, w in enumerate(items[k]["word_ids"]):
                        if w is not None and w not in seen:
                            seen.add(w)
                            tags[w] = self.tag_names[int(best[row, pos])]
                    truncated += items[k]["n_words"] - len(seen)
                    word_tags[k] = tags
        spans = []
        for r, tags in zip(rows, word_tags, strict=True):
            words, starts = _words(r["text"])
            spans.append([(starts[i], starts[j] + len(words[j]), lab) for lab, i, j in bio_to_spans(tags)])
        return word_tags, spans, truncated


def _read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def run_peer(args: argparse.Namespace, train_p: Path, eval_p: Path, work: Path) -> dict:
    import numpy as np
    from seqeval.metrics import f1_score

    from nlptool.core.metrics import nested_recall, span_prf

    train_rows, eval_rows = _read(train_p), _read(eval_p)
    peer = Peer(args, sorted({e["label"] for r in train_rows for e in r["entities"]}))
    result = peer.train(train_rows)
    peer.model.save_pretrained(work / "model-peer")
    peer.tok.save_pretrained(work / "model-peer")
    t0 = time.perf_counter()  # inference: tokenize, forward, argmax, tags -> spans (end to end, like ner eval)
    word_tags, pred_spans, truncated = peer.predict(eval_rows)
    infer_seconds = time.perf_counter() - t0
    gold = [[(e["start"], e["end"], e["label"]) for e in r["entities"]] for r in eval_rows]
    m = span_prf(gold, pred_spans)
    m.update(nested_recall(gold, pred_spans))
    return {
        "train_texts_per_s": result.examples_per_s,
        "train_seconds": result.train_seconds,
        "infer_texts_per_s": len(eval_rows) / infer_seconds,
        "f1": m["micro"]["f1"],
        "precision": m["micro"]["precision"],
        "recall": m["micro"]["recall"],
        "macro_f1": m["macro"]["f1"],
        "per_type_f1": {k: v["f1"] for k, v in m["per_type"].items()},
        "seqeval_f1": float(f1_score([_word_tags(r) for r in eval_rows], word_tags)),
        "truncated_words": truncated,
        "nested_gold": m["nested_gold"],
        "nested_recall": m["nested_recall"],
        "params": int(np.sum([p.numel() for p in peer.model.parameters()])),
    }


def run_speed(args: argparse.Namespace, train_p: Path, eval_p: Path, work: Path) -> dict:
    """Training and inference throughput of peer, EGP and GP measured interleaved in one process.

    Each repeat trains every system from the base encoder for ``--speed-steps`` optimizer steps (the shared loop's
    clock) and predicts ``--speed-texts`` eval texts with the trained models of the full runs (``model-*`` in the
    work folder) after an untimed warm-up call on 64 texts, twice: in batches of ``--eval-batch-size`` only
    (``b64``: the peer's usual recipe) and also capped at ``--speed-max-batch-tokens`` padded tokens (``cap``: our
    CLI's CPU default); the two alternate in order. Medians over ``--speed-repeats``. Interleaving puts the systems
    under the same machine load; the order of the systems rotates from one repeat to the next.
    """
    import statistics

    from transformers import AutoModel

    from nlptool.core.globalpointer import global_pointer_loss
    from nlptool.core.models import load_model, load_tokenizer, resolve_model
    from nlptool.core.ner import SpanNerModel, collate_windows, encode_windows, predict_spans, read_ner_jsonl
    from nlptool.core.train import TrainConfig, train

    n_train = args.speed_steps * args.batch_size
    train_rows = _read(train_p)[:n_train]
    eval_rows = _read(eval_p)[: args.speed_texts]
    texts = [r["text"] for r in eval_rows]
    examples = read_ner_jsonl(str(train_p))[:n_train]
    labels = sorted({e["label"] for r in _read(train_p) for e in r["entities"]})
    modes = {"b64": 0, "cap": args.speed_max_batch_tokens}
    systems = ("peer", "egp", "gp")
    rates: dict[str, dict[str, list[float]]] = {s: {"train": [], "b64": [], "cap": []} for s in systems}
    resolved = resolve_model(args.model)
    tok = load_tokenizer(resolved)
    label2id = {lab: i for i, lab in enumerate(labels)}
    for repeat in range(args.speed_repeats):
        # rotate the order each repeat, so that no system always runs first (or right after another's training)
        for system in systems[repeat % 3 :] + systems[: repeat % 3]:
            if system == "peer":
                peer = Peer(args, labels)
                peer.args = argparse.Namespace(**{**vars(args), "epochs": 1})
                rates[system]["train"].append(peer.train(train_rows).examples_per_s)
                trained = Peer(args, labels, model_dir=str(work / "model-peer"))

                def infer(cap: int, trained=trained) -> None:  # noqa: ANN001
                    trained.predict(eval_rows, max_tokens=cap)

                def warm(trained=trained) -> None:  # noqa: ANN001
                    trained.predict(eval_rows[:64])

            else:
                windows, _ = encode_windows(
                    tok, examples, max_length=args.max_length, stride=args.max_length // 4, label2id=label2id
                )
                net = SpanNerModel(
                    load_model(resolved, AutoModel), labels, head=system, head_size=64, max_length=args.max_length
                )
                pad = tok.pad_token_id or 0

                def collate(batch, n=len(labels), pad=pad):  # noqa: ANN001, ANN202
                    return collate_windows(batch, n, pad)

                def compute_loss(m, batch):  # noqa: ANN001, ANN202
                    return global_pointer_loss(m(batch["input_ids"], batch["attention_mask"]), batch["labels"])

                config = TrainConfig(
                    epochs=1,
                    batch_size=args.batch_size,
                    lr=args.lr,
                    seed=args.seed,
                    device="cpu",
                    group_by_length=True,
                    weight_decay=0.01,
                    warmup_ratio=0.1,
                    max_grad_norm=1.0,
                )
                result = train(net, windows, collate, compute_loss, config, lengths=[len(w) for w in windows])
                rates[system]["train"].append(result.examples_per_s)
                model, mtok, _ = SpanNerModel.load(work / f"model-{system}")

                def infer(cap: int, model=model, mtok=mtok) -> None:  # noqa: ANN001
                    predict_spans(model, mtok, texts, batch_size=args.eval_batch_size, max_batch_tokens=cap)

                def warm(model=model, mtok=mtok) -> None:  # noqa: ANN001
                    predict_spans(model, mtok, texts[:64], batch_size=args.eval_batch_size)

            warm()  # untimed (first-call allocations)
            for mode in list(modes)[repeat % 2 :] + list(modes)[: repeat % 2]:
                t0 = time.perf_counter()
                infer(modes[mode])
                rates[system][mode].append(len(texts) / (time.perf_counter() - t0))
    out: dict[str, Any] = {
        "raw": rates,
        "train_texts": len(train_rows),
        "infer_texts": len(texts),
        "max_batch_tokens": args.speed_max_batch_tokens,
    }
    for system, r in rates.items():
        out[system] = {
            "train_texts_per_s": statistics.median(r["train"]),
            "infer_b64_texts_per_s": statistics.median(r["b64"]),
            "infer_cap_texts_per_s": statistics.median(r["cap"]),
        }
    peer = out["peer"]
    for system in ("egp", "gp"):
        o = out[system]
        o["train_ratio"] = o["train_texts_per_s"] / peer["train_texts_per_s"]
        o["infer_ratio_b64"] = o["infer_b64_texts_per_s"] / peer["infer_b64_texts_per_s"]  # same batching
        o["infer_ratio_cap"] = o["infer_cap_texts_per_s"] / peer["infer_cap_texts_per_s"]  # same batching
        o["infer_ratio_defaults"] = o["infer_cap_texts_per_s"] / peer["infer_b64_texts_per_s"]  # each its default
    return out


# --------------------------------------------------------------------------------------------------------------------


def report(out_dir: Path) -> None:
    for p in sorted((out_dir / "speed").glob("*.json")):
        doc = json.loads(p.read_text())
        res = doc["result"]
        if "b64" not in res["raw"]["peer"]:  # written before --speed timed two batchings
            ratios = ", ".join(
                f"{k} train {res[k]['train_ratio']:.3f}, infer {res[k]['infer_ratio']:.3f}" for k in ("egp", "gp")
            )
            print(f"\n### {doc['task']}: {p} (older --speed, batches of 64 only, {doc['date']}): ×peer {ratios}")
            continue
        cap = res["max_batch_tokens"]
        print(
            f"\n### {doc['task']}: interleaved throughput ({doc['args']['speed_repeats']} repeats, medians; "
            f"training {res['train_texts']} texts, inference {res['infer_texts']} texts, {doc['date']})\n"
        )
        print(
            f"| system | train texts/s | ×peer | infer, batches of 64: texts/s | ×peer | infer, + cap {cap} tokens: "
            "texts/s | ×peer capped | ÷ peer at batch 64 |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for system in ("peer", "egp", "gp"):
            r = res[system]
            print(
                f"| {system} | {r['train_texts_per_s']:.1f} | {r.get('train_ratio', 1.0):.3f} | "
                f"{r['infer_b64_texts_per_s']:.1f} | {r.get('infer_ratio_b64', 1.0):.3f} | "
                f"{r['infer_cap_texts_per_s']:.1f} | {r.get('infer_ratio_cap', 1.0):.3f} | "
                f"{r.get('infer_ratio_defaults', r['infer_cap_texts_per_s'] / r['infer_b64_texts_per_s']):.3f} |"
            )
        print("\nraw (texts/s per repeat):")
        for system in ("peer", "egp", "gp"):
            for key in ("train", "b64", "cap"):
                print(f"  {system} {key}: {', '.join(f'{x:.1f}' for x in res['raw'][system][key])}")
    rows = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]
    for task in sorted({r["task"] for r in rows}):
        sub = [r for r in rows if r["task"] == task]
        peer = next((r for r in sub if r["system"] == "peer"), None)
        print(f"\n### {task}\n")
        print(
            "| system | train texts | epochs | dev F1 ×100 | P | R | nested recall | train texts/s | ×peer | "
            "infer texts/s | ×peer |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in sub:
            res = r["result"]
            tr = res["train_texts_per_s"] / peer["result"]["train_texts_per_s"] if peer else float("nan")
            inf = res["infer_texts_per_s"] / peer["result"]["infer_texts_per_s"] if peer else float("nan")
            nested = f"{100 * res['nested_recall']:.2f} ({res['nested_gold']})" if res["nested_gold"] else "-"
            print(
                f"| {r['system']}{r.get('tag') or ''} | {r['split']['train_texts']} | {r['args']['epochs']} | "
                f"{100 * res['f1']:.2f} | {100 * res['precision']:.2f} | {100 * res['recall']:.2f} | {nested} | "
                f"{res['train_texts_per_s']:.1f} | {tr:.2f} | {res['infer_texts_per_s']:.1f} | {inf:.2f} |"
            )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    if args.report:
        report(out_dir)
        return
    import torch

    torch.manual_seed(args.seed)
    work = out_dir / "work" / f"{args.task}{args.tag}"
    train_p, eval_p, split = prepare(args, work)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    if args.speed:
        result = run_speed(args, train_p, eval_p, work)
    elif args.system == "peer":
        result = run_peer(args, train_p, eval_p, work)
    else:
        result = run_ours(args, train_p, eval_p, work)
    doc = {
        "task": args.task,
        "system": "speed" if args.speed else args.system,
        "tag": args.tag,
        "args": vars(args),
        "split": split,
        "result": result,
        "wall_seconds": time.perf_counter() - t0,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "speed" if args.speed else args.system
    path = out_dir / ("speed" if args.speed else "") / f"{args.task}_{name}{args.tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: doc[k] for k in ("task", "system", "split", "result", "wall_seconds")}, indent=1))


if __name__ == "__main__":
    main()

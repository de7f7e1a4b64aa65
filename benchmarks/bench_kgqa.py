"""Benchmark: ``nlptool kg-qa`` on KgCLUE (train 18,000 / dev 2,000 questions; evaluation use only, never committed).

KgCLUE's 20.6M-triple Knowledge.txt cannot be had offline, so the KB is built from the triples in the QA answers
(20,000 triples, plus any ``--extra-qa`` files whose answers join the KB). The splits share neither subjects nor
predicates: ``dev`` measures unseen subjects and predicates, a held-out slice of train measures seen predicates.

Three steps (the training step is the CLI itself):

    python benchmarks/bench_kgqa.py prepare --data ../shared/data/kgqa --out bench_out/kgqa
    nlptool kg-qa train --kb bench_out/kgqa/kb.tsv --train bench_out/kgqa/train.jsonl \\
        --dev bench_out/kgqa/val.jsonl --out bench_out/kgqa/model --epochs 12 --force
    python benchmarks/bench_kgqa.py eval --out bench_out/kgqa --model bench_out/kgqa/model

``prepare`` shuffles train.json (seed 0) into ``heldout`` (1,000 questions, reported), ``val`` (500, model selection
during training) and ``train`` (the rest); dev.json is only ever decoded. ``eval`` decodes held-out and dev under each
setting and scores them with KgCLUE's metric (``nlptool.core.kgqa.kgclue_scores``): without the trie (an output that
is not a KB key has no object and scores 0 on it), with the trie (mask-only and renormalised), with Su's look-ahead,
and with ``--subject-in-question``; and it times decoding with and without the trie on the same questions (interleaved
repeats, medians). Prints tables and one JSON line (last line of stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

from nlptool.core.kgqa import (
    DecodeOptions,
    KgqaModel,
    KnowledgeBase,
    format_answer,
    kb_from_qa,
    kgclue_scores,
    predictions_of,
    read_qa,
    split_subject,
    write_kb,
)

SETTINGS = {
    "no trie": DecodeOptions(constrained=False),
    "trie (mask-only)": DecodeOptions(),
    "trie, renormalised": DecodeOptions(renormalize=True),
    "trie + look-ahead": DecodeOptions(lookahead=True),
    "trie, renorm. + look-ahead (Su)": DecodeOptions(renormalize=True, lookahead=True),
    "trie + subject-in-question": DecodeOptions(subject_in_question=True),
    "trie + subject-in-q. + look-ahead": DecodeOptions(subject_in_question=True, lookahead=True),
}


def _suffix_len(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def add_distractors(kb: KnowledgeBase, k: int, seed: int = 0) -> tuple[KnowledgeBase, dict]:
    """A KB where every subject of ``kb`` has, besides its own triples, the predicates (with their first objects) of
    ``k`` other subjects of the same kind: the same meaning (the text in the final full-width parentheses, ``''`` for
    none), else the most similar meanings (the longest common suffix, the head noun of a Chinese meaning: ``电影``,
    ``歌曲``, ``演员``), ties broken at random (``seed``). A donor predicate that the subject already has is skipped,
    so every (subject, predicate) keeps one entry and the gold triples are unchanged. Returns the KB and its figures
    (subjects, donors filled by a similar meaning, triples added)."""
    subjects: dict[str, list[int]] = {}
    for i, s in enumerate(kb.subjects):
        subjects.setdefault(s, []).append(i)
    names = list(subjects)
    kinds: dict[str, list[str]] = {}
    for s in names:
        kinds.setdefault(split_subject(s)[1], []).append(s)
    rng = random.Random(seed)
    ranked: dict[str, list[str]] = {}  # meaning -> the other meanings, most similar first (for kinds with < k + 1)
    by_last: dict[str, list[str]] = {}
    for m in kinds:
        if m:
            by_last.setdefault(m[-1], []).append(m)
    others_all = [m for m in kinds if m]
    out = KnowledgeBase()
    for i in range(len(kb)):
        for o in kb.objects[i]:
            out.add(kb.subjects[i], kb.predicates[i], o)
    similar_fills = added = 0
    for s in names:
        meaning = split_subject(s)[1]
        pool = [t for t in kinds[meaning] if t != s]
        donors = rng.sample(pool, k) if len(pool) > k else rng.sample(pool, len(pool))
        if len(donors) < k:
            if meaning not in ranked:
                near = [m for m in by_last.get(meaning[-1], []) if m != meaning] if meaning else []
                rng.shuffle(near)
                near.sort(key=lambda m: -_suffix_len(m, meaning))  # stable: ties stay shuffled
                rest = [m for m in others_all if m != meaning and (not meaning or m[-1] != meaning[-1])]
                rng.shuffle(rest)
                ranked[meaning] = near + rest
            for m in ranked[meaning]:
                if len(donors) >= k:
                    break
                for t in kinds[m]:
                    if len(donors) >= k:
                        break
                    donors.append(t)
                    similar_fills += 1
        have = {kb.predicates[i] for i in subjects[s]}
        for d in donors:
            for j in subjects[d]:
                p = kb.predicates[j]
                if p in have:
                    continue
                have.add(p)
                out.add(s, p, kb.objects[j][0])
                added += 1
    return out, {"subjects": len(names), "similar_meaning_donors": similar_fills, "triples_added": added}


def prepare(args: argparse.Namespace) -> None:
    data = Path(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = [json.loads(line) for line in open(data / "train.json", encoding="utf-8") if line.strip()]
    dev = [json.loads(line) for line in open(data / "dev.json", encoding="utf-8") if line.strip()]
    rng = random.Random(args.seed)
    order = list(range(len(train)))
    rng.shuffle(order)
    held = [train[i] for i in order[: args.heldout]]
    val = [train[i] for i in order[args.heldout : args.heldout + args.val]]
    rest = [train[i] for i in order[args.heldout + args.val :]]
    for name, rows in (("train", rest), ("val", val), ("heldout", held), ("dev", dev)):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    kb = kb_from_qa([str(data / "train.json"), str(data / "dev.json"), *args.extra_qa])
    note = ""
    if args.distractors:
        kb, info = add_distractors(kb, args.distractors, args.seed)
        note = (
            f"; {args.distractors} distractor subjects per subject ({info['similar_meaning_donors']} of "
            f"{info['subjects'] * args.distractors} donors by a similar meaning), {info['triples_added']} triples added"
        )
    with open(out / "kb.tsv", "w", encoding="utf-8") as fh:
        write_kb(kb, fh)
    print(
        f"prepare: train {len(rest)}, val {len(val)}, heldout {len(held)}, dev {len(dev)}; KB {kb.triples} triples, "
        f"{len(kb)} keys{note} -> {out}"
    )


def _score(model: KgqaModel, rows, opts: DecodeOptions) -> tuple[dict, float, int]:
    start = time.perf_counter()
    cands = model.answer([r.question for r in rows], opts)
    seconds = time.perf_counter() - start
    not_in_kb = sum(1 for c in cands if c and not c[0].in_kb)
    preds = predictions_of(cands)
    fractions = kgclue_scores(preds, [format_answer(*r.answer) for r in rows])
    scores = {k: 100.0 * v for k, v in fractions.items()}  # percentages, as KgCLUE and BENCHMARKS.md report them
    # the predicate choice split by whether the gold predicate is written in the question (what look-ahead can see)
    inside = [r.answer[1] in r.question for r in rows]
    right = [c[0].predicate == r.answer[1] if c else False for c, r in zip(cands, rows, strict=True)]
    for name, flag in (("EM_P_pred_in_q", True), ("EM_P_pred_not_in_q", False)):
        group = [ok for ok, i in zip(right, inside, strict=True) if i == flag]
        scores[name] = 100.0 * sum(group) / len(group) if group else float("nan")
    scores["pred_in_q"] = 100.0 * sum(inside) / max(1, len(rows))
    return scores, seconds, not_in_kb


def evaluate(args: argparse.Namespace) -> None:
    import torch

    out = Path(args.out)
    kb = str(out / "kb.tsv") if args.kb == "out" else args.kb
    model = KgqaModel.load(args.model, kb_path=kb)
    n_params = sum(p.numel() for p in model.backbone.model.parameters())
    splits = {name: read_qa(str(out / f"{name}.jsonl")) for name in args.splits}
    if args.limit:
        splits = {k: v[: args.limit] for k, v in splits.items()}
    names = [s for s in SETTINGS if not args.settings or s in args.settings]
    results: dict = {"settings": {}, "speed": {}}
    print(
        f"model {args.model}: {model.config['backbone']}, {n_params:,} parameters, trained "
        f"{model.config.get('training', {}).get('seconds', float('nan')):.0f} s; KB {len(model.kb)} keys; "
        f"beams {args.num_beams}; torch threads {torch.get_num_threads()}"
    )
    for split, rows in splits.items():
        print(f"\n{split} ({len(rows)} questions)")
        print(
            f"{'setting':36s} {'Score':>6s} {'EM_S':>6s} {'F1_S':>6s} {'EM_P':>6s} {'F1_P':>6s} {'EM_O':>6s} "
            f"{'F1_O':>6s} {'EM_All':>6s} {'F1_All':>6s} {'notKB':>5s} {'sec':>6s} {'P|in':>6s} {'P|out':>6s}"
        )
        for name in names:
            opts = SETTINGS[name]
            opts.num_beams = args.num_beams
            opts.batch_size = args.batch_size
            s, sec, nk = _score(model, rows, opts)
            results["settings"].setdefault(split, {})[name] = {**s, "seconds": sec, "not_in_kb": nk}
            print(
                f"{name:36s} {s['Score']:6.2f} {s['EM_S']:6.2f} {s['F1_S']:6.2f} {s['EM_P']:6.2f} {s['F1_P']:6.2f} "
                f"{s['EM_O']:6.2f} {s['F1_O']:6.2f} {s['EM_All']:6.2f} {s['F1_All']:6.2f} {nk:5d} {sec:6.1f} "
                f"{s['EM_P_pred_in_q']:6.2f} {s['EM_P_pred_not_in_q']:6.2f}",
                flush=True,
            )
        share = next(iter(results["settings"][split].values()))["pred_in_q"] if names else float("nan")
        print(f"(P|in, P|out: EM_P of the questions whose gold predicate is / is not written in the question, "
              f"{share:.1f} % / {100 - share:.1f} % of them)")  # fmt: skip
    if not args.speed_questions:
        print(json.dumps(results, sort_keys=True))
        return
    # Decoding speed: the same questions without the trie, with it through generate() (the reference) and through
    # nlptool's fast-forward search, interleaved repeats; mask-only and renormalised.
    rows = read_qa(str(out / "dev.jsonl"))[: args.speed_questions]
    qs = [r.question for r in rows]
    configs = {
        "no trie": DecodeOptions(constrained=False),
        "trie, generate()": DecodeOptions(fast_forward=False),
        "trie, fast-forward": DecodeOptions(),
        "renorm., generate()": DecodeOptions(renormalize=True, fast_forward=False),
        "renorm., fast-forward": DecodeOptions(renormalize=True),
    }
    for opts in configs.values():
        opts.num_beams = args.num_beams
        opts.batch_size = args.batch_size
    times: dict[str, list[float]] = {name: [] for name in configs}
    steps: dict[str, dict[str, int]] = {}
    outputs: dict[str, list] = {}
    counted: dict[str, int] = {}
    net = model.backbone.model
    plain_generate = net.generate
    backbone_generate = model.backbone.generate

    def counting_generate(*a, **kw):  # decoder steps = generated length per batch (beam search runs them all)
        res = plain_generate(*a, **kw)
        counted["steps"] = counted.get("steps", 0) + res.sequences.shape[1] - 1
        counted["decoder_calls"] = counted.get("decoder_calls", 0) + res.sequences.shape[1] - 1
        rows = res.sequences.shape[0]  # batch × beams (num_return_sequences = beams)
        counted["decoder_row_positions"] = counted.get("decoder_row_positions", 0) + rows * (res.sequences.shape[1] - 1)
        return res

    def counting_backbone(*a, **kw):  # the fast path's own counts (search steps, decoder calls and positions)
        res = backbone_generate(*a, **kw)
        if kw.get("fast_forward"):
            for key, value in model.backbone.search_stats.items():
                counted[key] = counted.get(key, 0) + value
        return res

    net.generate = counting_generate
    model.backbone.generate = counting_backbone
    for _ in range(args.repeats):
        for name, opts in configs.items():
            counted.clear()
            start = time.perf_counter()
            outputs[name] = model.answer(qs, opts)
            times[name].append(time.perf_counter() - start)
            steps[name] = dict(counted)
    net.generate = plain_generate
    model.backbone.generate = backbone_generate
    med = {k: statistics.median(v) for k, v in times.items()}
    same = {}
    for ref, fast in (("trie, generate()", "trie, fast-forward"), ("renorm., generate()", "renorm., fast-forward")):
        answers = sum(
            [c.answer for c in x] == [c.answer for c in y] for x, y in zip(outputs[ref], outputs[fast], strict=True)
        )
        pairs = [
            (c.score, d.score)
            for x, y in zip(outputs[ref], outputs[fast], strict=True)
            for c, d in zip(x, y, strict=False)
        ]
        diffs = [abs(a - b) for a, b in pairs]
        rel = [abs(a - b) / max(1.0, abs(a)) for a, b in pairs]  # float32 sums: one ulp of -64 is 7.6e-6
        same[fast] = {
            "same_answers": answers,
            "max_abs_score_diff": max(diffs, default=0.0),
            "max_rel_score_diff": max(rel, default=0.0),
        }
    results["speed"] = {
        "questions": len(qs),
        "median_seconds": med,
        "all_seconds": times,
        "counts": steps,
        "questions_per_s": {k: len(qs) / v for k, v in med.items()},
        "ratio_to_no_trie": {k: v / med["no trie"] for k, v in med.items()},
        "fast_vs_generate": same,
        "repeats": args.repeats,
    }
    print(
        f"\ndecoding speed, {len(qs)} dev questions, beams {args.num_beams}, batch {args.batch_size}, median of "
        f"{args.repeats} interleaved repeats"
    )
    print(
        f"{'decoding':24s} {'sec':>7s} {'q/s':>6s} {'x no trie':>9s} {'steps':>6s} {'dec.calls':>9s} {'dec.pos':>8s} "
        f"{'rows x pos':>10s}"
    )
    for name in configs:
        c = steps[name]
        print(
            f"{name:24s} {med[name]:7.2f} {len(qs) / med[name]:6.1f} {med[name] / med['no trie']:9.2f} "
            f"{c.get('steps', 0):6d} {c.get('decoder_calls', 0):9d} {c.get('decoder_positions', c.get('steps', 0)):8d} "
            f"{c.get('decoder_row_positions', 0):10d}"
        )
    for fast, info in same.items():
        print(
            f"{fast}: same answers (every candidate, in order) as generate() for {info['same_answers']} of "
            f"{len(qs)} questions, max |score difference| {info['max_abs_score_diff']:.2e} (relative to "
            f"max(1, |score|): {info['max_rel_score_diff']:.2e})"
        )
    results["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }
    results["parameters"] = n_params
    print(json.dumps(results, sort_keys=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="split train.json, write the KB")
    p.add_argument("--data", default="../shared/data/kgqa")
    p.add_argument("--out", default="bench_out/kgqa")
    p.add_argument("--heldout", type=int, default=1000)
    p.add_argument("--val", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extra-qa", nargs="*", default=[], help="more QA files whose answers join the KB")
    p.add_argument(
        "--distractors",
        type=int,
        default=0,
        help="give every subject the predicates and objects of K other subjects of the same kind (0 = none)",
    )
    e = sub.add_parser("eval", help="decode held-out and dev under each setting")
    e.add_argument("--out", default="bench_out/kgqa")
    e.add_argument("--model", default="bench_out/kgqa/model")
    e.add_argument(
        "--kb",
        default=None,
        help="decode under this KB instead of the model's own ('out': --out/kb.tsv, e.g. a --distractors KB for a "
        "model trained on another; the network is the same, only the trie and the lookup change)",
    )
    e.add_argument("--num-beams", type=int, default=5)
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--limit", type=int, default=0, help="only the first N questions of each split (0 = all)")
    e.add_argument("--settings", nargs="*", default=[], help="only these settings (names as printed)")
    e.add_argument("--splits", nargs="*", default=["heldout", "dev"], help="which of heldout, val, dev to decode")
    e.add_argument("--speed-questions", type=int, default=256, help="dev questions for the timing (0 = skip it)")
    e.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    prepare(args) if args.step == "prepare" else evaluate(args)


if __name__ == "__main__":
    main()

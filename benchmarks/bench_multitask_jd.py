"""Benchmark: seconds per multi-task optimizer step, the trainer's gradient hook against TorchJD's ``autojac``.

The second half of issue 15's "Cost": the same model and batches, one optimizer step = the per-task losses → one
combined gradient on the shared (encoder) parameters, each head its own task's gradient → an AdamW step.

``ours:METHOD``
    :class:`~nlptool.core.multitask.GradientCombiner` exactly as ``train()`` drives it: ``backward`` (each task's
    loss back-propagated on its own, the encoder's gradient moved into a per-task buffer), ``before_step`` (the
    float64 Gram matrix in chunks, the weights, ``Σ wᵢ gᵢ`` written into ``.grad``).
``jd:AGG``
    TorchJD's recommended multi-task mode (its "Multi-Task Learning" example): the encoder's outputs are the shared
    ``features`` (the pooled embeddings of the STS pairs, the token states of the NER sentences), the heads compute
    the losses, ``torchjd.autojac.mtl_backward(losses, features=..., tasks_params=..., shared_params=...)`` fills
    each shared parameter's ``.jac`` (T rows) and each head's ``.grad``, ``jac_to_grad(shared, AGG)`` writes the
    aggregation into ``.grad``. Defaults: ``parallel_chunk_size=None`` (the T rows of the Jacobian back-propagated
    together under ``torch.vmap``) and the concatenated (T, P) Jacobian handed to the aggregator.
``jd-seq:AGG``
    The same with TorchJD's two documented alternatives that bring it closest to ours: ``parallel_chunk_size=1``
    (one backward per row, no vmap) and ``jac_to_grad(..., optimize_gramian_computation=True)`` (Gramian summed over
    parameters, no concatenated Jacobian; only aggregators whose weights come from the Gramian).

``jd-jac:AGG``
    Not one of TorchJD's entry points but a composition of its public functions that skips the other task's pass:
    ``torchjd.autojac.jac(loss_t, inputs=shared + head_t)`` once per task (one backward through that task's own
    encoder pass, as ours), the rows stacked into each shared parameter's ``.jac``, each head's row into its
    ``.grad``, then ``jac_to_grad(shared, AGG, optimize_gramian_computation=True)``.

Aggregators: ``Sum`` (≙ ours ``sum``), ``MGDA`` (Frank-Wolfe, ≙ ours ``mgda``, exact), ``PCGrad`` (≙ ours
``pcgrad``), ``UPGrad`` (TorchJD's default; no counterpart). Note that the tasks' inputs differ (STS pairs vs NER
sentences), so each task's loss depends on one encoder pass only; ``mtl_backward`` still back-propagates each row of
the Jacobian through both passes (a zero cotangent for the other task's features), which ours does not.

Setup as ``bench_multitask_step.py``: the bundled all-MiniLM-L6-v2 (``SentenceEncoder.load(None)``), CoSENT on STS-B
en training pairs and an EGP head on CoNLL-2003 training sentences (``../shared/data``), ``--batch-size`` examples
per task per step (the same batches for every system), max length 64, fp32, one torch thread, AdamW lr 1e-6, dropout
on. Every system starts each round from the same weights with a fresh AdamW and runs ``--steps`` steps (each timed
with ``perf_counter``, ``zero_grad`` to ``optimizer.step()``), in an order rotated every round after one untimed
warm-up round; reported: the median over all timed steps, and ours/TorchJD per method.

Before timing, the directions are compared on the same weights and batch with dropout off: ``u`` (the shared
``.grad`` after the combination) of ours vs TorchJD, as the relative difference ``‖u₁ − u₂‖/‖u₂‖``, the cosine and
the norm ratio ``‖u_ours‖/‖u_jd‖``, plus both sides' weights.

Needs torchjd (not a dependency of nlptool): run it from an environment that has both, e.g.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD /work/venv-peer/bin/python benchmarks/bench_multitask_jd.py --rounds 5

Prints the direction checks, a table, and one JSON line (the last line of stdout).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
OURS = ("sum", "gradnorm-sum", "mgda", "pcgrad")
JD = ("Sum", "MGDA", "PCGrad", "UPGrad")
JD_SEQ = ("MGDA", "PCGrad", "UPGrad")
JD_JAC = ("MGDA", "PCGrad", "UPGrad")
MATCH = {"sum": "Sum", "mgda": "MGDA", "pcgrad": "PCGrad"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default="", help="comma-separated systems to time (default: all)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    import transformers
    from torchjd import aggregation
    from torchjd.autojac import jac, jac_to_grad, mtl_backward

    from nlptool.core.cosent import PairTask
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.globalpointer import global_pointer_loss
    from nlptool.core.multitask import GradientCombiner, MultiTaskModel, VirtualExamples
    from nlptool.core.multitask.trainer import _collate_for
    from nlptool.core.ner import NerTask, label_set, read_ner_jsonl
    from nlptool.core.ner.model import token_states
    from nlptool.core.ner_convert import convert
    from nlptool.core.pairs import read_pairs
    from nlptool.core.seeding import seed_everything

    n = args.batch_size * (args.steps + 1) * 4
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
    bs = args.batch_size
    batches = [collate(list(range(k * bs, (k + 1) * bs))) for k in range(args.steps + 1)]
    probe = batches[-1]  # the direction check's batch
    batches = batches[: args.steps]

    shared = [q for q in model.encoder.parameters() if q.requires_grad]
    shared_ids = {id(q) for q in shared}
    head_params = [
        [q for q in (t.head.parameters() if t.head is not None else []) if q.requires_grad and id(q) not in shared_ids]
        for t in tasks
    ]
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}

    sign = {"ner": 1.0}  # the direction check's forced conflict: -1 negates the NER loss on both sides

    def jd_losses(batch):
        """The same losses as ``task.loss`` (CoSENT, EGP), split at the encoder's output: (losses, features)."""
        features, labels = batch[sts.name]
        emb = encoder(features)
        half = emb.shape[0] // 2
        loss_sts = sts.head(emb[:half], emb[half:], labels)
        nb = batch[ner.name]
        states = token_states(encoder, nb["input_ids"], nb["attention_mask"])
        loss_ner = global_pointer_loss(ner.head(states, nb["attention_mask"]), nb["labels"])
        return [loss_sts.reshape(()).float(), sign["ner"] * loss_ner.reshape(()).float()], [emb, states]

    def make_step(system: str):
        kind, name = system.split(":")
        if kind == "ours":
            combiner = GradientCombiner(model, name)

            def step(batch) -> dict | None:
                combiner.backward(model, batch, 1.0, False)
                combiner.before_step()
                return combiner.last

            return step
        agg = getattr(aggregation, name)()
        seq = kind == "jd-seq"
        if kind == "jd-jac":

            def step(batch) -> dict | None:
                losses, _ = jd_losses(batch)
                rows = []
                for t, loss in enumerate(losses):
                    jacs = jac(loss, inputs=[*shared, *head_params[t]])  # one backward through this task's pass
                    rows.append(jacs[: len(shared)])
                    for q, j in zip(head_params[t], jacs[len(shared) :], strict=True):
                        q.grad = j[0]
                for i, q in enumerate(shared):
                    q.jac = torch.cat([r[i] for r in rows])
                w = jac_to_grad(shared, agg, optimize_gramian_computation=True)
                return {"weights": [float(x) for x in w]}

            return step

        def step(batch) -> dict | None:
            losses, feats = jd_losses(batch)
            mtl_backward(
                losses,
                features=feats,
                tasks_params=head_params,
                shared_params=shared,
                parallel_chunk_size=1 if seq else None,
            )
            if seq:
                w = jac_to_grad(shared, agg, optimize_gramian_computation=True)
            else:
                w = jac_to_grad(shared, agg)
            return {"weights": None if w is None else [float(x) for x in w]}

        return step

    systems = (
        [f"ours:{m}" for m in OURS]
        + [f"jd:{a}" for a in JD]
        + [f"jd-seq:{a}" for a in JD_SEQ]
        + [f"jd-jac:{a}" for a in JD_JAC]
    )
    if args.only:
        systems = [s for s in systems if s in args.only.split(",")]

    # ---- directions on the same weights and batch, dropout off ----------------------------------------------------
    def direction(system: str) -> tuple[torch.Tensor, dict]:
        model.load_state_dict(initial)
        model.zero_grad(set_to_none=True)
        model.eval()
        info = make_step(system)(probe)
        u = torch.cat([q.grad.reshape(-1).double() for q in shared])
        heads = torch.cat([q.grad.reshape(-1).double() for ps in head_params for q in ps])
        model.zero_grad(set_to_none=True)
        return u, {"info": info, "heads": heads}

    def negated_ner_loss(enc, batch):
        return -NerTask.loss(ner, enc, batch)

    checks = {}
    for case in ("as is", "NER loss negated"):
        sign["ner"] = -1.0 if case != "as is" else 1.0
        if case != "as is":
            ner.loss = negated_ner_loss  # what GradientCombiner calls; jd_losses applies sign["ner"]
        for ours_name, jd_name in MATCH.items():
            for kind in ("jd", "jd-seq", "jd-jac"):
                if kind != "jd" and jd_name == "Sum":
                    continue
                u_o, o = direction(f"ours:{ours_name}")
                u_j, j = direction(f"{kind}:{jd_name}")
                checks[f"{case}: {ours_name} vs {kind}:{jd_name}"] = {
                    "rel_diff": float((u_o - u_j).norm() / u_j.norm()),
                    "cosine": float(u_o @ u_j / (u_o.norm() * u_j.norm())),
                    "norm_ratio": float(u_o.norm() / u_j.norm()),
                    "heads_rel_diff": float((o["heads"] - j["heads"]).norm() / j["heads"].norm()),
                    "weights_ours": o["info"]["weights"],
                    "weights_jd": j["info"]["weights"],
                    "cosine_g1_g2": o["info"]["cosines"][0][1],
                }
    del ner.loss  # back to NerTask.loss
    sign["ner"] = 1.0
    print("direction checks (same weights, probe batch, dropout off):")
    for k, c in checks.items():
        w_o = list(c["weights_ours"].values())
        w_j = c["weights_jd"]
        print(
            f"  {k:<42} rel diff {c['rel_diff']:.2e}  cosine {c['cosine']:.9f}  norm ratio {c['norm_ratio']:.6f}  "
            f"heads rel diff {c['heads_rel_diff']:.1e}  w ours {[round(x, 6) for x in w_o]}  "
            f"w jd {None if w_j is None else [round(x, 6) for x in w_j]}"
        )
    for case in ("as is", "NER loss negated"):
        cos = checks[f"{case}: sum vs jd:Sum"]["cosine_g1_g2"]
        print(f"  {case}: cos(g_sts, g_ner) on the probe batch = {cos:.4f}")

    # ---- timing ---------------------------------------------------------------------------------------------------
    times: dict[str, list[float]] = {s: [] for s in systems}
    for r in range(args.rounds + 1):  # round 0: warm-up, untimed
        order = systems[r % len(systems) :] + systems[: r % len(systems)]
        for system in order:
            model.load_state_dict(initial)
            model.train()
            model.zero_grad(set_to_none=True)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
            step = make_step(system)
            for batch in batches:
                t0 = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                step(batch)
                optimizer.step()
                dt = time.perf_counter() - t0
                if r > 0:
                    times[system].append(dt)
    med = {s: statistics.median(times[s]) for s in systems}
    print(f"\n{'system':<18} {'s/step':>8}")
    for s in systems:
        print(f"{s:<18} {med[s]:8.3f}")
    ratios = {}
    kinds = ("jd", "jd-seq", "jd-jac")
    print(f"\n{'method':<8} {'ours':>7} " + " ".join(f"{k:>7} {'ours/' + k:>12}" for k in kinds))
    for ours_name, jd_name in MATCH.items():
        o = med.get(f"ours:{ours_name}")
        peers = {k: med.get(f"{k}:{jd_name}") for k in kinds}
        ratios[ours_name] = {k: o / v if o and v else None for k, v in peers.items()}
        cells = []
        for k in kinds:
            v, r = peers[k], ratios[ours_name][k]
            cells.append((f"{v:7.3f}" if v else f"{'-':>7}") + " " + (f"{r:12.3f}" if r else f"{'-':>12}"))
        print(f"{ours_name:<8} " + (f"{o:7.3f}" if o else f"{'-':>7}") + " " + " ".join(cells))
    print(
        json.dumps(
            {
                "medians": med,
                "ratios": ratios,
                "times": times,
                "checks": checks,
                "args": vars(args),
                "torch": torch.__version__,
                "torchjd": importlib.metadata.version("torchjd"),
                "transformers": transformers.__version__,
                "machine": platform.processor() or platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()

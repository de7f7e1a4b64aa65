"""Tests for nlptool.core.multitask.trainer: per-task gradients through the shared loop's gradient hook.

Oracles: ``torch.autograd.grad`` of each task's loss on the same batch (the per-task buffers), ``combine`` on the
stacked oracle gradients (the written-back direction), one backward of the summed loss (``sum``), a 1-process run
(the 2-process torchrun run). Tiny random BERT (tests/conftest.py), CoSENT pairs + Efficient GlobalPointer NER.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nlptool.core.errors import NlptoolError
from nlptool.core.multitask import (
    GradientCombiner,
    MultiTaskModel,
    VirtualExamples,
    check_combine,
    combine,
    delta_m,
    fit_multitask,
)
from nlptool.core.ner import Entity, NerExample
from nlptool.core.train import TrainConfig, plan_batches, train

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORDS = [f"w{i}" for i in range(40)]


def pair_examples(n: int, seed: int = 1) -> list[tuple[str, str, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = " ".join(rng.choice(WORDS, size=3))
        b = " ".join(rng.choice(WORDS, size=3))
        out.append((a, b, float(rng.integers(0, 6))))
    return out


def ner_texts(n: int, seed: int = 2, entities: bool = True) -> list[NerExample]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = list(rng.choice(WORDS, size=4))
        text = " ".join(words)
        ents = []
        if entities:
            k = int(rng.integers(0, 4))
            start = sum(len(w) + 1 for w in words[:k])
            ents.append(Entity(start, start + len(words[k]), "PER" if k % 2 else "LOC"))
        out.append(NerExample(text, ents))
    return out


def no_dropout(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return module


def build(model_dir, seed: int = 0, n_pairs: int = 12, n_ner: int = 7):
    """(encoder, [pair task, ner task], {name: examples}): the same weights for the same seed."""
    from nlptool.core.cosent import PairTask
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.ner import NerTask

    torch.manual_seed(seed)
    encoder = no_dropout(SentenceEncoder.load(model_dir, pooling="mean", max_length=32))
    pairs = PairTask(encoder, "score", scale=20.0, eval_device="cpu")
    pairs.name = "sts"
    ner = NerTask(encoder, ["LOC", "PER"], head_size=8, max_length=32, eval_device="cpu")
    windows, _ = ner.windows(ner_texts(n_ner))
    return encoder, [pairs, ner], {"sts": pair_examples(n_pairs), "ner": windows}


def batch_for(tasks, examples, n: int = 5):
    return {t.name: t.collate(examples[t.name][:n]) for t in tasks}


def shared_params(model):
    return [p for p in model.encoder.parameters() if p.requires_grad]


def oracle_grads(model, tasks, batch):
    """Per task: (flat shared gradient, list of head gradients) by torch.autograd.grad."""
    shared = shared_params(model)
    out = []
    for task in tasks:
        heads = [p for p in task.head.parameters() if p.requires_grad]
        grads = torch.autograd.grad(
            task.loss(model.encoder, batch[task.name]), shared + heads, allow_unused=True, retain_graph=False
        )
        flat = torch.cat(
            [
                (g if g is not None else torch.zeros_like(p)).flatten()
                for g, p in zip(grads, shared + heads, strict=True)
            ]
        )
        n_shared = sum(p.numel() for p in shared)
        out.append((flat[:n_shared], [g for g in grads[len(shared) :]]))
    return out


@pytest.mark.parametrize(
    "method,kwargs",
    [
        ("sum", {}),
        ("gradnorm-sum", {}),
        ("mgda", {}),
        ("mgda", {"normalize": "l2"}),
        ("pcgrad", {}),
        ("main-aux", {"main": 1}),
        ("loss-norm", {"loss_weights": "realtime"}),
    ],
)
def test_buffers_match_autograd_and_the_written_gradient_is_combine(tiny_bert_no_heads_dir, method, kwargs):
    encoder, tasks, examples = build(tiny_bert_no_heads_dir)
    model = MultiTaskModel(encoder, tasks)
    batch = batch_for(tasks, examples)
    oracle = oracle_grads(model, tasks, batch)
    model.zero_grad(set_to_none=True)
    hook = GradientCombiner(model, method, seed=3, **kwargs)
    hook.backward(model, batch, 1.0, False)
    shared = shared_params(model)
    assert all(p.grad is None for p in shared)  # moved into the buffers
    for t, (flat, head_grads) in enumerate(oracle):
        buf = torch.cat([b.flatten() for b in hook.buffers[t]])
        assert torch.allclose(buf, flat, rtol=1e-5, atol=1e-7), f"task {t}"
        for p, g in zip(tasks[t].head.parameters(), head_grads, strict=True):
            assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7)  # a head gets its own task's gradient only
    losses = [float(t.loss(model.encoder, batch[t.name]).detach()) for t in tasks]
    hook.before_step()
    seed = int(np.random.SeedSequence([3, 1]).generate_state(1)[0])
    grads = torch.stack([flat for flat, _ in oracle]).double()
    direction, weights = combine(grads, method, losses=losses, seed=seed, **kwargs)
    written = torch.cat([p.grad.flatten() for p in shared]).double()
    assert torch.allclose(written, direction, rtol=1e-4, atol=1e-8)
    assert np.allclose(list(hook.last["weights"].values()), weights.numpy(), rtol=1e-5)
    assert hook.last["losses"] == pytest.approx(dict(zip(["sts", "ner"], losses, strict=True)), rel=1e-5)
    norms = grads.norm(dim=1).tolist()
    assert list(hook.last["grad_norms"].values()) == pytest.approx(norms, rel=1e-5)
    cos = float(grads[0] @ grads[1] / (grads[0].norm() * grads[1].norm()))
    assert hook.last["cosines"][0][1] == pytest.approx(cos, rel=1e-4, abs=1e-7)
    assert hook.last["direction_norm"] == pytest.approx(float(direction.norm()), rel=1e-4)
    align = min(float(grads[i] @ direction) / norms[i] for i in range(2))
    assert hook.last["min_alignment"] == pytest.approx(align, rel=1e-4, abs=1e-9)


def test_accumulated_micro_batches_add_up_in_the_buffers(tiny_bert_no_heads_dir):
    encoder, tasks, examples = build(tiny_bert_no_heads_dir)
    model = MultiTaskModel(encoder, tasks)
    full = batch_for(tasks, examples, 6)
    oracle = oracle_grads(model, tasks, full)
    model.zero_grad(set_to_none=True)
    hook = GradientCombiner(model, "sum")
    # the same 6 examples as two micro-batches of 3, each weighted 3/6 (what the loop passes): CoSENT is
    # batch-coupled, so compare the NER task, whose loss is a mean over windows
    for part in (slice(0, 3), slice(3, 6)):
        hook.backward(model, {t.name: t.collate(examples[t.name][part]) for t in tasks}, 0.5, False)
    buf = torch.cat([b.flatten() for b in hook.buffers[1]])
    assert torch.allclose(buf, oracle[1][0], rtol=1e-4, atol=1e-7)


def plain_sum_loss(model, batch):
    return sum(model(batch).values())


def test_sum_gives_the_update_of_one_backward_of_the_summed_loss(tiny_bert_no_heads_dir):
    """Two optimizer steps (one with two accumulated micro-batches), same seed: the same weights."""
    finals = []
    for use_hook in (False, True):
        encoder, tasks, examples = build(tiny_bert_no_heads_dir)
        model = MultiTaskModel(encoder, tasks)
        virtual = VirtualExamples([len(examples["sts"]), len(examples["ner"])], seed=0)
        from nlptool.core.multitask.trainer import _collate_for

        collate = _collate_for(tasks, [examples["sts"], examples["ner"]], virtual)
        config = TrainConfig(batch_size=4, grad_accum=2, lr=1e-3, warmup_steps=0, device="cpu", max_steps=2)
        hook = GradientCombiner(model, "sum") if use_hook else None
        result = train(model, virtual, collate, plain_sum_loss, config, gradient_hook=hook)
        assert result.steps == 2
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    start = torch.cat([p.detach().flatten() for p in MultiTaskModel(*build(tiny_bert_no_heads_dir)[:2]).parameters()])
    assert not torch.allclose(finals[0], start)  # it trained
    assert torch.allclose(finals[0], finals[1], rtol=1e-4, atol=1e-6)


class ZeroLossTask:
    """A pair task whose loss is multiplied by 0: an all-zero gradient every step."""

    def __init__(self, task):
        self.inner = task
        self.name, self.metric, self.greater_is_better, self.head = "zero", task.metric, True, task.head

    def collate(self, examples):
        return self.inner.collate(examples)

    def loss(self, encoder, batch):
        return 0.0 * self.inner.loss(encoder, batch)

    def evaluate(self, encoder, dev):
        return self.inner.evaluate(encoder, dev)

    def save(self, folder):
        pass


@pytest.mark.parametrize("method", ["gradnorm-sum", "mgda", "pcgrad", "loss-norm"])
def test_a_task_with_a_zero_gradient_gets_a_finite_weight_and_no_nan(tiny_bert_no_heads_dir, method):
    encoder, tasks, examples = build(tiny_bert_no_heads_dir)
    zero = ZeroLossTask(tasks[0])
    config = TrainConfig(batch_size=4, lr=1e-3, warmup_steps=0, device="cpu", max_steps=2)
    result = fit_multitask(
        encoder, [zero, tasks[1]], {"zero": examples["sts"], "ner": examples["ner"]}, config, out_dir=None,
        combine=method,
    )  # fmt: skip
    last = result.last_step
    assert last["grad_norms"]["zero"] == 0.0 and last["grad_norms"]["ner"] > 0
    assert all(math.isfinite(w) for w in last["weights"].values())
    if method != "pcgrad":  # pcgrad keeps w = 1 (nothing to project); the others give the zero task 0
        assert last["weights"]["zero"] == 0.0
    assert all(torch.isfinite(p).all() for p in encoder.parameters())


def test_virtual_items_use_every_example_and_smaller_tasks_cycle():
    sizes = [8, 3, 5]
    virtual = VirtualExamples(sizes, seed=4)
    assert len(virtual) == 8 and virtual[5] == 5
    for t, n in enumerate(sizes):
        seen = [virtual.resolve(t, v) for v in range(8)]
        assert sorted(set(seen)) == list(range(n))  # every example of every task
        counts = np.bincount(seen, minlength=n)
        assert counts.min() == 8 // n and counts.max() == -(-8 // n)  # the smaller tasks cycle evenly
    # one epoch of the loop's batches covers the largest task once, in a new order each epoch
    order0 = [virtual.resolve(0, v) for b in plan_batches(8, 3, seed=0, epoch=0) for v in b]
    order1 = [virtual.resolve(0, v) for b in plan_batches(8, 3, seed=0, epoch=1) for v in b]
    assert sorted(order0) == sorted(order1) == list(range(8)) and order0 != order1
    # seeded per (seed, task): the same seed gives the same permutations, another seed others
    assert [p.tolist() for p in VirtualExamples(sizes, seed=4).perms] == [p.tolist() for p in virtual.perms]
    assert [p.tolist() for p in VirtualExamples(sizes, seed=5).perms] != [p.tolist() for p in virtual.perms]


def test_collate_gives_one_batch_of_the_same_size_per_task(tiny_bert_no_heads_dir):
    from nlptool.core.multitask.trainer import _collate_for

    encoder, tasks, examples = build(tiny_bert_no_heads_dir)
    virtual = VirtualExamples([len(examples["sts"]), len(examples["ner"])], seed=0)
    batch = _collate_for(tasks, [examples["sts"], examples["ner"]], virtual)([0, 7, 11])
    assert set(batch) == {"sts", "ner"}
    assert batch["sts"][1].shape == (3,) and batch["ner"]["input_ids"].shape[0] == 3


def test_fit_writes_encoder_task_folders_metrics_and_log(tiny_bert_no_heads_dir, tmp_path):
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.ner import SpanNerModel
    from nlptool.core.pairs import PairData

    encoder, tasks, examples = build(tiny_bert_no_heads_dir)
    dev_pairs = pair_examples(8, seed=9)
    dev = {
        "sts": PairData(
            "dev.csv", [a for a, _, _ in dev_pairs], [b for _, b, _ in dev_pairs],
            np.array([y for _, _, y in dev_pairs]), list(range(1, 9)), "score", ("a", "b", "y"), (0.0, 5.0),
        ),
        "ner": ner_texts(4, seed=10),
    }  # fmt: skip
    config = TrainConfig(batch_size=4, lr=1e-3, warmup_steps=0, device="cpu", max_steps=3, eval_every=2)
    events = []
    out = tmp_path / "mtl"
    result = fit_multitask(
        encoder, tasks, examples, config, out_dir=out, dev=dev, combine="mgda", baselines={"sts": 0.5, "ner": 0.2},
        on_progress=events.append,
    )  # fmt: skip
    rows = [json.loads(line) for line in (out / "mtl_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert set(rows[0]) >= {"losses", "weights", "grad_norms", "cosines", "min_alignment", "direction_norm"}
    steps = [e for e in events if "event" not in e]
    assert [e["task_weights"] for e in steps] == [r["weights"] for r in rows]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["steps"] == 3 and metrics["combine"]["method"] == "mgda" and metrics["selection"] == "delta_m"
    dev_m = metrics["dev"]
    expected = np.mean([(dev_m["sts.spearman"] - 0.5) / 0.5 * 100, (dev_m["ner.f1"] - 0.2) / 0.2 * 100])
    assert dev_m["delta_m"] == pytest.approx(expected) and metrics["delta_m"] == dev_m["delta_m"]
    assert {"sts.spearman", "sts.pearson", "ner.f1", "ner.precision", "ner.recall", "mean_main"} <= set(dev_m)
    # the model folders load
    reloaded = SentenceEncoder.load(out / "encoder")
    assert reloaded.encode(["w1 w2"]).shape == (1, 32)
    ner_model, _, ner_config = SpanNerModel.load(out / "tasks" / "ner")
    assert ner_model.labels == ["LOC", "PER"] and ner_config["head"] == "egp"
    assert SentenceEncoder.load(out / "tasks" / "sts").encode(["w1"]).shape == (1, 32)
    weights = next((out / "encoder").glob("*.safetensors"))
    assert (out / "tasks" / "ner" / weights.name).stat().st_ino == weights.stat().st_ino  # hard-linked
    assert not (out / "training" / "best").exists()
    assert result.from_best and result.metrics["best_step"] in (2, 3)


def test_resume_continues_the_log_and_matches_a_straight_run(tiny_bert_no_heads_dir, tmp_path):
    config = TrainConfig(batch_size=4, lr=1e-3, warmup_steps=0, device="cpu", max_steps=4, checkpoint_every=2)
    encoder, tasks, examples = build(tiny_bert_no_heads_dir)
    straight = fit_multitask(
        encoder, tasks, examples, config, out_dir=tmp_path / "a", combine="loss-norm", loss_weights="initial"
    )
    # the same run, stopped after step 3 (a crash after the checkpoint of step 2), then resumed
    encoder, tasks, examples = build(tiny_bert_no_heads_dir)

    def crash(event):
        if "event" not in event and event["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_multitask(
            encoder, tasks, examples, config, out_dir=tmp_path / "b", combine="loss-norm", loss_weights="initial",
            on_progress=crash,
        )  # fmt: skip
    assert len((tmp_path / "b" / "mtl_log.jsonl").read_text().splitlines()) == 3
    encoder, tasks, examples = build(tiny_bert_no_heads_dir)
    resumed = fit_multitask(
        encoder, tasks, examples, TrainConfig(**{**config.__dict__, "resume": True}), out_dir=tmp_path / "b",
        combine="loss-norm", loss_weights="initial",
    )  # fmt: skip
    a = [json.loads(x) for x in (tmp_path / "a" / "mtl_log.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b" / "mtl_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        assert ra["weights"] == pytest.approx(rb["weights"], rel=1e-5)
    assert straight.last_step["weights"] == pytest.approx(resumed.last_step["weights"], rel=1e-5)
    # initial: the weights are 1 / the first step's losses throughout
    assert a[3]["weights"] == pytest.approx({k: 1 / v for k, v in a[0]["losses"].items()}, rel=1e-9)


@pytest.mark.parametrize(
    "names,method,kw,match",
    [
        (["a", "a"], "sum", {}, "given twice"),
        (["a.b", "c"], "sum", {}, "not usable"),
        (["a", "b"], "mgda-ub", {}, "separate inputs"),
        (["a"], "mgda", {}, "at least 2 tasks"),
        (["a"], "pcgrad", {}, "at least 2 tasks"),
        (["a", "b"], "main-aux", {}, "main task"),
        (["a", "b"], "main-aux", {"main_task": "c"}, "not among the tasks"),
        (["a", "b"], "loss-norm", {"loss_weights": "prior"}, "prior loss"),
        (["a", "b"], "loss-norm", {"loss_weights": "mean"}, "gamma"),
        (["a", "b"], "sum", {"normalize": "l2"}, "mgda"),
        (["a", "b"], "nope", {}, "unknown combine"),
    ],
)
def test_bad_settings_are_refused_before_training(names, method, kw, match):
    with pytest.raises(NlptoolError, match=match):
        check_combine(names, method, **kw)


def test_check_combine_accepts_good_settings():
    assert check_combine(["a", "b"], "main-aux", main_task="b") == 1
    assert check_combine(["a"], "gradnorm-sum") is None
    assert check_combine(["a", "b"], "loss-norm", loss_weights="prior", prior_losses={"a": 1.0, "b": 2.0}) is None


def test_delta_m_by_hand():
    # (0.8 − 0.5)/0.5 = +60 %, (0.15 − 0.2)/0.2 = −25 % → 17.5; a lower-is-better task flips the sign
    assert delta_m({"a": 0.8, "b": 0.15}, {"a": 0.5, "b": 0.2}, {"a": True, "b": True}) == pytest.approx(17.5)
    assert delta_m({"a": 0.8, "b": 0.15}, {"a": 0.5, "b": 0.2}, {"a": True, "b": False}) == pytest.approx(42.5)


def test_fp16_is_refused_with_a_gradient_hook(tiny_bert_no_heads_dir):
    encoder, tasks, examples = build(tiny_bert_no_heads_dir)
    config = TrainConfig(batch_size=4, device="cpu", precision="fp16", max_steps=1)
    with pytest.raises(NlptoolError, match="fp16 cannot be combined with per-task gradients"):
        fit_multitask(encoder, tasks, examples, config, out_dir=None)


@pytest.mark.slow
def test_torchrun_two_processes_give_the_same_weights_on_both_ranks_and_match_one_process(
    tiny_bert_no_heads_dir, tmp_path
):
    import os

    script = HERE / "_mtl_ddp_script.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    one = tmp_path / "one"
    two = tmp_path / "two"
    subprocess.run(
        [sys.executable, str(script), str(tiny_bert_no_heads_dir), str(one)], env=env, check=True, timeout=300
    )
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    subprocess.run([*launcher, str(script), str(tiny_bert_no_heads_dir), str(two)], env=env, check=True, timeout=300)
    single = torch.load(one / "rank0.pt")
    rank0, rank1 = torch.load(two / "rank0.pt"), torch.load(two / "rank1.pt")
    assert rank0["weights"] == rank1["weights"]  # every rank applies the same weights
    assert torch.equal(rank0["params"], rank1["params"])
    assert len(single["weights"]) == len(rank0["weights"]) == 3
    for w1, w2 in zip(single["weights"], rank0["weights"], strict=True):
        assert w1 == pytest.approx(w2, rel=1e-3)
    assert torch.allclose(single["params"], rank0["params"], rtol=1e-3, atol=1e-5)


def test_bf16_autocast_trains_with_finite_weights(tiny_bert_no_heads_dir):
    encoder, tasks, examples = build(tiny_bert_no_heads_dir)
    before = torch.cat([p.detach().flatten().clone() for p in encoder.parameters()])
    config = TrainConfig(batch_size=4, lr=1e-3, warmup_steps=0, device="cpu", precision="bf16", max_steps=2)
    result = fit_multitask(encoder, tasks, examples, config, out_dir=None, combine="mgda")
    after = torch.cat([p.detach().flatten() for p in encoder.parameters()])
    assert torch.isfinite(after).all() and not torch.equal(before, after)
    assert all(math.isfinite(w) for w in result.last_step["weights"].values())


def test_the_gram_matrix_in_chunks_that_cut_through_parameters_matches_the_oracle(tiny_bert_no_heads_dir, monkeypatch):
    import nlptool.core.multitask.trainer as trainer

    monkeypatch.setattr(trainer, "GRAM_CHUNK", 7)  # every parameter is cut into many blocks, the last one partial
    test_buffers_match_autograd_and_the_written_gradient_is_combine(tiny_bert_no_heads_dir, "mgda", {})

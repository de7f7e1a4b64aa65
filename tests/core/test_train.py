"""Tests for nlptool.core.train: the shared training loop (tiny models built in-test; fast)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from nlptool.core.errors import NlptoolError
from nlptool.core.train import (
    TrainConfig,
    all_gather_with_grad,
    is_main_process,
    lr_multiplier,
    make_scheduler,
    plan_batches,
    steps_per_epoch,
    to_device,
    train,
    unwrap_model,
    weight_decay_groups,
    world_info,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


# ---------------------------------------------------------------------------------------------------------------------
# A learnable toy problem: y = x @ w + 0.5 (+ noise)


def regression_examples(n: int = 48, dim: int = 4, noise: float = 0.05) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(n, dim, generator=gen)
    w = torch.arange(1, dim + 1, dtype=torch.float32) / dim
    y = x @ w + 0.5 + noise * torch.randn(n, generator=gen)
    return [(x[i], y[i]) for i in range(n)]


def collate(items):
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def mse(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x).squeeze(-1), y)


def make_model(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Dropout(dropout), nn.Tanh(), nn.Linear(8, 1))


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def cfg(**kw) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 8, "lr": 0.01, "warmup_steps": 1, "device": "cpu", "log_every": 1}
    base.update(kw)
    return TrainConfig(**base)


# ---------------------------------------------------------------------------------------------------------------------
# Learning, determinism, batching


def test_loss_decreases_on_a_learnable_problem():
    model = make_model()
    events = []
    result = train(model, regression_examples(), collate, mse, cfg(epochs=15, lr=0.03), on_progress=events.append)
    losses = [e["loss"] for e in result.history if e["event"] == "train"]
    assert result.steps == result.total_steps == 15 * 6 == len(losses) == len(events)
    assert result.epochs_done == 15
    assert sum(losses[-6:]) / 6 < 0.1 * sum(losses[:6]) / 6
    assert [e["step"] for e in events] == list(range(1, 91))
    assert all(e["total_steps"] == 90 for e in events)
    assert result.train_seconds > 0 and result.examples_per_s > 0


def test_mode_is_restored():
    model = make_model()
    model.eval()
    train(model, regression_examples(16), collate, mse, cfg(epochs=1))
    assert not model.training
    model.train()
    train(model, regression_examples(16), collate, mse, cfg(epochs=1))
    assert model.training


def test_seeded_runs_are_identical_and_seeds_matter():
    runs = []
    for seed in (3, 3, 4):
        model = make_model(dropout=0.2)
        train(model, regression_examples(), collate, mse, cfg(seed=seed))
        runs.append(flat(model))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_grad_accum_over_batches_equals_a_bigger_batch_for_a_mean_loss():
    # 40 examples: batch 16 → 16,16,8; batch 8 with grad_accum 2 → (8,8),(8,8),(8): the same steps, example-weighted.
    data = regression_examples(40)
    a, b = make_model(), make_model()
    ra = train(a, data, collate, mse, cfg(batch_size=16, grad_accum=1))
    rb = train(b, data, collate, mse, cfg(batch_size=8, grad_accum=2))
    assert ra.steps == rb.steps == 6
    assert torch.allclose(flat(a), flat(b), atol=1e-6)
    la = [e["loss"] for e in ra.history]
    lb = [e["loss"] for e in rb.history]
    assert la == pytest.approx(lb, abs=1e-6)


def test_plan_batches_cover_every_example_once_and_reshuffle_per_epoch():
    e0 = plan_batches(23, 5, seed=1, epoch=0)
    e1 = plan_batches(23, 5, seed=1, epoch=1)
    assert [len(b) for b in e0] == [5, 5, 5, 5, 3]
    assert sorted(i for b in e0 for i in b) == list(range(23))
    assert e0 != e1 and e0 == plan_batches(23, 5, seed=1, epoch=0)
    assert steps_per_epoch(23, 5, 2) == 3 and steps_per_epoch(23, 5) == 5


def test_group_by_length_batches_hold_every_example_once_and_similar_lengths():
    n, bs = 1003, 4
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 200, (n,), generator=gen).tolist()
    for epoch in (0, 1):
        batches = plan_batches(n, bs, seed=0, epoch=epoch, lengths=lengths)
        assert sorted(i for b in batches for i in b) == list(range(n))
        assert all(len(b) == bs for b in batches[:-1]) and len(batches[-1]) == n % bs
        spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
        random_spread = [
            max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plan_batches(n, bs, seed=0, epoch=0)
        ]
        assert sum(spread) < 0.1 * sum(random_spread)
    # through train(): every example is collated exactly once per epoch
    seen: list[int] = []
    data = [(torch.full((4,), float(i)), torch.tensor(float(i))) for i in range(37)]

    def collate_and_record(items):
        seen.extend(int(y) for _, y in items)
        return collate(items)

    config = cfg(epochs=2, batch_size=5, group_by_length=True)
    train(make_model(), data, collate_and_record, mse, config, lengths=[i % 7 for i in range(37)])
    assert sorted(seen[:37]) == list(range(37)) and sorted(seen[37:]) == list(range(37))


# ---------------------------------------------------------------------------------------------------------------------
# Optimizer, schedule, clipping


def test_schedule_values_by_hand():
    # T = 10 steps, W = 2 warmup steps: ramp k/W, then (T + 1 - k) / (T + 1 - W) = (11 - k) / 9.
    linear = [lr_multiplier(k, 10, 2, "linear") for k in range(1, 11)]
    assert linear == pytest.approx([0.5, 1.0, 8 / 9, 7 / 9, 6 / 9, 5 / 9, 4 / 9, 3 / 9, 2 / 9, 1 / 9])
    constant = [lr_multiplier(k, 10, 2, "constant") for k in range(1, 11)]
    assert constant == pytest.approx([0.5] + [1.0] * 9)
    cosine = [lr_multiplier(k, 10, 2, "cosine") for k in range(1, 11)]
    assert cosine == pytest.approx([0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * (k - 2) / 9)) for k in range(3, 11)])
    assert lr_multiplier(1, 4, 0, "linear") == pytest.approx(4 / 5)  # no warmup: no step at lr 0 either
    with pytest.raises(NlptoolError, match="scheduler"):
        lr_multiplier(1, 4, 0, "exponential")


def test_scheduler_and_the_lrs_train_uses():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = make_scheduler(opt, 10, 2, "linear")
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([2.0 * lr_multiplier(k, 10, 2) for k in range(1, 11)])
    # 48 examples / batch 8 = 6 steps per epoch, 2 epochs = 12 steps; warmup_ratio 0.25 → ceil(3) = 3 steps
    events = []
    config = cfg(lr=0.1, warmup_steps=None, warmup_ratio=0.25, scheduler="linear")
    train(make_model(), regression_examples(), collate, mse, config, on_progress=events.append)
    assert [e["lr"] for e in events] == pytest.approx([0.1 * lr_multiplier(k, 12, 3) for k in range(1, 13)])


def test_weight_decay_groups_exclude_biases_and_norm_weights():
    class MyRMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4))

    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4), MyRMSNorm(), nn.Linear(4, 2))
    model[4].weight.requires_grad_(False)  # frozen: in no group
    groups = weight_decay_groups(model, 0.05)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == ids([model[0].weight, model[1].weight])
    assert ids(no_decay["params"]) == ids(
        [model[1].bias, model[2].weight, model[2].bias, model[3].weight, model[4].bias]
    )


def test_clipping_bounds_the_gradient_and_reports_the_norm():
    # AdamW's first step is ~lr * g / (|g| + 1e-8): with the gradient clipped to a norm of 1e-12 the weights barely
    # move, without clipping every weight moves by about lr.
    data = regression_examples(8)
    events = []
    clipped, free = make_model(), make_model()
    before = flat(clipped).clone()
    kw = {"epochs": 1, "batch_size": 8, "weight_decay": 0.0, "lr": 0.01}
    train(clipped, data, collate, mse, cfg(max_grad_norm=1e-12, **kw), on_progress=events.append)
    train(free, data, collate, mse, cfg(max_grad_norm=None, **kw))
    assert (flat(clipped) - before).abs().max() < 1e-5
    assert (flat(free) - before).abs().max() > 5e-3
    # the reported norm is the unclipped one
    ref = make_model()
    mse(ref, collate(data)).backward()
    norm = torch.sqrt(sum((p.grad**2).sum() for p in ref.parameters()))
    assert events[0]["grad_norm"] == pytest.approx(float(norm), rel=1e-5)


def test_nan_loss_raises_naming_the_step_and_leaves_weights_finite():
    calls = []

    def loss_nan_at_step_3(model, batch):
        calls.append(1)
        loss = mse(model, batch)
        return loss * float("nan") if len(calls) == 3 else loss

    model = make_model()
    with pytest.raises(NlptoolError, match=r"at step 3 .*lower the learning rate"):
        train(model, regression_examples(), collate, loss_nan_at_step_3, cfg())
    assert torch.isfinite(flat(model)).all()


def test_bf16_on_cpu_trains_and_fp16_needs_cuda():
    result = train(make_model(), regression_examples(), collate, mse, cfg(epochs=3, precision="bf16", lr=0.03))
    losses = [e["loss"] for e in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    if not torch.cuda.is_available():
        with pytest.raises(NlptoolError, match="fp16 needs a CUDA"):
            train(make_model(), regression_examples(), collate, mse, cfg(precision="fp16"))
        with pytest.raises(NlptoolError, match="CUDA is not available"):
            train(make_model(), regression_examples(), collate, mse, cfg(device="cuda"))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"group_by_length": True}, "lengths"),
        ({"metric": "r"}, "evaluate"),
        ({"batch_size": 0}, "batch_size"),
        ({"scheduler": "step"}, "scheduler"),
        ({"precision": "int8"}, "precision"),
    ],
)
def test_invalid_options(kw, match):
    with pytest.raises(NlptoolError, match=match):
        train(make_model(), regression_examples(8), collate, mse, cfg(**kw))


def test_bad_losses_are_explained():
    with pytest.raises(NlptoolError, match="scalar"):
        train(make_model(), regression_examples(8), collate, lambda m, b: m(b[0]), cfg())
    with pytest.raises(NlptoolError, match="does not depend"):
        train(make_model(), regression_examples(8), collate, lambda m, b: mse(m, b).detach(), cfg())
    with pytest.raises(NlptoolError, match="no training examples"):
        train(make_model(), [], collate, mse, cfg())


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation, best model, log


def test_best_model_is_saved_only_when_the_metric_improves(tmp_path):
    values = iter([0.5, 0.7, 0.6, 0.8, 0.8])
    saved = []

    def evaluate(model):
        assert not model.training and not torch.is_grad_enabled()
        return {"spearman": next(values), "n": 3}

    def save_best(model, folder):
        saved.append(len(saved))
        (folder / "marker.txt").write_text(str(len(saved)))

    config = cfg(epochs=1, batch_size=10, eval_every=1, metric="spearman", output_dir=str(tmp_path))
    result = train(make_model(), regression_examples(), collate, mse, config, evaluate=evaluate, save_best=save_best)
    evals = [e for e in result.history if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [1, 2, 3, 4, 5]
    assert [e["is_best"] for e in evals] == [True, True, False, True, False]  # a tie is not an improvement
    assert evals[0]["metrics"] == {"spearman": 0.5, "n": 3.0}
    assert result.best_metric == 0.8 and result.best_step == 4
    assert len(saved) == 3 and (tmp_path / "best" / "marker.txt").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "checkpoint-last", "train_log.jsonl"]


def test_lower_is_better_and_unknown_metric(tmp_path):
    values = iter([3.0, 2.0, 2.5])
    config = cfg(epochs=3, batch_size=48, metric="loss", greater_is_better=False)
    result = train(make_model(), regression_examples(), collate, mse, config, evaluate=lambda m: {"loss": next(values)})
    assert (result.best_metric, result.best_step) == (2.0, 2)
    with pytest.raises(NlptoolError, match="metric 'acc' is not among"):
        train(make_model(), regression_examples(), collate, mse, cfg(metric="acc"), evaluate=lambda m: {"f1": 1.0})


def test_evaluation_does_not_change_the_training_trajectory():
    def noisy_eval(model):  # draws from every RNG the training could use
        import random

        import numpy as np

        torch.rand(5), random.random(), np.random.rand()
        return {"x": 1.0}

    a, b = make_model(dropout=0.3), make_model(dropout=0.3)
    train(a, regression_examples(), collate, mse, cfg())
    train(b, regression_examples(), collate, mse, cfg(eval_every=1), evaluate=noisy_eval)
    assert torch.equal(flat(a), flat(b))


def test_train_log_jsonl_lines_parse_and_match_history(tmp_path):
    (tmp_path / "train_log.jsonl").write_text('{"stale": true}\n')  # a fresh run starts the log anew
    config = cfg(epochs=2, log_every=4, output_dir=str(tmp_path))
    result = train(make_model(), regression_examples(), collate, mse, config, evaluate=lambda m: {"r": 0.1})
    lines = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert lines == result.history
    train_events = [e for e in lines if e["event"] == "train"]
    assert [e["step"] for e in train_events] == [4, 8, 12]  # every 4 steps and the last
    assert set(train_events[0]) == {"event", "step", "epoch", "loss", "lr", "examples_per_s"}
    assert [e["step"] for e in lines if e["event"] == "eval"] == [6, 12]  # eval_every=0: end of each epoch


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints and resume


class Crash(Exception):
    pass


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    # 40 examples, batch 8 → 5 batches; grad_accum 2 → 3 steps per epoch; 3 epochs → 9 steps. Dropout makes the run
    # depend on the restored RNG state; the crash comes mid-epoch, mid-accumulation, after the checkpoint at step 4.
    data = regression_examples(40)
    evaluate = lambda m: {"neg_loss": -float(mse(m, collate(data)))}  # noqa: E731
    kw = {"epochs": 3, "grad_accum": 2, "eval_every": 1, "metric": "neg_loss", "checkpoint_every": 2}
    straight = make_model(dropout=0.2)
    ref = train(straight, data, collate, mse, cfg(output_dir=str(tmp_path / "a"), **kw), evaluate=evaluate)

    calls = []

    def crashing_loss(model, batch):
        calls.append(1)
        if len(calls) == 10:  # the second batch of step 5
            raise Crash
        return mse(model, batch)

    out = str(tmp_path / "b")
    with pytest.raises(Crash):
        train(make_model(dropout=0.2), data, collate, crashing_loss, cfg(output_dir=out, **kw), evaluate=evaluate)
    state = json.loads((tmp_path / "b" / "checkpoint-last" / "trainer_state.json").read_text())
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 1, 2)

    resumed = make_model(seed=99, dropout=0.2)  # a different init: the checkpoint's weights must win
    res = train(resumed, data, collate, mse, cfg(output_dir=out, resume=True, **kw), evaluate=evaluate)
    assert res.steps == ref.steps == 9
    assert (flat(resumed) - flat(straight)).abs().max() < 1e-6
    assert (res.best_metric, res.best_step) == pytest.approx((ref.best_metric, ref.best_step), abs=1e-6)
    strip = lambda h: [{k: v for k, v in e.items() if k != "examples_per_s"} for e in h]  # noqa: E731
    assert len(res.history) == len(ref.history)
    for x, y in zip(strip(res.history), strip(ref.history), strict=True):
        assert x.keys() == y.keys() and x["step"] == y["step"]
        if "loss" in x:
            assert x["loss"] == pytest.approx(y["loss"], abs=1e-6)
    log = [json.loads(line) for line in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [e["step"] for e in ref.history]  # rewritten from the checkpoint, no dupes


def test_resume_errors(tmp_path):
    data = regression_examples(16)
    with pytest.raises(NlptoolError, match="no checkpoint to resume from"):
        train(make_model(), data, collate, mse, cfg(output_dir=str(tmp_path), resume=True))
    with pytest.raises(NlptoolError, match="needs output_dir"):
        train(make_model(), data, collate, mse, cfg(resume=True))
    train(make_model(), data, collate, mse, cfg(epochs=1, output_dir=str(tmp_path)))
    with pytest.raises(NlptoolError, match=r"batch_size: 8 → 4"):
        train(make_model(), data, collate, mse, cfg(epochs=1, batch_size=4, output_dir=str(tmp_path), resume=True))
    # resuming a finished run is a no-op that returns its result
    done = train(make_model(), data, collate, mse, cfg(epochs=1, resume=str(tmp_path / "checkpoint-last")))
    assert done.steps == 2 and done.history


# ---------------------------------------------------------------------------------------------------------------------
# Helpers


def test_to_device_handles_nested_containers():
    Pair = namedtuple("Pair", "a b")

    @dataclass
    class Batch:
        ids: torch.Tensor
        extra: dict

    batch = {
        "x": torch.ones(2),
        "list": [torch.zeros(1), 3, "s"],
        "tuple": (torch.ones(1),),
        "pair": Pair(torch.ones(1), None),
        "dc": Batch(torch.ones(3), {"m": torch.ones(1)}),
    }
    moved = to_device(batch, "meta")
    assert moved["x"].is_meta and moved["list"][0].is_meta and moved["list"][1:] == [3, "s"]
    assert isinstance(moved["tuple"], tuple) and moved["tuple"][0].is_meta
    assert isinstance(moved["pair"], Pair) and moved["pair"].a.is_meta and moved["pair"].b is None
    assert isinstance(moved["dc"], Batch) and moved["dc"].ids.is_meta and moved["dc"].extra["m"].is_meta
    assert not batch["x"].is_meta  # the input is not modified


def test_distribution_helpers_without_distribution(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world_info() == (0, 1) and is_main_process()
    t = torch.ones(3, requires_grad=True)
    assert all_gather_with_grad(t) is t
    model = nn.Linear(2, 2)
    assert unwrap_model(model) is model
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert world_info() == (1, 2) and not is_main_process()


# ---------------------------------------------------------------------------------------------------------------------
# torchrun: two CPU processes (gloo) against one process over the same global batches


def _run(cmd: list[str], out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd + [str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out, weights_only=True)


def test_torchrun_two_processes_match_one_process(tmp_path):
    script = str(HERE / "_ddp_script.py")
    t0 = time.perf_counter()
    single = _run([sys.executable, script], tmp_path / "single.pt")
    t1 = time.perf_counter()
    ddp = _run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", script],
        tmp_path / "ddp.pt",
    )
    t2 = time.perf_counter()
    print(f"single process {t1 - t0:.1f} s, torchrun x2 {t2 - t1:.1f} s")
    assert single["world_size"] == 1 and ddp["world_size"] == 2
    assert single["runs"].keys() == ddp["runs"].keys() and len(single["runs"]) == 3
    for name, one in single["runs"].items():
        two = ddp["runs"][name]
        for key, value in one["state"].items():
            assert (value - two["state"][key]).abs().max() < 1e-5, (name, key)
        assert one["losses"] == pytest.approx(two["losses"], rel=1e-5, abs=1e-6), name
        # the gradient scale (which AdamW's updates would hide) matches too
        assert one["grad_norms"] == pytest.approx(two["grad_norms"], rel=1e-5, abs=1e-6), name


# ---------------------------------------------------------------------------------------------------------------------
# Periodic checkpoints, interrupts before the first checkpoint, the caller's state


class StopAt:
    """An ``on_progress`` hook that raises KeyboardInterrupt (as Ctrl-C would) at the given step's event."""

    def __init__(self, step: int) -> None:
        self.step = step

    def __call__(self, event: dict) -> None:
        if event.get("step") == self.step and "event" not in event:
            raise KeyboardInterrupt


def test_checkpoint_every_adds_to_the_end_of_epoch_checkpoints(tmp_path, monkeypatch):
    from nlptool.core import train as train_mod

    saved = []
    original = train_mod._Loop._save_checkpoint

    def spy(self):
        saved.append(self.step)
        original(self)

    monkeypatch.setattr(train_mod._Loop, "_save_checkpoint", spy)
    data = regression_examples(24)  # batch 8 → 3 steps per epoch, 2 epochs
    train(make_model(), data, collate, mse, cfg(output_dir=str(tmp_path / "a"), checkpoint_every=2))
    assert saved == [2, 3, 4, 6]
    saved.clear()
    train(make_model(), data, collate, mse, cfg(output_dir=str(tmp_path / "b")))
    assert saved == [3, 6]
    with pytest.raises(NlptoolError, match="checkpoint_every=-1"):
        train(make_model(), data, collate, mse, cfg(checkpoint_every=-1))


@pytest.mark.parametrize(("save_every", "stop", "saved_at"), [(2, 5, 4), (4, 8, 5), (2, 8, 6)])
def test_interrupt_and_resume_from_a_periodic_checkpoint_matches_a_straight_run(tmp_path, save_every, stop, saved_at):
    # 40 examples, batch 8, grad_accum 1 → 5 steps per epoch, 2 epochs. The interrupt comes at a step's progress
    # event, before that step's checkpoint; the resume continues mid-epoch from the last checkpoint.
    data = regression_examples(40)
    kw = {"epochs": 2, "checkpoint_every": save_every, "log_every": 3}
    straight = make_model(dropout=0.3)
    ref = train(straight, data, collate, mse, cfg(output_dir=str(tmp_path / "a"), **kw))
    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        train(make_model(dropout=0.3), data, collate, mse, cfg(output_dir=str(out), **kw), on_progress=StopAt(stop))
    state = json.loads((out / "checkpoint-last" / "trainer_state.json").read_text())
    assert state["step"] == saved_at
    assert state["batch_in_epoch"] == saved_at % 5
    resumed = make_model(seed=5, dropout=0.3)
    res = train(resumed, data, collate, mse, cfg(output_dir=str(out), resume=True, **kw))
    assert res.steps == ref.steps == 10
    assert (flat(resumed) - flat(straight)).abs().max() < 1e-6
    losses = lambda h: [e["loss"] for e in h if e["event"] == "train"]  # noqa: E731
    assert losses(res.history) == pytest.approx(losses(ref.history), abs=1e-6)


def test_an_interrupt_before_the_first_checkpoint_leaves_nothing_behind(tmp_path):
    data = regression_examples(24)
    out = tmp_path / "run" / "training"
    for hook in (StopAt(1), StopAt(2)):
        with pytest.raises(KeyboardInterrupt):
            train(make_model(), data, collate, mse, cfg(output_dir=str(out)), on_progress=hook)
        assert not out.exists()  # created by the run and removed: the same run can simply start again
    # a folder that was there before keeps the user's files; the run's own log and best model go
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    evaluate = lambda m: {"neg_loss": -float(mse(m, collate(data)))}  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        train(
            make_model(),
            data,
            collate,
            mse,
            cfg(output_dir=str(out), eval_every=1, metric="neg_loss"),
            evaluate=evaluate,
            save_best=lambda m, path: torch.save(m.state_dict(), path / "w.pt"),
            on_progress=StopAt(2),
        )
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # after a checkpoint everything stays, for --resume
    with pytest.raises(KeyboardInterrupt):
        train(make_model(), data, collate, mse, cfg(output_dir=str(out)), on_progress=StopAt(5))
    assert (out / "checkpoint-last" / "trainer_state.json").is_file() and (out / "train_log.jsonl").is_file()
    # an interrupted resume keeps the checkpoint it started from
    with pytest.raises(KeyboardInterrupt):
        train(make_model(), data, collate, mse, cfg(output_dir=str(out), resume=True), on_progress=StopAt(5))
    assert json.loads((out / "checkpoint-last" / "trainer_state.json").read_text())["step"] == 3


def test_extra_state_is_kept_with_the_checkpoints(tmp_path):
    data = regression_examples(24)
    out = str(tmp_path / "t")
    with pytest.raises(KeyboardInterrupt):
        train(make_model(), data, collate, mse, cfg(output_dir=out), on_progress=StopAt(4), extra_state={"x": 0.25})
    res = train(make_model(), data, collate, mse, cfg(output_dir=out, resume=True))
    assert res.extra_state == {"x": 0.25} and res.checkpoint_step == 6
    fresh = train(make_model(), data, collate, mse, cfg(), extra_state={"y": 1})
    assert fresh.extra_state == {"y": 1} and fresh.checkpoint_step is None

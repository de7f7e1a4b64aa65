"""Interrupted and long training runs through the CLI (train-cosent, ner train, nsp-adapt): an interrupt before the
first checkpoint leaves an --out that can simply be rerun; --save-every writes mid-epoch checkpoints that --resume
continues from, to the same weights as an uninterrupted run; nsp-adapt keeps its "before" accuracy across a resume.

The interrupt is a KeyboardInterrupt (what Ctrl-C raises) from the training progress hook at a given step's event,
i.e. after that optimizer step and before its checkpoint.
"""

from __future__ import annotations

import json

import pytest
import torch

from nlptool.commands._common import TrainingProgress
from tests.commands.test_ner import GOLD, _write_jsonl
from tests.commands.test_train_cosent import make_pairs, train_args


@pytest.fixture
def interrupt_at(monkeypatch):
    """``interrupt_at(k)``: the next training run raises KeyboardInterrupt at step k's progress event."""

    def arm(step: int) -> None:
        def hook(self, event):
            if event.get("step") == step and "event" not in event:
                raise KeyboardInterrupt

        monkeypatch.setattr(TrainingProgress, "_log_only", hook)

    def disarm() -> None:
        monkeypatch.setattr(TrainingProgress, "_log_only", lambda self, event: None)

    arm.disarm = disarm  # type: ignore[attr-defined]
    return arm


def _weights(folder, *files):
    from safetensors.torch import load_file

    out = {}
    for name in files:
        out.update({f"{name}:{k}": v for k, v in load_file(str(folder / name)).items()})
    return out


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# ---------------------------------------------------------------------------------------------------------------------
# train-cosent


def test_cosent_interrupt_before_the_first_checkpoint_leaves_a_rerunnable_out(
    invoke, interrupt_at, tiny_bert_dir, tmp_path
):
    train = make_pairs(tmp_path / "train.tsv")
    out = tmp_path / "model"
    args = train_args(tiny_bert_dir, train, out, "--epochs", "2")
    interrupt_at(1)
    r = invoke(*args)
    assert r.exit_code == 130
    assert "before the first checkpoint" in r.stderr and "removed" in r.stderr and "no output file" not in r.stderr
    assert not out.exists()
    interrupt_at.disarm()
    r = invoke(*args)  # the same command simply runs again
    assert r.exit_code == 0, r.stderr
    assert (out / "metrics.json").is_file()


def test_cosent_interrupt_into_an_existing_folder_keeps_the_users_files(invoke, interrupt_at, tiny_bert_dir, tmp_path):
    train = make_pairs(tmp_path / "train.tsv")
    out = tmp_path / "model"
    out.mkdir()
    (out / "README.txt").write_text("mine")
    interrupt_at(2)
    r = invoke(*train_args(tiny_bert_dir, train, out, "--force"))
    assert r.exit_code == 130, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.txt"]


def test_cosent_save_every_interrupt_and_resume_match_a_straight_run(invoke, interrupt_at, tiny_bert_dir, tmp_path):
    # 24 pairs, batch 8: 3 steps per epoch, 2 epochs. Checkpoints at steps 2, 3 (epoch end) and 4; the interrupt
    # comes at step 5, so --resume continues mid-epoch from step 4 (one batch of epoch 2 already seen).
    train = make_pairs(tmp_path / "train.tsv")
    r = invoke(*train_args(tiny_bert_dir, train, tmp_path / "straight", "--epochs", "2"))
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "model"
    args = train_args(tiny_bert_dir, train, out, "--epochs", "2", "--save-every", "2")
    interrupt_at(5)
    r = invoke(*args)
    assert r.exit_code == 130
    assert "step 4 of 6" in r.stderr and "--resume" in r.stderr, r.stderr
    state = json.loads((out / "training" / "checkpoint-last" / "trainer_state.json").read_text())
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 1, 1)
    r = invoke(*args)  # without --resume the folder is refused, as before
    assert r.exit_code == 1 and "--resume" in r.stderr
    interrupt_at.disarm()
    r = invoke(*args, "--resume")
    assert r.exit_code == 0, r.stderr
    diff = _max_diff(_weights(out, "model.safetensors"), _weights(tmp_path / "straight", "model.safetensors"))
    assert diff < 1e-6
    assert json.loads((out / "metrics.json").read_text())["metrics"]["steps"] == 6
    assert not (out / "training" / "checkpoint-last").exists()


def test_cosent_interrupt_after_training_keeps_the_final_checkpoint(invoke, tiny_bert_dir, tmp_path, monkeypatch):
    # Ctrl-C while the finished run writes its files: the model may be half written, so the final checkpoint stays
    # and --resume (no steps left) writes everything again.
    import nlptool.commands.train_cosent as cmd

    train = make_pairs(tmp_path / "train.tsv")
    r = invoke(*train_args(tiny_bert_dir, train, tmp_path / "straight"))
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "model"
    write_metrics = cmd.write_metrics

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cmd, "write_metrics", interrupted)
    r = invoke(*train_args(tiny_bert_dir, train, out))
    assert r.exit_code == 130 and "step 3 of 3" in r.stderr and "--resume" in r.stderr, r.stderr
    monkeypatch.setattr(cmd, "write_metrics", write_metrics)
    r = invoke(*train_args(tiny_bert_dir, train, out, "--resume"))
    assert r.exit_code == 0, r.stderr
    assert _max_diff(_weights(out, "model.safetensors"), _weights(tmp_path / "straight", "model.safetensors")) == 0
    assert (out / "metrics.json").is_file() and not (out / "training" / "checkpoint-last").exists()


# ---------------------------------------------------------------------------------------------------------------------
# ner train


def _ner_args(model, train, out, *extra):
    args = ["ner", "train", "--train", train, "--out", out, "--model", model, "--batch-size", "2", "--lr", "1e-3"]
    return [*args, "--head-size", "8", "--max-length", "32", "--epochs", "2", *extra]


def test_ner_interrupt_before_the_first_checkpoint_leaves_a_rerunnable_out(
    invoke, interrupt_at, tiny_bert_no_heads_dir, tmp_path
):
    train = _write_jsonl(tmp_path / "train.jsonl", GOLD)
    out = tmp_path / "ner"
    interrupt_at(2)
    r = invoke(*_ner_args(tiny_bert_no_heads_dir, train, out))
    assert r.exit_code == 130 and "before the first checkpoint" in r.stderr, r.stderr
    assert not out.exists()
    interrupt_at.disarm()
    r = invoke(*_ner_args(tiny_bert_no_heads_dir, train, out))
    assert r.exit_code == 0, r.stderr


def test_ner_save_every_interrupt_and_resume_match_a_straight_run(
    invoke, interrupt_at, tiny_bert_no_heads_dir, tmp_path
):
    # 6 texts, batch 2: 3 steps per epoch, 2 epochs; --save-every 2 → checkpoints at 2, 3, 4, 6; stop at step 3.
    train = _write_jsonl(tmp_path / "train.jsonl", GOLD)
    r = invoke(*_ner_args(tiny_bert_no_heads_dir, train, tmp_path / "straight"))
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "ner"
    interrupt_at(3)
    r = invoke(*_ner_args(tiny_bert_no_heads_dir, train, out, "--save-every", "2"))
    assert r.exit_code == 130 and "step 2 of 6" in r.stderr, r.stderr
    interrupt_at.disarm()
    r = invoke(*_ner_args(tiny_bert_no_heads_dir, train, out, "--save-every", "2", "--resume"))
    assert r.exit_code == 0, r.stderr
    files = ("model.safetensors", "ner_head.safetensors")
    assert _max_diff(_weights(out, *files), _weights(tmp_path / "straight", *files)) < 1e-6


# ---------------------------------------------------------------------------------------------------------------------
# nsp-adapt


def test_nsp_adapt_resume_keeps_the_before_accuracy(invoke, interrupt_at, tiny_bert_dir, tmp_path):
    docs = []
    for i in range(12):
        k = i % 3
        docs.append("\n".join(" ".join(f"w{10 * k + (j + s) % 3}" for j in range(3)) + "." for s in range(4)))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    base = ["nsp-adapt", "--corpus", corpus, "--model", tiny_bert_dir, "--batch-size", "4", "--epochs", "2"]
    base += ["--eval-fraction", "0.2", "--max-length", "24"]
    r = invoke(*base, "--out", tmp_path / "straight")
    assert r.exit_code == 0, r.stderr
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())["metrics"]
    assert straight["nsp_accuracy_before"] is not None
    out = tmp_path / "model"
    interrupt_at(5)
    r = invoke(*base, "--out", out, "--save-every", "2")
    assert r.exit_code == 130 and "step 4 of" in r.stderr, r.stderr
    interrupt_at.disarm()
    r = invoke(*base, "--out", out, "--save-every", "2", "--resume")
    assert r.exit_code == 0, r.stderr
    resumed = json.loads((out / "metrics.json").read_text())["metrics"]
    assert resumed["nsp_accuracy_before"] == straight["nsp_accuracy_before"]
    assert resumed["nsp_accuracy"] == pytest.approx(straight["nsp_accuracy"], abs=1e-9)
    a = _weights(out, "model.safetensors")
    b = _weights(tmp_path / "straight", "model.safetensors")
    assert _max_diff(a, b) < 1e-6
    assert torch.is_tensor(next(iter(a.values())))


def test_nsp_adapt_shows_progress_while_reading_the_corpus(invoke, tiny_bert_dir, tmp_path, monkeypatch):
    import contextlib

    import nlptool.commands.nsp_adapt as cmd

    calls = []

    @contextlib.contextmanager
    def fake_progress(description, total=None, unit="rows"):
        done = []
        calls.append((description, total, unit, done))
        yield done.append

    monkeypatch.setattr(cmd, "progress", fake_progress)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("w1 w2. W3 w4.\nw5 w6.\n\nw7 w8. W9 w10.\n\nw11. W12.\n\nw13. W14.\n", encoding="utf-8")
    out = tmp_path / "m"
    r = invoke("nsp-adapt", "--corpus", corpus, "--model", tiny_bert_dir, "--out", out, "--eval-fraction", "0")
    assert r.exit_code == 0, r.stderr
    (description, total, unit, done), *_ = calls
    assert "corpus" in description and unit == "bytes" and total == corpus.stat().st_size == sum(done)


@pytest.mark.slow
def test_a_real_sigint_before_the_first_checkpoint(tiny_bert_dir, tmp_path):
    """``kill -INT`` on a real ``nlptool train-cosent`` process once its training log exists (training has started,
    no checkpoint yet: one long epoch): exit 130, the message says what was removed, and --out is gone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    train = make_pairs(tmp_path / "train.tsv", n=3000)
    out = tmp_path / "model"
    args = [sys.executable, "-m", "nlptool", *map(str, train_args(tiny_bert_dir, train, out, "--batch-size", "2"))]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # A shell's background job (`cmd &`) starts with SIGINT ignored, and Python then keeps it ignored: give the child
    # the default disposition, so the test also holds when the suite itself runs in the background.
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    log = out / "training" / "train_log.jsonl"
    deadline = time.monotonic() + 120
    while not log.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.exists(), proc.communicate()[1]
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "before the first checkpoint" in stderr and "Traceback" not in stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------------
# kg-qa train


@pytest.mark.slow  # about 13 s on the shared 2-core machine (building the char model and KB trie)
def test_kg_qa_train_save_every_writes_mid_epoch_checkpoints(invoke, tmp_path, monkeypatch):
    from nlptool.core import train as train_mod
    from tests.commands.test_kg_qa import KB, TINY, TRAIN

    n = sum(1 for line in TRAIN.read_text(encoding="utf-8").splitlines() if line.strip())
    spe = -(-n // 8)  # steps per epoch at --batch-size 8
    saved = []
    original = train_mod._Loop._save_checkpoint

    def spy(self):
        saved.append(self.step)
        original(self)

    monkeypatch.setattr(train_mod._Loop, "_save_checkpoint", spy)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = invoke(
            "kg-qa",
            "train",
            "--kb",
            KB,
            "--train",
            TRAIN,
            "--out",
            tmp_path / "m",
            *TINY,
            "--save-every",
            "2",
            "--epochs",
            "2",
        )
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.stderr
    assert saved == sorted(set(range(2, 2 * spe + 1, 2)) | {spe, 2 * spe})  # 2, 4, 5, 6, 8, 10 for 34 questions

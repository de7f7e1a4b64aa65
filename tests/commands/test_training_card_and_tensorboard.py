"""What a training run leaves besides the model: the model card (OUT/README.md) and, with ``--report-to
tensorboard``, TensorBoard event files (OUT/training/runs/). Both come from the shared scaffold (TrainingRun) and the
shared loop, exercised here through ``train-cosent``."""

from __future__ import annotations

import hashlib
import json
import shlex
import sys

import pytest
import yaml

from tests.commands.test_train_cosent import make_pairs, train_args


@pytest.fixture
def pairs(tmp_path):
    return make_pairs(tmp_path / "train.tsv"), make_pairs(tmp_path / "dev.tsv", n=12, seed=1)


def _front_matter(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_model_card_of_a_run(invoke, tiny_bert_dir, pairs, tmp_path, monkeypatch):
    train, dev = pairs
    out = tmp_path / "my model"  # a space: the command line in the card must be quoted
    args = train_args(tiny_bert_dir, train, out, "--dev", dev, "--epochs", "2")
    monkeypatch.setattr(sys, "argv", ["/venv/bin/nlptool", *map(str, args)])
    r = invoke(*args)
    assert r.exit_code == 0, r.stderr
    text = (out / "README.md").read_text(encoding="utf-8")
    meta, body = _front_matter(text)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]

    assert meta["library_name"] == "sentence-transformers" and meta["pipeline_tag"] == "sentence-similarity"
    assert {"sentence-transformers", "nlptool", "train-cosent", "cosent"} <= set(meta["tags"])
    assert "base_model" not in meta  # a local path is not a hub id
    assert meta["metrics"] == ["pearson", "spearman"]
    results = meta["model-index"][0]["results"][0]
    assert meta["model-index"][0]["name"] == "my model" and results["dataset"]["name"] == "dev.tsv"
    by_type = {m["type"]: m["value"] for m in results["metrics"]}
    assert by_type == {"spearman": metrics["dev_spearman"], "pearson": metrics["dev_pearson"]}

    # the exact command line, shell-quoted, with the installed script shown as nlptool
    assert shlex.join(["nlptool", *map(str, args)]) in body
    assert f"'{out}'" in body
    # base model, technique and reference, loading
    assert str(tiny_bert_dir) in body and "https://kexue.fm/archives/8847" in body and "λ = 20" in body
    assert f"SentenceTransformer({str(out)!r})" in body and f"--model '{out}'" in body
    # data files: rows, bytes, short SHA-256
    for path, rows in ((train, 24), (dev, 12)):
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()[:16]
        assert f"| `{path}` | {rows} | {len(data)} | `{sha}` |" in body
    # dev metrics before/after and the best step; the options; versions and date
    before, after = metrics["dev_spearman_before"], metrics["dev_spearman"]
    assert f"| spearman | {before:.4f} | {after:.4f} |" in body
    assert f"step {metrics['best_step']} of 6" in body
    assert "| lr | 0.001 |" in body and "| batch_size | 8 |" in body and "| loss | cosent |" in body
    for lib in ("nlptool", "torch", "transformers", "python"):
        assert f"- {lib}: " in body
    assert "- date: 20" in body
    # the training log: one row per evaluation
    assert "| 3" in body and "| 6" in body
    # the folder still loads with sentence-transformers (the card is a plain README)
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(out)).encode(["w1 w2"]).shape == (1, 32)


def test_card_without_dev_and_softmax(invoke, tiny_bert_dir, tmp_path):
    train = make_pairs(tmp_path / "train.tsv", kind="binary")
    out = tmp_path / "m"
    r = invoke(*train_args(tiny_bert_dir, train, out, "--loss", "softmax"))
    assert r.exit_code == 0, r.stderr
    meta, body = _front_matter((out / "README.md").read_text(encoding="utf-8"))
    assert "model-index" not in meta and "metrics" not in meta
    assert "arxiv.org/abs/1908.10084" in body and "| train_pairs | 24 |" in body


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_report_to_tensorboard(invoke, tiny_bert_dir, pairs, tmp_path):
    pytest.importorskip("tensorboard")
    train, dev = pairs
    out = tmp_path / "m"
    r = invoke(*train_args(tiny_bert_dir, train, out, "--dev", dev, "--epochs", "2", "--report-to", "tensorboard"))
    assert r.exit_code == 0, r.stderr
    runs = out / "training" / "runs"
    assert any(p.name.startswith("events.out.tfevents.") for p in runs.iterdir())
    log = [json.loads(line) for line in (out / "training" / "train_log.jsonl").read_text().splitlines()]
    scalars = _scalars(runs)
    trains = [e for e in log if e["event"] == "train"]
    evals = [e for e in log if e["event"] == "eval"]
    assert trains and evals
    assert [s for s, _ in scalars["train/loss"]] == [e["step"] for e in trains]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([e["loss"] for e in trains], rel=1e-6)
    assert [v for _, v in scalars["train/learning_rate"]] == pytest.approx([e["lr"] for e in trains], rel=1e-6)
    assert scalars["eval/spearman"] == [
        (e["step"], pytest.approx(e["metrics"]["spearman"], rel=1e-6, abs=1e-7)) for e in evals
    ]
    assert "train/epoch" in scalars and "eval/pearson" in scalars


def test_report_to_tensorboard_resume_keeps_each_step_once(invoke, tiny_bert_dir, pairs, tmp_path):
    """An interrupted run resumed from its checkpoint: the curves show every step once, as the log does."""
    pytest.importorskip("tensorboard")
    import nlptool.commands.train_cosent as cmd

    train, _ = pairs
    out = tmp_path / "m"
    args = train_args(tiny_bert_dir, train, out, "--epochs", "2", "--report-to", "tensorboard")
    real = cmd.write_metrics

    def boom(*a, **k):
        raise KeyboardInterrupt

    cmd.write_metrics = boom  # interrupt after training, before the run is finished: checkpoint-last stays
    try:
        r = invoke(*args)
    finally:
        cmd.write_metrics = real
    assert r.exit_code != 0 and (out / "training" / "checkpoint-last").is_dir()
    r = invoke(*args, "--resume")
    assert r.exit_code == 0, r.stderr
    log = [json.loads(line) for line in (out / "training" / "train_log.jsonl").read_text().splitlines()]
    steps = [s for s, _ in _scalars(out / "training" / "runs")["train/loss"]]
    assert steps == [e["step"] for e in log if e["event"] == "train"]


def test_missing_tensorboard_is_one_line_and_leaves_nothing(invoke, tiny_bert_dir, pairs, tmp_path, monkeypatch):
    train, _ = pairs
    out = tmp_path / "m"
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    r = invoke(*train_args(tiny_bert_dir, train, out, "--report-to", "tensorboard"))
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "pip install 'nlptool[tensorboard]'" in lines[0] and "--report-to" in lines[0]
    assert not out.exists()


def test_report_to_is_a_choice(invoke, tiny_bert_dir, pairs, tmp_path):
    train, _ = pairs
    r = invoke(*train_args(tiny_bert_dir, train, tmp_path / "m", "--report-to", "wandb"))
    assert r.exit_code == 2 and not (tmp_path / "m").exists()


def test_scaffold_passes_report_to_and_writes_a_generic_card(tmp_path, monkeypatch):
    """A trainer that adopts TrainingRun gets both without code of its own: a generic card when it names none."""
    from nlptool.commands._common import ReportTo, TrainingRun

    out = tmp_path / "m"
    data = tmp_path / "train.jsonl"
    data.write_text('{"x": 1}\n')
    monkeypatch.setattr(sys, "argv", ["nlptool", "ner", "train", "--train", str(data), "--out", str(out)])
    run = TrainingRun(str(out), force=False, resume=False, seed=0, report_to=ReportTo.none)
    run.make_out_dir()
    assert run.config(epochs=1).report_to == "none"
    (out / "training").mkdir()
    (out / "training" / "train_log.jsonl").write_text(
        '{"event": "eval", "step": 5, "epoch": 1.0, "metrics": {"f1": 0.5}}\n'
    )
    run.finish({"dev_f1": 0.5, "steps": 5}, inputs=[str(data)], model="bert-base-cased", params={"epochs": 1})
    meta, body = _front_matter((out / "README.md").read_text(encoding="utf-8"))
    assert meta["base_model"] == "bert-base-cased" and meta["tags"] == ["nlptool", "ner"]
    assert meta["metrics"] == ["f1"] and "| 5 | 1.0000 |  | 0.5000 |" in body
    assert f"nlptool ner train --train {data} --out {out}" in body and "| input | " in body
    assert not list(out.glob(".README.md.*"))  # written atomically: no temporary file left


def test_scaffold_checks_report_to_before_anything(tmp_path, monkeypatch):
    from nlptool.commands._common import TrainingRun
    from nlptool.core.errors import NlptoolError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(NlptoolError, match="--report-to tensorboard needs"):
        TrainingRun(str(tmp_path / "m"), force=False, resume=False, seed=0, report_to="tensorboard")
    assert not (tmp_path / "m").exists()


def test_ner_nsp_kgqa_trainers_get_a_card_and_tensorboard(invoke, tiny_bert_no_heads_dir, tmp_path):
    """The other trainers on the scaffold: a model card and, with --report-to tensorboard, event files."""
    ner_train = tmp_path / "ner.jsonl"
    rows = [{"text": f"w{i} a b w{i + 1}", "entities": [{"start": 0, "end": 2, "label": "X"}]} for i in range(1, 7)]
    ner_train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    docs = ["\n".join(f"w{(d + i) % 8 + 1} a b" for i in range(4)) for d in range(6)]  # a sentence per line
    corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    commands = {
        "ner": ["ner", "train", "--train", ner_train, "--model", tiny_bert_no_heads_dir, "--epochs", "1",
                "--batch-size", "4", "--max-length", "16", "--head-size", "8"],
        "nsp": ["nsp-adapt", "--corpus", corpus, "--model", tiny_bert_no_heads_dir, "--epochs", "1",
                "--eval-fraction", "0", "--max-pairs", "16", "--max-length", "16"],
    }  # fmt: skip
    from tests.commands.test_kg_qa import KB, TINY, TRAIN

    commands["kgqa"] = ["kg-qa", "train", "--kb", KB, "--train", TRAIN, "--epochs", "1", *TINY[:-2]]
    for name, args in commands.items():
        out = tmp_path / name
        r = invoke(*args, "--out", out, "--report-to", "tensorboard", "--device", "cpu")
        assert r.exit_code == 0, (name, r.stderr)
        meta, body = _front_matter((out / "README.md").read_text(encoding="utf-8"))
        assert "nlptool" in meta["tags"] and "## " in body, name
        assert name == "kgqa" or str(tiny_bert_no_heads_dir) in body, name
        assert list((out / "training" / "runs").rglob("events.out.tfevents.*")), name

"""``nlptool classify train|predict|eval`` through the CLI: the round trip, reproducibility, stdin, refusals, bad
input, and the pipe into ``calibrate-can``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import jsonl

TRAIN = [(f"w{i} a w{i + 1}", "pos") for i in range(10)] + [(f"w{i + 40} b w{i + 41}", "neg") for i in range(10)]
DEV = [("w5 a w7", "pos"), ("w50 b w52", "neg"), ("a w3", "pos"), ("b w60", "neg")]


def write_jsonl(path, rows, extra=False):
    lines = []
    for i, (t, y) in enumerate(rows):
        row = {"text": t, "label": y}
        if extra:
            row["id"] = i
        lines.append(json.dumps(row) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def one_line_error(result, *parts: str, code: int = 1) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout[:200], result.stderr, result.exception)
    # transformers' own "Loading weights" bar: shown in-process when a fixture imported transformers before the CLI
    # configured it (the CLI in a shell sets HF_HUB_DISABLE_PROGRESS_BARS first)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip() and not ln.startswith("Loading weights")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    assert not result.stdout.strip()
    return lines[0]


TRAIN_OPTS = ("--epochs", "3", "--batch-size", "8", "--lr", "2e-3", "--warmup", "0", "--device", "cpu")


def cli(*args, input=None):
    from nlptool.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("clf-data")
    return write_jsonl(base / "train.jsonl", TRAIN), write_jsonl(base / "dev.jsonl", DEV, extra=True)


@pytest.fixture(scope="module")
def model(tiny_bert_no_heads_dir, files, tmp_path_factory):
    """A classifier trained by the CLI (seed 0); its folder."""
    train, dev = files
    out = tmp_path_factory.mktemp("clf-run") / "clf"
    res = cli(
        "classify", "train", "--train", train, "--dev", dev, "--out", out, "-m", tiny_bert_no_heads_dir, *TRAIN_OPTS
    )
    assert res.exit_code == 0, (res.stderr, res.exception)
    return out


def test_train_writes_a_complete_folder(model, files):
    assert (model / "classify_head.safetensors").is_file() and (model / "README.md").is_file()
    cfg = json.loads((model / "classify_config.json").read_text(encoding="utf-8"))
    assert cfg["labels"] == ["neg", "pos"]
    doc = json.loads((model / "metrics.json").read_text(encoding="utf-8"))
    m = doc["metrics"]
    assert m["train_texts"] == 20 and m["label_counts"] == [10, 10] and m["dev_texts"] == 4
    assert 0 <= m["dev_accuracy"] <= 1 and m["steps"] == 3 * 3
    assert doc["seed"] == 0 and doc["params"]["head_lr_scale"] == 10.0 and doc["params"]["pooling"] == "mean"
    assert not (model / "training" / "checkpoint-last").exists()


def test_predict_then_eval(model, files, tmp_path):
    _, dev = files
    res = cli("classify", "predict", dev, "-m", model)
    assert res.exit_code == 0, res.stderr
    rows = jsonl(res.stdout)
    assert [r["text"] for r in rows] == [t for t, _ in DEV] and [r["id"] for r in rows] == [0, 1, 2, 3]
    for r in rows:
        assert len(r["probs"]) == 2 and sum(r["probs"]) == pytest.approx(1.0, abs=1e-12)
        assert r["pred"] == ["neg", "pos"][int(np.argmax(r["probs"]))] and r["label"] in ("neg", "pos")
    assert "neg,pos" in res.stderr
    metrics_file = tmp_path / "m.json"
    ev = cli("classify", "eval", dev, "-m", model, "--metrics-out", metrics_file)
    assert ev.exit_code == 0, ev.stderr
    assert not ev.stdout.strip() and "confusion matrix" in ev.stderr
    m = json.loads(metrics_file.read_text(encoding="utf-8"))["metrics"]
    acc = np.mean([r["pred"] == r["label"] for r in rows])
    assert m["accuracy"] == pytest.approx(acc) and m["labels"] == ["neg", "pos"]
    gold = [["neg", "pos"].index(r["label"]) for r in rows]
    pred = [["neg", "pos"].index(r["pred"]) for r in rows]
    cm = [[sum(1 for g, p in zip(gold, pred, strict=True) if (g, p) == (i, j)) for j in range(2)] for i in range(2)]
    assert m["confusion"] == cm


def test_predict_from_stdin_csv_output_and_force(model, files, tmp_path):
    _, dev = files
    text = dev.read_text(encoding="utf-8")
    from_file = jsonl(cli("classify", "predict", dev, "-m", model).stdout)
    res = cli("classify", "predict", "-", "-m", model, input=text)
    assert res.exit_code == 0, res.stderr
    assert jsonl(res.stdout) == from_file
    out = tmp_path / "p.jsonl"
    out.write_text("keep\n", encoding="utf-8")
    one_line_error(cli("classify", "predict", dev, "-m", model, "-o", out), "already exists", "--force")
    assert out.read_text(encoding="utf-8") == "keep\n"
    assert cli("classify", "predict", dev, "-m", model, "-o", out, "--force").exit_code == 0
    assert jsonl(out.read_text(encoding="utf-8")) == from_file


def test_same_seed_same_output(tiny_bert_no_heads_dir, files, model, tmp_path):
    train, dev = files
    again = tmp_path / "again"
    res = cli(
        "classify", "train", "--train", train, "--dev", dev, "--out", again, "-m", tiny_bert_no_heads_dir, *TRAIN_OPTS
    )
    assert res.exit_code == 0, res.stderr
    first = cli("classify", "predict", dev, "-m", model).stdout
    assert cli("classify", "predict", dev, "-m", again).stdout == first
    m1 = json.loads((model / "metrics.json").read_text(encoding="utf-8"))["metrics"]
    m2 = json.loads((again / "metrics.json").read_text(encoding="utf-8"))["metrics"]
    assert m1["dev_accuracy"] == m2["dev_accuracy"] and m1["best_step"] == m2["best_step"]


def test_wrong_kind_model_folder_is_refused(tiny_bert_no_heads_dir, files):
    _, dev = files
    for sub in ("predict", "eval"):
        one_line_error(
            cli("classify", sub, dev, "-m", tiny_bert_no_heads_dir),
            f"{tiny_bert_no_heads_dir} is a Hugging Face model folder",
            "not a classifier folder; train one with 'nlptool classify train'",
        )


def test_classifier_folder_is_named_by_other_loaders(model, files):
    _, dev = files
    one_line_error(
        cli("ner", "predict", dev, "-m", model),
        f"{model} is a text-classifier folder (use it with 'nlptool classify predict|eval'), not an NER model folder",
    )


def test_missing_model_is_a_usage_error(files):
    res = cli("classify", "predict", files[1])
    assert res.exit_code == 2 and "--model" in res.stderr


def test_bad_training_input_leaves_no_folder(tiny_bert_no_heads_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "w1 a", "label": "pos"}\n{"text": "w2 b"}\n', encoding="utf-8")
    out = tmp_path / "out"
    res = cli("classify", "train", "--train", bad, "--out", out, "-m", tiny_bert_no_heads_dir)
    one_line_error(res, f"{bad}:2: field 'label': missing label column")
    assert not out.exists()
    one_class = write_jsonl(tmp_path / "one.jsonl", [("w1 a", "pos"), ("w2 a", "pos")])
    one_line_error(
        cli("classify", "train", "--train", one_class, "--out", out, "-m", tiny_bert_no_heads_dir), "at least 2 classes"
    )
    assert not out.exists()
    dev = write_jsonl(tmp_path / "dev.jsonl", [("w1 a", "pos"), ("w9 c", "maybe")])
    one_line_error(
        cli("classify", "train", "--train", write_jsonl(tmp_path / "t.jsonl", TRAIN), "--dev", dev, "--out", out),
        f"{dev}:2: field 'label': label 'maybe' is unknown to the training data",
    )
    assert not out.exists()


def test_eval_refuses_unknown_gold_label_and_predict_missing_text(model, tmp_path):
    gold = write_jsonl(tmp_path / "g.jsonl", [("w1 a", "pos"), ("w2 c", "other")])
    one_line_error(cli("classify", "eval", gold, "-m", model), f"{gold}:2: field 'label': label 'other' is unknown")
    texts = tmp_path / "t.jsonl"
    texts.write_text('{"text": "w1"}\n{"sentence": "w2"}\n', encoding="utf-8")
    out = tmp_path / "p.jsonl"
    one_line_error(cli("classify", "predict", texts, "-m", model, "-o", out), f"{texts}:2: field 'text'")
    assert not out.exists()
    ok = cli("classify", "predict", texts, "-m", model, "--text-col", "sentence", "-o", out)
    one_line_error(ok, f"{texts}:1: field 'sentence'")


def test_predict_pipes_into_calibrate_can(model, files, tmp_path):
    """classify predict's output goes into calibrate-can unchanged, with the prior from the training labels."""
    train, dev = files
    preds = cli("classify", "predict", dev, "-m", model)
    assert preds.exit_code == 0, preds.stderr
    labels = json.loads((model / "classify_config.json").read_text(encoding="utf-8"))["labels"]
    counts = json.loads((model / "metrics.json").read_text(encoding="utf-8"))["metrics"]["label_counts"]
    prior = ",".join(f"{c / sum(counts)}" for c in counts)
    for how in (("--prior", prior), ("--prior-from", str(train))):
        res = cli(
            "calibrate-can", "-", "--labels", ",".join(labels), *how, "--label-col", "label", "--threshold", "0.5",
            "--metrics-out", tmp_path / f"can{how[0]}.json", "--force", input=preds.stdout,
        )  # fmt: skip
        assert res.exit_code == 0, res.stderr
        rows = jsonl(res.stdout)
        assert len(rows) == len(DEV) and [r["id"] for r in rows] == [0, 1, 2, 3]
        for r in rows:
            assert r["pred"] in labels and isinstance(r["adjusted"], bool) and 0 <= r["uncertainty"] <= 1
            assert sum(r["probs"]) == pytest.approx(1.0, abs=1e-9)
        m = json.loads((tmp_path / f"can{how[0]}.json").read_text(encoding="utf-8"))["metrics"]
        assert m["rows"] == 4 and m["prior"] == pytest.approx([0.5, 0.5])
        assert 0 <= m["accuracy_before"] <= 1


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tiny_bert_no_heads_dir, files, tmp_path):
    """classify train under torchrun --nproc_per_node 2 (gloo, CPU) follows the single-process run: same head."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from tests.conftest import run_nlptool

    nodrop = tmp_path / "nodrop"
    config = BertConfig.from_pretrained(tiny_bert_no_heads_dir)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    BertModel.from_pretrained(tiny_bert_no_heads_dir, config=config).save_pretrained(nodrop)
    BertTokenizerFast.from_pretrained(tiny_bert_no_heads_dir).save_pretrained(nodrop)
    train, dev = files  # 20 texts, batch 6: the last batch of 2 splits 1/1
    common = ["-q", "classify", "train", "--model", str(nodrop), "--train", str(train), "--dev", str(dev)]
    common += ["--batch-size", "6", "--lr", "1e-3", "--epochs", "2", "--dropout", "0", "--device", "cpu"]
    single = run_nlptool([*common, "--out", tmp_path / "one"])
    assert single.returncode == 0, single.stderr
    multi = run_nlptool([*common, "--out", str(tmp_path / "two")], nproc=2)
    assert multi.returncode == 0, multi.stderr[-3000:]
    a = load_file(tmp_path / "one" / "classify_head.safetensors")
    b = load_file(tmp_path / "two" / "classify_head.safetensors")
    assert a.keys() == b.keys() == {"linear.weight", "linear.bias"}
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["params"]["world_size"] == 2 and m1["metrics"]["dev_accuracy"] == m2["metrics"]["dev_accuracy"]

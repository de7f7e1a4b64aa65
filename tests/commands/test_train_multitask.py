"""CLI tests for ``nlptool train-multitask``: an sts + ner run on the tiny BERT (outputs load with ``encode`` and
``ner predict``), the YAML task list, baselines and Δm, and every bad input (one-line error, exit code, no folder)."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import jsonl

NER_ROWS = [
    ("w1 w2 w10 w11 w3 a", [("w10 w11", "PER")]),
    ("w4 w20 w5 w6 b c", [("w20", "LOC")]),
    ("d w12 w13 e w21 w9", [("w12 w13", "PER"), ("w21", "LOC")]),
    ("h w14 i j k", [("w14", "PER")]),
]
PAIRS = [
    ("w1 w2 w3", "w1 w2 w3", 5.0),
    ("w1 w2 w3", "w1 w2 w4", 4.0),
    ("w5 w6", "w5 w7", 3.0),
    ("w8 a b", "w9 c d", 0.0),
    ("w10 w11", "w12 w13", 1.0),
    ("w14 e", "w14 f", 3.5),
    ("w15 w16 w17", "w15 w16", 4.2),
    ("g h i", "w30 w31", 0.5),
]


def _ner_record(text, ents):
    out = []
    for surface, label in ents:
        start = (" " + text + " ").index(" " + surface + " ")
        out.append({"start": start, "end": start + len(surface), "label": label})
    return {"text": text, "entities": out}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mtl-data")
    ner = tmp / "ner.jsonl"
    ner.write_text("".join(json.dumps(_ner_record(t, e)) + "\n" for t, e in NER_ROWS), encoding="utf-8")
    sts = tmp / "sts.csv"
    sts.write_text("text1,text2,label\n" + "".join(f"{a},{b},{y}\n" for a, b, y in PAIRS), encoding="utf-8")
    return {"ner": ner, "sts": sts, "tmp": tmp}


def _args(model, out, *tasks, extra=()):
    args = ["train-multitask", "--out", out, "--model", model, "--batch-size", "4", "--lr", "1e-3", "--warmup", "0"]
    args += ["--max-length", "32", "--device", "cpu"]
    for t in tasks:
        args += ["--task", t]
    return [*args, *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_no_heads_dir, files):
    from typer.testing import CliRunner

    from nlptool.cli import app

    out = tmp_path_factory.mktemp("mtl-run") / "model"
    tasks = [f"sim=sts:{files['sts']}:{files['sts']}", f"ents=ner:{files['ner']}:{files['ner']}"]
    args = _args(tiny_bert_no_heads_dir, out, *tasks, extra=["--steps", "3", "--combine", "mgda", "--eval-every", "2"])
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr
    return {"out": out, "stderr": result.stderr}


def test_run_writes_every_output(trained):
    out = trained["out"]
    for path in ("encoder/config.json", "tasks/sim/config.json", "tasks/ents/ner_config.json", "metrics.json"):
        assert (out / path).is_file(), path
    assert (out / "README.md").is_file() and (out / "training" / "train_log.jsonl").is_file()
    assert not (out / "training" / "checkpoint-last").exists()  # a finished run drops its resume state
    doc = json.loads((out / "metrics.json").read_text())
    metrics = doc["metrics"]
    assert metrics["steps"] == 3 and metrics["combine"]["method"] == "mgda" and metrics["selection"] == "mean_main"
    dev = metrics["dev"]
    assert {"sim.spearman", "ents.f1", "mean_main"} <= set(dev)
    assert dev["mean_main"] == pytest.approx((dev["sim.spearman"] + dev["ents.f1"]) / 2)
    rows = [json.loads(line) for line in (out / "mtl_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert set(r["weights"]) == {"sim", "ents"} and all(math.isfinite(w) and w >= 0 for w in r["weights"].values())
        # MGDA: no task made worse to first order
        assert r["min_alignment"] >= -1e-6
    assert doc["params"]["tasks"]["ents"]["kind"] == "ner" and doc["params"]["lr_scale"] == {"heads.ents.": 30.0}
    assert "train-multitask: model saved to" in trained["stderr"] and "last weight" in trained["stderr"]


def test_outputs_load_with_encode_and_ner_predict(invoke, trained, files, tmp_path):
    out = trained["out"]
    texts = tmp_path / "t.txt"
    texts.write_text("w1 w2\nw3 a\n", encoding="utf-8")
    r = invoke("encode", texts, "--model", out / "encoder")
    assert r.exit_code == 0, r.stderr
    vectors = jsonl(r.stdout)
    assert len(vectors) == 2 and len(vectors[0]["embedding"]) == 32
    r = invoke("ner", "predict", files["ner"], "--model", out / "tasks" / "ents")
    assert r.exit_code == 0, r.stderr
    preds = jsonl(r.stdout)
    assert len(preds) == len(NER_ROWS) and all("entities" in p for p in preds)
    r = invoke("encode", texts, "--model", out / "tasks" / "sim")  # an sts task's folder is the encoder
    assert r.exit_code == 0 and jsonl(r.stdout) == vectors


def test_tasks_from_a_yaml_config_baselines_and_delta_m(invoke, tiny_bert_no_heads_dir, files, tmp_path):
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"metrics": {"dev_spearman": 0.5}}), encoding="utf-8")
    ner_base = tmp_path / "ner_base.json"
    ner_base.write_text(json.dumps({"metrics": {"dev_f1": 0.25}}), encoding="utf-8")
    cfg = tmp_path / "tasks.yaml"
    cfg.write_text(
        "task:\n"
        f"  - sim=sts:{files['sts']}:{files['sts']}\n"
        f"  - ents=ner:{files['ner']}:{files['ner']}\n"
        "combine: gradnorm-sum\n"
        f"baseline: [sim={base}, ents={ner_base}]\n",
        encoding="utf-8",
    )
    out = tmp_path / "m"
    args = ["--config", cfg, "train-multitask", "--out", out, "--model", tiny_bert_no_heads_dir, "--steps", "2"]
    r = invoke(*args, "--batch-size", "4", "--max-length", "32", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    dev = metrics["dev"]
    expected = ((dev["sim.spearman"] - 0.5) / 0.5 + (dev["ents.f1"] - 0.25) / 0.25) * 50
    assert metrics["selection"] == "delta_m" and metrics["delta_m"] == pytest.approx(expected)
    assert metrics["baselines"] == {"sim": 0.5, "ents": 0.25} and metrics["combine"]["method"] == "gradnorm-sum"
    assert "Δm against the baselines" in r.stderr


def test_same_seed_same_model(invoke, tiny_bert_no_heads_dir, files, tmp_path):
    tasks = [f"sim=sts:{files['sts']}", f"ents=ner:{files['ner']}"]
    logs = []
    for name in ("a", "b"):
        r = invoke(*_args(tiny_bert_no_heads_dir, tmp_path / name, *tasks, extra=["--steps", "2", "--seed", "5"]))
        assert r.exit_code == 0, r.stderr
        logs.append((tmp_path / name / "mtl_log.jsonl").read_text())
    assert logs[0] == logs[1]


@pytest.mark.parametrize(
    "tasks,extra,code,needle",
    [
        (["sim-sts:{sts}"], [], 2, "--task"),  # no '='
        (["sim=sts"], [], 2, "NAME=KIND:TRAIN"),  # no file
        (["sim=foo:{sts}"], [], 2, "unknown kind 'foo'"),
        (["sim=sts:{sts}", "sim=ner:{ner}"], [], 2, "given twice"),
        (["sim=sts:{sts}", "ents=ner:{ner}"], ["--combine", "mgda-ub"], 2, "separate inputs"),
        (["sim=sts:{sts}", "ents=ner:{ner}"], ["--combine", "main-aux", "--main-task", "nope"], 2, "--main-task"),
        (["sim=sts:{sts}", "ents=ner:{ner}"], ["--combine", "main-aux"], 2, "--main-task"),
        (["sim=sts:{sts}"], ["--combine", "mgda"], 2, "at least 2"),
        (["sim=sts:{sts}"], ["--combine", "pcgrad"], 2, "at least 2"),
        (["sim=sts:{sts}", "ents=ner:{ner}"], ["--combine", "loss-norm", "--loss-weights", "prior"], 2, "prior"),
        (["sim=sts:{sts}", "ents=ner:{ner}"], ["--combine", "loss-norm", "--loss-weights", "mean"], 2, "gamma"),
        (["sim=sts:{ner}"], [], 1, "ner.jsonl"),  # an NER file as pairs: no pair columns
        (["ents=ner:{sts}"], [], 1, "sts.csv"),  # pairs as NER: no text/entities
        (["ents=ner:{noents}"], [], 1, "noents.jsonl:1"),
        (["sim=sts:{sts}"], ["--baseline", "sim={sts}"], 1, "not JSON"),
        (["sim=sts:{sts}"], ["--baseline", "x={sts}"], 2, "names no task"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_folder(
    invoke, tiny_bert_no_heads_dir, files, tmp_path, tasks, extra, code, needle
):
    noents = tmp_path / "noents.jsonl"
    noents.write_text(json.dumps({"text": "w1 w2", "label": "x"}) + "\n", encoding="utf-8")
    paths = {"sts": files["sts"], "ner": files["ner"], "noents": noents}
    out = tmp_path / "out"
    r = invoke(
        *_args(
            tiny_bert_no_heads_dir,
            out,
            *[t.format(**paths) for t in tasks],
            extra=["--steps", "1", *[e.format(**paths) for e in extra]],
        )
    )
    assert r.exit_code == code, (r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    if code == 1:
        lines = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
        assert len(lines) == 1 and "Traceback" not in r.stderr
    assert not out.exists()


def test_classify_kind(invoke, tiny_bert_no_heads_dir, files, tmp_path):
    classify = pytest.importorskip("nlptool.core.classify")
    clf = tmp_path / "clf.jsonl"
    rows = [("w1 w2 a", "x"), ("w3 w4 b", "y"), ("w1 w5 c", "x"), ("w6 w4 d", "y")]
    clf.write_text("".join(json.dumps({"sentence": t, "tag": y}) + "\n" for t, y in rows), encoding="utf-8")
    out = tmp_path / "m"
    tasks = [f"sim=sts:{files['sts']}", f"topic=classify:{clf}:{clf}"]
    r = invoke(
        *_args(
            tiny_bert_no_heads_dir, out, *tasks, extra=["--steps", "2", "--text-col", "sentence", "--label-col", "tag"]
        )
    )
    assert r.exit_code == 0, r.stderr
    assert "topic.accuracy" in json.loads((out / "metrics.json").read_text())["metrics"]["dev"]
    # the task folder is a classifier folder ('classify predict|eval --model' load it with this function)
    encoder, task = classify.load_classifier(out / "tasks" / "topic")
    assert task.labels == ["x", "y"] and encoder.encode(["w1"]).shape == (1, 32)


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tiny_bert_no_heads_dir, files, tmp_path):
    """The command under torchrun: the same per-step weights and losses as one process, one set of output files."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from tests.conftest import run_nlptool

    nodrop = tmp_path / "nodrop"  # no dropout: its masks differ between one and two processes
    config = BertConfig.from_pretrained(tiny_bert_no_heads_dir)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    BertModel.from_pretrained(tiny_bert_no_heads_dir, config=config).save_pretrained(nodrop)
    BertTokenizerFast.from_pretrained(tiny_bert_no_heads_dir).save_pretrained(nodrop)
    tasks = [f"sim=sts:{files['sts']}:{files['sts']}", f"ents=ner:{files['ner']}"]
    logs = []
    for nproc in (1, 2):
        out = tmp_path / f"p{nproc}"
        extra = ["--steps", "3", "--combine", "mgda", "--batch-size", "5"]
        r = run_nlptool(_args(nodrop, out, *tasks, extra=extra), nproc=nproc)
        assert r.returncode == 0, r.stderr
        assert (out / "tasks" / "ents" / "ner_head.safetensors").is_file()
        logs.append([json.loads(line) for line in (out / "mtl_log.jsonl").read_text().splitlines()])
    assert [r["step"] for r in logs[1]] == [1, 2, 3]  # rank 0 alone writes the log
    for one, two in zip(logs[0], logs[1], strict=True):
        assert one["weights"] == pytest.approx(two["weights"], rel=1e-3)
        assert one["losses"] == pytest.approx(two["losses"], rel=1e-4)

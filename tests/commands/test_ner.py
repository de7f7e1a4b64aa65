"""CLI tests for ``nlptool ner``: convert, train (a tiny BERT that overfits a few sentences), predict, eval, errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.conftest import jsonl, run_nlptool

# Synthetic sentences from the tiny vocabulary (w0..w79, a..n), with flat and nested entities.
SENTENCES = [
    ("w1 w2 w10 w11 w3 a", [("w10 w11", "PER")]),
    ("w4 w20 w5 w6 b c", [("w20", "LOC")]),
    ("w30 w31 w32 w7 w8", [("w30 w31 w32", "ORG"), ("w31", "LOC")]),
    ("d w12 w13 e w21 w9", [("w12 w13", "PER"), ("w21", "LOC")]),
    ("w40 w41 f g w33 w34", [("w33 w34", "ORG")]),
    ("h w14 i j k", [("w14", "PER")]),
]


def _record(text, ents):
    out = []
    for surface, label in ents:
        start = (" " + text + " ").index(" " + surface + " ")
        out.append({"start": start, "end": start + len(surface), "label": label})
    return {"text": text, "entities": out}


GOLD = [_record(t, e) for t, e in SENTENCES]
# All six sentences as one text of 34 words: longer than the 32-token window, so it is cut into two windows that
# share 8 tokens (the model's stride); training on it too lets the test check the windows' merge exactly.
LONG = _record(" ".join(t for t, _ in SENTENCES), [x for _, ents in SENTENCES for x in ents])


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _spans(rows):
    return [sorted((e["start"], e["end"], e["label"]) for e in r["entities"]) for r in rows]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_no_heads_dir):
    """A tiny EGP model trained to overfit GOLD and LONG (40 steps at a high learning rate)."""
    from nlptool.cli import app

    tmp = tmp_path_factory.mktemp("ner")
    train = _write_jsonl(tmp / "train.jsonl", GOLD)
    _write_jsonl(tmp / "train_long.jsonl", [*GOLD, LONG])
    out = tmp / "model"
    args = ["ner", "train", "--train", tmp / "train_long.jsonl", "--dev", train, "--out", out]
    args += ["--model", tiny_bert_no_heads_dir, "--epochs", "20", "--batch-size", "4", "--lr", "1e-2"]
    args += ["--warmup", "0", "--head-size", "16", "--head-lr-scale", "10"]
    args += ["--max-length", "32", "--eval-every", "40", "--metrics-out", tmp / "train_metrics.json"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr
    return {"dir": out, "train": train, "tmp": tmp, "stderr": result.stderr}


def test_train_writes_a_loadable_folder(trained):
    out = trained["dir"]
    for name in ("config.json", "ner_config.json", "ner_head.safetensors", "metrics.json", "tokenizer.json"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "ner_config.json").read_text())
    assert cfg["labels"] == ["LOC", "ORG", "PER"] and cfg["head"] == "egp" and cfg["max_length"] == 32
    assert not (out / "training" / "checkpoint-last").exists()
    assert (out / "training" / "train_log.jsonl").is_file()
    metrics = json.loads((trained["tmp"] / "train_metrics.json").read_text())
    assert metrics["metrics"]["dev_f1"] == 1.0 and metrics["metrics"]["steps"] == 40
    assert metrics["params"]["head"] == "egp"
    assert "step 40: dev span F1 100.00" in trained["stderr"]  # evaluations are logged while training
    # the encoder folder loads with plain transformers
    from transformers import AutoModel

    assert AutoModel.from_pretrained(out).config.hidden_size == 32


def test_overfit_predicts_training_entities_exactly(invoke, trained):
    result = invoke("ner", "predict", trained["dir"], trained["train"])
    assert result.exit_code == 0, result.stderr
    rows = jsonl(result.stdout)
    assert [r["text"] for r in rows] == [t for t, _ in SENTENCES]
    assert _spans(rows) == _spans(GOLD)  # including the nested LOC inside the ORG
    for r in rows:
        for e in r["entities"]:
            assert r["text"][e["start"] : e["end"]] == e["text"] and e["score"] > 0


def test_predict_flat_threshold_stdin_and_extra_fields(invoke, trained, tmp_path):
    flat = jsonl(invoke("ner", "predict", trained["dir"], trained["train"], "--flat").stdout)
    nested = [(e["start"], e["end"]) for e in flat[2]["entities"]]
    assert len(nested) == 1  # ORG "w30 w31 w32" and LOC "w31" overlap: one is kept
    assert _spans(flat)[:2] == _spans(GOLD)[:2]
    none = jsonl(invoke("ner", "predict", trained["dir"], trained["train"], "--threshold", "1e6").stdout)
    assert all(r["entities"] == [] for r in none)
    # plain text from stdin
    result = invoke("ner", "predict", trained["dir"], "-", input="w1 w2 w10 w11 w3 a\nh w14 i j k\n")
    assert result.exit_code == 0, result.stderr
    assert _spans(jsonl(result.stdout)) == [_spans(GOLD)[0], _spans(GOLD)[5]]
    # JSONL with extra fields: kept; to a file, not overwritten without --force
    src = _write_jsonl(tmp_path / "in.jsonl", [{"id": 7, "text": "h w14 i j k"}])
    out = tmp_path / "pred.jsonl"
    assert invoke("ner", "predict", trained["dir"], src, "-o", out).exit_code == 0
    assert jsonl(out.read_text())[0]["id"] == 7
    again = invoke("ner", "predict", trained["dir"], src, "-o", out)
    assert again.exit_code == 1 and "already exists" in again.stderr


def test_predict_long_text_windows(invoke, trained, tmp_path):
    text = LONG["text"]
    src = _write_jsonl(tmp_path / "long.jsonl", [{"text": text}])
    result = invoke("-v", "ner", "predict", trained["dir"], src)
    assert result.exit_code == 0, result.stderr
    assert "1 of 1 texts are longer than a window: 2 windows" in result.stderr
    got = jsonl(result.stdout)[0]["entities"]
    for e in got:
        assert text[e["start"] : e["end"]] == e["text"]
    assert _spans([{"entities": got}]) == _spans([LONG])


def test_token_capped_batches_give_the_same_predictions(invoke, trained, tmp_path):
    """--max-batch-tokens only regroups windows: 1 (a batch per window), 40 (a few windows each) and 0 (no cap,
    batches of --batch-size) give the same entities and scores, also with the long text's windows."""
    src = _write_jsonl(tmp_path / "in.jsonl", [*({"text": r["text"]} for r in GOLD), {"text": LONG["text"]}])
    runs = {}
    for cap in ("1", "40", "0"):
        result = invoke("ner", "predict", trained["dir"], src, "--max-batch-tokens", cap, "--batch-size", "3")
        assert result.exit_code == 0, result.stderr
        runs[cap] = jsonl(result.stdout)
    assert _spans(runs["0"]) == _spans([*GOLD, LONG])
    for cap in ("1", "40"):
        assert _spans(runs[cap]) == _spans(runs["0"])
        scores = [e["score"] for r in runs[cap] for e in r["entities"]]
        assert scores == pytest.approx([e["score"] for r in runs["0"] for e in r["entities"]], abs=1e-4)
    bad = invoke("ner", "predict", trained["dir"], src, "--max-batch-tokens", "-1")
    assert bad.exit_code == 2 and "--max-batch-tokens" in bad.stderr


def test_eval_perfect_and_metrics_out(invoke, trained, tmp_path):
    m = tmp_path / "m.json"
    result = invoke("ner", "eval", trained["dir"], trained["train"], "--metrics-out", m)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "micro" in result.stderr and "nested recall" in result.stderr
    doc = json.loads(m.read_text())["metrics"]
    assert doc["micro"]["f1"] == 1.0 and doc["micro"]["support"] == 8
    assert set(doc["per_type"]) == {"LOC", "ORG", "PER"}
    assert doc["nested_gold"] == 1 and doc["nested_recall"] == 1.0
    assert json.loads(m.read_text())["params"]["max_batch_tokens"] == 1024  # the CPU default


def test_eval_measures_errors(invoke, trained, tmp_path):
    # gold with one entity the model will not find and one real entity relabelled: P = 7/8... recall 7/9
    rows = [dict(r, entities=list(r["entities"])) for r in GOLD]
    rows[5] = {"text": "h w14 i j k", "entities": [{"start": 2, "end": 5, "label": "LOC"}]}
    rows[1]["entities"].append({"start": 10, "end": 12, "label": "PER"})  # "w6"
    gold = _write_jsonl(tmp_path / "g.jsonl", rows)
    m = tmp_path / "m.json"
    assert invoke("ner", "eval", trained["dir"], gold, "--metrics-out", m).exit_code == 0
    micro = json.loads(m.read_text())["metrics"]["micro"]
    assert micro["correct"] == 7 and micro["predicted"] == 8 and micro["support"] == 9


def test_eval_bad_gold(invoke, trained, tmp_path):
    unknown = _write_jsonl(
        tmp_path / "u.jsonl", [GOLD[0], {"text": "w1 w2", "entities": [{"start": 0, "end": 2, "label": "GENE"}]}]
    )
    result = invoke("ner", "eval", trained["dir"], unknown)
    assert result.exit_code == 1
    assert "u.jsonl:2" in result.stderr and "'GENE' is unknown" in result.stderr
    bad = tmp_path / "b.jsonl"
    bad.write_text(json.dumps(GOLD[0]) + "\n" + '{"text": "w1", "entities": [}\n', encoding="utf-8")
    result = invoke("ner", "eval", trained["dir"], bad)
    assert result.exit_code == 1 and "b.jsonl:2: invalid JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_train_bad_input_and_no_partial_output(invoke, tiny_bert_no_heads_dir, tmp_path):
    overlap = _write_jsonl(
        tmp_path / "o.jsonl",
        [
            GOLD[0],
            {
                "text": "w1 w2 w3",
                "entities": [{"start": 0, "end": 5, "label": "A"}, {"start": 3, "end": 8, "label": "B"}],
            },
        ],
    )
    out = tmp_path / "out"
    result = invoke("ner", "train", "--train", overlap, "--out", out, "--model", tiny_bert_no_heads_dir)
    assert result.exit_code == 1 and "o.jsonl:2" in result.stderr and "overlap" in result.stderr
    assert not out.exists()
    rng = _write_jsonl(tmp_path / "r.jsonl", [{"text": "w1", "entities": [{"start": 0, "end": 3, "label": "A"}]}])
    result = invoke("ner", "train", "--train", rng, "--out", out, "--model", tiny_bert_no_heads_dir)
    assert result.exit_code == 1 and "r.jsonl:1" in result.stderr and "out of range" in result.stderr
    # dev labels the training data lacks
    train = _write_jsonl(tmp_path / "t.jsonl", GOLD[:2])
    result = invoke("ner", "train", "--train", train, "--dev", overlap, "--out", out, "--model", tiny_bert_no_heads_dir)
    assert result.exit_code == 1
    assert not out.exists()
    out.mkdir()
    (out / "x").write_text("keep")
    result = invoke("ner", "train", "--train", train, "--out", out, "--model", tiny_bert_no_heads_dir)
    assert result.exit_code == 1 and "not empty" in result.stderr


def test_unk_and_misaligned_warnings(invoke, tiny_bert_no_heads_dir, tmp_path):
    rows = [
        {"text": "北京 w1 w2", "entities": [{"start": 0, "end": 2, "label": "LOC"}]},
        {"text": "w10 w11", "entities": [{"start": 1, "end": 3, "label": "PER"}]},  # "10": inside the token w10
    ]
    train = _write_jsonl(tmp_path / "t.jsonl", rows)
    result = invoke(
        "ner",
        "train",
        "--train",
        train,
        "--out",
        tmp_path / "m",
        "--model",
        tiny_bert_no_heads_dir,
        "--epochs",
        "1",
        "--head-size",
        "8",
        "--max-length",
        "16",
    )
    assert result.exit_code == 0, result.stderr
    assert "1 of 2 entities have a boundary inside a token" in result.stderr and "'10'" in result.stderr
    assert "% of the tokens are the unknown token" in result.stderr


def test_convert_cli(invoke, tmp_path):
    src = tmp_path / "eng.txt"
    src.write_text(
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n", encoding="utf-8"
    )
    result = invoke("ner", "convert", "--from", "conll", src)
    assert result.exit_code == 0, result.stderr
    assert jsonl(result.stdout) == [
        {"text": "EU rejects", "entities": [{"start": 0, "end": 2, "label": "ORG"}]},
        {"text": "Peter", "entities": [{"start": 0, "end": 5, "label": "PER"}]},
    ]
    assert "2 texts, 2 entities" in result.stderr
    out = tmp_path / "o.jsonl"
    assert invoke("ner", "convert", "--from", "conll", src, "-o", out).exit_code == 0
    assert invoke("ner", "convert", "--from", "conll", src, "-o", out).exit_code == 1
    src.write_text("EU X-ORG\n", encoding="utf-8")
    result = invoke("ner", "convert", "--from", "conll", src, "-o", tmp_path / "p.jsonl")
    assert result.exit_code == 1 and "eng.txt:1: tag 'X-ORG'" in result.stderr
    assert not (tmp_path / "p.jsonl").exists()
    assert invoke("ner", "convert", "--from", "brat", src).exit_code == 2


def test_config_sections_and_flags_in_a_nested_group(invoke, trained, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("ner:\n  predict:\n    threshold: 1.0e+6\n", encoding="utf-8")
    result = invoke("--config", cfg, "ner", "predict", trained["dir"], trained["train"])
    assert result.exit_code == 0, result.stderr
    assert all(r["entities"] == [] for r in jsonl(result.stdout))
    # a flag on the line wins over the config
    result = invoke("--config", cfg, "ner", "predict", trained["dir"], trained["train"], "--threshold", "0")
    assert _spans(jsonl(result.stdout)) == _spans(GOLD)
    cfg.write_text("ner:\n  predict:\n    treshold: 1\n", encoding="utf-8")
    result = invoke("--config", cfg, "ner", "predict", trained["dir"], trained["train"])
    assert result.exit_code == 1 and "'ner predict' has no option 'treshold'" in result.stderr
    # -q after the subcommand name
    result = invoke("ner", "predict", "-q", trained["dir"], "-", input="h w14 i j k\n")
    assert result.exit_code == 0 and result.stderr == ""


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tiny_bert_no_heads_dir, tmp_path):
    """ner train under torchrun --nproc_per_node 2 (gloo, CPU) follows the single-process run: same head weights."""

    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel, BertTokenizerFast

    nodrop = tmp_path / "nodrop"
    config = BertConfig.from_pretrained(tiny_bert_no_heads_dir)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    BertModel.from_pretrained(tiny_bert_no_heads_dir, config=config).save_pretrained(nodrop)
    BertTokenizerFast.from_pretrained(tiny_bert_no_heads_dir).save_pretrained(nodrop)
    train = _write_jsonl(tmp_path / "train.jsonl", [*GOLD, LONG])  # 8 windows, batch 5: last batch 3 split 2/1
    common = ["-q", "ner", "train", "--model", str(nodrop), "--train", str(train), "--batch-size", "5"]
    common += ["--lr", "1e-3", "--max-length", "32", "--head-size", "8", "--epochs", "2"]
    single = run_nlptool([*common, "--out", tmp_path / "one"])
    assert single.returncode == 0, single.stderr
    multi = run_nlptool([*common, "--out", str(tmp_path / "two")], nproc=2)
    assert multi.returncode == 0, multi.stderr[-3000:]
    a = load_file(tmp_path / "one" / "ner_head.safetensors")
    b = load_file(tmp_path / "two" / "ner_head.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["params"]["world_size"] == 2


def test_predict_missing_text_file_is_a_one_line_error(invoke, trained, tmp_path):
    r = invoke("ner", "predict", trained["dir"], tmp_path / "missing.txt")
    assert r.exit_code == 1 and "missing.txt does not exist" in r.stderr and "Traceback" not in r.stderr


def test_cli_contract_model_option_output_and_stdout(invoke, trained, tmp_path):
    """--model/-m and -o/--output (old: positional model, --predictions-out); stdout only on request; fractions."""
    new = invoke("ner", "predict", trained["train"], "--model", trained["dir"])
    old = invoke("ner", "predict", trained["dir"], trained["train"])
    assert new.exit_code == 0 and "deprecated" not in new.stderr
    assert jsonl(new.stdout) == jsonl(old.stdout) and "is deprecated; use 'nlptool ner predict --model" in old.stderr
    preds, preds_old = tmp_path / "p.jsonl", tmp_path / "p_old.jsonl"
    r = invoke("ner", "eval", trained["train"], "-m", trained["dir"], "-o", preds)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ""  # the table goes to stderr
    assert invoke("ner", "eval", trained["dir"], trained["train"], "--predictions-out", preds_old).exit_code == 0
    assert jsonl(preds.read_text()) == jsonl(preds_old.read_text()) and len(jsonl(preds.read_text())) == len(GOLD)
    doc = json.loads(invoke("ner", "eval", trained["train"], "-m", trained["dir"], "--metrics-out", "-").stdout)
    assert doc["metrics"]["micro"]["f1"] == 1.0  # a fraction, not 100
    rows = jsonl(invoke("ner", "eval", trained["train"], "-m", trained["dir"], "-o", "-").stdout)
    assert rows == jsonl(preds.read_text())


def test_fit_from_python_matches_ner_train_and_evaluate_examples_matches_ner_eval(
    invoke, tiny_bert_no_heads_dir, tmp_path
):
    """nlptool.core.ner.fit with the CLI's settings and seed gives the weights `ner train` gives (within 1e-6), and
    evaluate_examples gives `ner eval`'s metrics."""
    from safetensors.torch import load_file

    from nlptool.core.ner import SpanNerModel, TokenEncoder, evaluate_examples, fit, read_ner_jsonl
    from nlptool.core.seeding import seed_everything
    from nlptool.core.train import TrainConfig

    train = _write_jsonl(tmp_path / "train.jsonl", [*GOLD, LONG])
    dev = _write_jsonl(tmp_path / "dev.jsonl", GOLD)
    args = [
        "ner",
        "train",
        "--train",
        train,
        "--dev",
        dev,
        "--out",
        tmp_path / "cli",
        "--model",
        tiny_bert_no_heads_dir,
    ]
    args += ["--epochs", "3", "--batch-size", "4", "--lr", "1e-3", "--head-size", "8", "--max-length", "32"]
    result = invoke(*args, "--head-lr-scale", "10", "--eval-every", "3", "--seed", "3")
    assert result.exit_code == 0, result.stderr

    seed_everything(3)  # as the command does, before the encoder and the head are built
    encoder = TokenEncoder.load(tiny_bert_no_heads_dir)
    config = TrainConfig(epochs=3, batch_size=4, lr=1e-3, eval_every=3, seed=3, device="cpu", group_by_length=True)
    done = fit(
        encoder,
        read_ner_jsonl(str(train)),
        tmp_path / "py",
        dev=read_ner_jsonl(str(dev)),
        head_size=8,
        max_length=32,
        head_lr_scale=10,
        config=config,
    )
    assert done.model_dir == tmp_path / "py" and done.best_step == done.metrics["best_step"]
    cli_metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())["metrics"]
    timing = ("train_seconds", "windows_per_s")
    assert {k: v for k, v in done.metrics.items() if k not in timing} == {
        k: v for k, v in cli_metrics.items() if k not in timing
    }
    for name in ("ner_head.safetensors", "model.safetensors"):
        a, b = load_file(tmp_path / "cli" / name), load_file(tmp_path / "py" / name)
        assert a.keys() == b.keys()
        assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6, name
    assert json.loads((tmp_path / "py" / "ner_config.json").read_text()) == json.loads(
        (tmp_path / "cli" / "ner_config.json").read_text()
    )

    doc = json.loads(invoke("ner", "eval", dev, "-m", tmp_path / "py", "--flat", "--metrics-out", "-").stdout)
    model, tokenizer, cfg = SpanNerModel.load(tmp_path / "py")
    ours = evaluate_examples(
        model, tokenizer, read_ner_jsonl(str(dev)), flat=True, max_span_tokens=cfg["max_span_tokens"]
    )["metrics"]
    assert ours.pop("texts_per_s") > 0 and doc["metrics"].pop("texts_per_s") > 0
    assert ours == doc["metrics"] and ours["texts"] == len(GOLD)

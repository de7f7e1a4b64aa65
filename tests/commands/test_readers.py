"""Every command reads its input through ``core/io``: the same errors for bytes that are not UTF-8 (file and stdin:
one line naming the file or ``<stdin>`` and the line, exit 1, no output, no temporary copy of stdin left behind),
the same formats in every predictor, ``-`` for stdin everywhere, and one rule for empty input (README, "Input: one
reader for every command")."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from tests.conftest import jsonl


@pytest.fixture(scope="session")
def ner_model_dir(tmp_path_factory, tiny_bert_no_heads_dir) -> Path:
    """An untrained tiny EGP model folder (what ``ner train`` writes): enough to exercise the readers."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from nlptool.core.ner import SpanNerModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ner-untrained")
    encoder = AutoModel.from_pretrained(tiny_bert_no_heads_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_no_heads_dir)
    net = SpanNerModel(encoder, ["PER"], head="egp", head_size=8, max_length=32, stride=8)
    net.save(path, tokenizer, {"base_model": "tiny"})
    return path


@dataclass
class Spec:
    """How one command reads one input: its arguments (SRC: the input, OUT: a new output path) and good lines."""

    name: str
    args: tuple[str, ...]
    suffix: str
    lines: tuple[str, ...]  # valid lines; the first may be a header
    out: str = "out.jsonl"  # a file, or a folder ending in '/'


def specs(tiny: Path, tiny_bare: Path, ner: Path) -> list[Spec]:
    pair = '{"text1": "w1 w2", "text2": "w3 w4", "label": 1.0}'
    gold = '{"text": "w1 w2", "entities": []}'
    probs = '{"probs": [0.5, 0.5], "x": [0.1, 0.2]}'
    return [
        Spec("encode", ("encode", str(tiny), "SRC", "-o", "OUT"), ".txt", ("w1 w2", "a b", "w3")),
        Spec("encode-npy", ("encode", str(tiny), "SRC", "-o", "OUT"), ".txt", ("w1 w2", "a b", "w3"), "out.npy"),
        Spec("ner-predict", ("ner", "predict", str(ner), "SRC", "-o", "OUT"), ".txt", ("w1 w2", "a b", "w3")),
        Spec("ner-eval", ("ner", "eval", str(ner), "SRC", "-o", "OUT"), ".jsonl", (gold, gold, gold)),
        Spec(
            "ner-train",
            ("ner", "train", "--train", "SRC", "--out", "OUT", "--model", str(tiny_bare)),
            ".jsonl",
            (gold, gold, gold),
            "model/",
        ),
        Spec("ner-convert-conll", ("ner", "convert", "SRC", "--from", "conll", "-o", "OUT"), ".txt", ("EU B-ORG",) * 3),
        Spec(
            "ner-convert-bio-chars", ("ner", "convert", "SRC", "--from", "bio-chars", "-o", "OUT"), ".txt", ("a O",) * 3
        ),
        Spec("ner-convert-cluener", ("ner", "convert", "SRC", "--from", "cluener", "-o", "OUT"), ".jsonl", (gold,) * 3),
        Spec(
            "zero-shot",
            ("zero-shot", "SRC", "--labels", "a,b", "--model", str(tiny), "-o", "OUT"),
            ".csv",
            ("text", "w1 w2", "a b"),
        ),
        Spec("calibrate-can", ("calibrate-can", "SRC", "-o", "OUT"), ".jsonl", (probs,) * 3),
        Spec(
            "entropy-normalize",
            ("entropy-normalize", "SRC", "--target-ratio", "0.5", "-o", "OUT"),
            ".jsonl",
            (probs,) * 3,
        ),
        Spec("eval-sts", ("eval-sts", str(tiny), "SRC", "-o", "OUT"), ".jsonl", (pair,) * 3),
        Spec(
            "train-cosent",
            ("train-cosent", "--model", str(tiny), "--train", "SRC", "--out", "OUT"),
            ".jsonl",
            (pair,) * 3,
            "model/",
        ),
        Spec(
            "gradcheck",
            ("gradcheck", "--layers", "2,3,1", "--trials", "1", "--input", "SRC", "-o", "OUT"),
            ".jsonl",
            (probs,) * 3,
        ),
        Spec(
            "nsp-adapt",
            ("nsp-adapt", "--corpus", "SRC", "--model", str(tiny), "--out", "OUT"),
            ".txt",
            ("w1. w2.", "w3. w4.", ""),
            "model/",
        ),
    ]


#: Commands that transform rows (empty input: empty output, a warning, exit 0) and those that evaluate or train
#: (empty input: exit 1 naming the file).
TRANSFORMERS = {
    "encode",
    "encode-npy",
    "ner-predict",
    "ner-convert-conll",
    "ner-convert-bio-chars",
    "ner-convert-cluener",
    "zero-shot",
    "calibrate-can",
    "entropy-normalize",
}
NAMES = [s.name for s in specs(Path("t"), Path("t"), Path("n"))]


@pytest.fixture(scope="module")
def all_specs(tiny_bert_dir, tiny_bert_no_heads_dir, ner_model_dir) -> dict[str, Spec]:
    return {s.name: s for s in specs(tiny_bert_dir, tiny_bert_no_heads_dir, ner_model_dir)}


def run(runner, spec: Spec, data: bytes, folder: Path, *, stdin: bool, quiet: bool = True):
    """Run ``spec`` on ``data`` (from a file or stdin) with a private temp folder; returns (result, src, out).

    ``quiet`` (-q: errors only) keeps transformers' weight-loading bars out of stderr."""
    from nlptool.cli import app

    src = folder / f"input{spec.suffix}"
    out = folder / spec.out.rstrip("/")
    spool_dir = folder / "tmp"
    spool_dir.mkdir(exist_ok=True)
    if not stdin:
        src.write_bytes(data)
    args = [("-" if stdin else str(src)) if a == "SRC" else str(out) if a == "OUT" else a for a in spec.args]
    if quiet:
        args.insert(0, "-q")
    with mock.patch.object(tempfile, "tempdir", str(spool_dir)):
        result = runner.invoke(app, args, input=data if stdin else None)
    assert not list(spool_dir.iterdir()), "a temporary copy of stdin was left behind"
    return result, src, out


def assert_failed_cleanly(result, out: Path, spec: Spec, where: str) -> str:
    assert result.exit_code == 1, (result.exit_code, result.stderr, result.stdout[:200])
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("Error: ") and "Traceback" not in err, err
    assert where in err, err
    if spec.out.endswith("/"):
        assert not (out / "config.json").exists()
    else:
        assert not out.exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"
    return err


@pytest.mark.parametrize("stdin", [False, True], ids=["file", "stdin"])
@pytest.mark.parametrize("name", NAMES)
def test_not_utf8_is_one_line_naming_file_and_line(runner, all_specs, tmp_path, name, stdin):
    spec = all_specs[name]
    lines = [ln.encode() for ln in spec.lines[:2]]
    bad = spec.lines[2].encode()
    bad = bad[:1] + b"\xe9" + bad[1:]  # latin-1 'é' inside the third line
    data = b"\n".join([*lines, bad]) + b"\n"
    result, src, out = run(runner, spec, data, tmp_path, stdin=stdin)
    err = assert_failed_cleanly(result, out, spec, f"{'<stdin>' if stdin else src}:3: ")
    assert "not valid UTF-8" in err and "0xe9" in err


@pytest.mark.parametrize("name", ["encode", "ner-predict", "ner-convert-conll", "calibrate-can"])
def test_not_utf8_on_a_later_line_counts_lines_from_the_byte_offset(runner, all_specs, tmp_path, name):
    spec = all_specs[name]
    body = [spec.lines[1]] * 5000 + ["x\xe9"]  # the first lines stay valid
    data = ("\n".join([spec.lines[0], *body]) + "\n").encode("utf-8")
    data = data.replace("x\xe9".encode(), b"x\xe9")  # 'é' in latin-1 on line 5002
    result, _, out = run(runner, spec, data, tmp_path, stdin=True)
    assert_failed_cleanly(result, out, spec, "<stdin>:5002: not valid UTF-8")


@pytest.mark.parametrize("stdin", [False, True], ids=["file", "stdin"])
@pytest.mark.parametrize("name", NAMES)
def test_empty_input_rule(runner, all_specs, tmp_path, name, stdin):
    spec = all_specs[name]
    data = b"\n\n" if spec.suffix != ".csv" else b"text\n"  # blank lines / only a header: no rows
    result, src, out = run(runner, spec, data, tmp_path, stdin=stdin, quiet=name not in TRANSFORMERS)
    shown = "<stdin>" if stdin else str(src)
    if name in TRANSFORMERS:
        assert result.exit_code == 0, result.stderr
        assert "Warning: no " in result.stderr and f" in {shown}; the output is empty" in result.stderr
        if name == "encode-npy":
            assert np.load(out).shape == (0, 32)
        else:
            assert out.read_text() == ""
    else:
        err = assert_failed_cleanly(result, out, spec, "Error: no ")
        assert f" in {shown}; " in err


def test_ner_predict_reads_csv_tsv_and_stdin_like_encode(invoke, ner_model_dir, tmp_path):
    """ner predict reads the same inputs as encode (it rejected CSV with 'invalid JSON at line 1')."""
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("id,sentence\n7,w1 w2\n8,a b\n", encoding="utf-8")
    r = invoke("ner", "predict", ner_model_dir, csv_file)
    assert r.exit_code == 0, r.stderr
    rows = jsonl(r.stdout)
    assert [(row["text"], row["id"]) for row in rows] == [("w1 w2", "7"), ("a b", "8")]
    tsv_file = tmp_path / "t.tsv"
    tsv_file.write_text("id\tbody\n7\tw1 w2\n", encoding="utf-8")
    r = invoke("ner", "predict", ner_model_dir, tsv_file, "--text-col", "body")
    assert r.exit_code == 0, r.stderr
    assert jsonl(r.stdout)[0]["text"] == "w1 w2"
    r = invoke("ner", "predict", ner_model_dir, "-", "--text-col", "sentence", input=csv_file.read_text())
    assert r.exit_code == 0, r.stderr
    assert [row["text"] for row in jsonl(r.stdout)] == ["w1 w2", "a b"]
    r = invoke("ner", "predict", ner_model_dir, csv_file, "--text-col", "nope")
    assert r.exit_code == 1 and f"{csv_file}:1: no column 'nope'" in r.stderr


def test_bom_and_crlf_from_stdin(invoke, runner, tiny_bert_dir, ner_model_dir):
    from nlptool.cli import app

    data = "\ufeffw1 w2\r\n\r\na b\r\n".encode()
    r = runner.invoke(app, ["encode", str(tiny_bert_dir), "-"], input=data)
    assert r.exit_code == 0, r.stderr
    assert [row["line"] for row in jsonl(r.stdout)] == [1, 3]
    r = invoke("ner", "predict", ner_model_dir, "-", input="\ufeffw1 w2\r\n\r\na b\r\n")
    assert r.exit_code == 0, r.stderr
    assert [row["text"] for row in jsonl(r.stdout)] == ["w1 w2", "", "a b"]  # a line per input line


def test_encode_and_ner_predict_give_the_same_texts(invoke, tiny_bert_dir, ner_model_dir, tmp_path):
    """One reader: for every format the two predictors see the same texts on the same lines."""
    inputs = {
        "t.txt": "w1 w2\na b\n",
        "t.jsonl": '{"text": "w1 w2"}\n{"text": "a b"}\n',
        "t.csv": "text\nw1 w2\na b\n",
        "t.tsv": "n\ttext\n1\tw1 w2\n2\ta b\n",
    }
    for name, content in inputs.items():
        f = tmp_path / name
        f.write_text(content, encoding="utf-8")
        enc = invoke("encode", tiny_bert_dir, f)
        ner = invoke("ner", "predict", ner_model_dir, f)
        assert enc.exit_code == 0 and ner.exit_code == 0, (name, enc.stderr, ner.stderr)
        assert len(jsonl(enc.stdout)) == 2 and [r["text"] for r in jsonl(ner.stdout)] == ["w1 w2", "a b"], name


def test_nsp_adapt_reads_the_corpus_from_stdin(invoke, tiny_bert_dir, tmp_path):
    corpus = "".join(f"w{i} a.\nw{i + 1} b.\nw{i + 2} c.\n\n" for i in range(8))
    out = tmp_path / "m"
    args = ["nsp-adapt", "--corpus", "-", "--model", tiny_bert_dir, "--out", out, "--train-layers", "0"]
    r = invoke(*args, "--eval-fraction", "0.25", input=corpus)
    assert r.exit_code == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["documents"] == 8 and metrics["sentences"] == 24
    docs = "".join(json.dumps({"text": f"w{i} a.\nw{i + 1} b.\nw{i + 2} c."}) + "\n" for i in range(8))
    out2 = tmp_path / "m2"
    r = invoke("nsp-adapt", "--corpus", "-", "--model", tiny_bert_dir, "--out", out2, "--train-layers", "0",
               "--eval-fraction", "0.25", input=docs)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert json.loads((out2 / "metrics.json").read_text())["metrics"]["sentences"] == 24


def test_side_files_not_utf8(invoke, tiny_bert_dir, tmp_path):
    """Config, prior and labels files are decoded by the same reader: one line naming the file and line."""
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"trials: 1\nlayers: 2,3,1 # caf\xe9\n")
    r = invoke("--config", bad, "gradcheck")
    assert r.exit_code == 1 and r.stderr.strip().startswith(f"Error: {bad}:2: not valid UTF-8"), r.stderr
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"probs": [0.5, 0.5]}\n', encoding="utf-8")
    prior = tmp_path / "prior.csv"
    prior.write_bytes(b"label,count\n0,3\n1\xe9,4\n")
    r = invoke("calibrate-can", preds, "--prior", prior)
    assert r.exit_code == 1 and r.stderr.strip() == (
        f"Error: {prior}:3: not valid UTF-8 text (byte 0xe9 at byte offset 17); convert it to UTF-8 "
        "(e.g. iconv -f latin1 -t utf-8)"
    ), r.stderr
    labels = tmp_path / "labels.yaml"
    labels.write_bytes(b"- a\n- b\xe9\n")
    r = invoke("zero-shot", preds, "--labels-file", labels, "--model", tiny_bert_dir)
    assert r.exit_code == 1 and r.stderr.strip().startswith(f"Error: {labels}:2: not valid UTF-8"), r.stderr

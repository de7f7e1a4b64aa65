import json
import re

import numpy as np
import pytest

from nlptool.core.can import calibrate_reference
from tests.conftest import SAMPLE_DATA, jsonl

# 3 confident rows and 1 uncertain row (the last): small enough to check against the per-row reference loop
ROWS = [
    {"text": "a", "label": "x", "probs": [0.9, 0.05, 0.05]},
    {"text": "b", "label": "y", "probs": [0.05, 0.9, 0.05]},
    {"text": "c", "label": "z", "probs": [0.1, 0.1, 0.8]},
    {"text": "d", "label": "y", "probs": [0.36, 0.34, 0.30]},
]


@pytest.fixture
def preds(tmp_path):
    p = tmp_path / "preds.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return p


def test_matches_reference_loop_and_keeps_fields(invoke, preds):
    r = invoke("calibrate-can", preds, "--labels", "x,y,z", "--prior", "0.2,0.5,0.3")
    assert r.exit_code == 0, r.stderr
    out = jsonl(r.stdout)
    probs = np.array([row["probs"] for row in ROWS])
    expected = calibrate_reference(probs, np.array([0.2, 0.5, 0.3]))
    assert np.abs(np.array([o["probs"] for o in out]) - expected).max() <= 1e-12
    assert [o["adjusted"] for o in out] == [False, False, False, True]
    assert [o["text"] for o in out] == ["a", "b", "c", "d"]
    assert out[3]["pred"] == ["x", "y", "z"][int(np.argmax(expected[3]))]
    assert all(0 <= o["uncertainty"] <= 1 for o in out)


def test_stdin_equals_file(invoke, preds):
    a = invoke("calibrate-can", preds)
    b = invoke("calibrate-can", "-", input=preds.read_text())
    assert a.exit_code == b.exit_code == 0 and a.stdout == b.stdout
    assert jsonl(a.stdout)[0]["pred"] == 0  # no class names: indices


def test_metrics_with_labels(invoke, preds, tmp_path):
    m = tmp_path / "m.json"
    r = invoke("calibrate-can", preds, "--labels", "x,y,z", "--label-col", "label", "--metrics-out", m)
    assert r.exit_code == 0, r.stderr
    doc = json.loads(m.read_text())
    met = doc["metrics"]
    assert met["rows"] == 4 and met["uncertain_rows"] == 1 and met["confident_rows"] == 3
    assert met["accuracy_before"] == 0.75  # row d (gold y) is predicted x before
    assert met["accuracy_confident"] == 1.0
    out = jsonl(r.stdout)
    after = np.mean([o["pred"] == row["label"] for o, row in zip(out, ROWS, strict=True)])
    assert met["accuracy_after"] == pytest.approx(after)
    assert doc["params"]["top_k"] == 3 and doc["inputs"] == [str(preds.resolve())]
    assert "acc before" in r.stderr


def test_prior_from_training_file_and_counts_file(invoke, preds, tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"t{i},{lab}\n" for i, lab in enumerate("xxyyyyyzzz")), encoding="utf-8")
    counts = tmp_path / "counts.csv"
    counts.write_text("label,count\nx,2\ny,5\nz,3\n", encoding="utf-8")
    listed = invoke("calibrate-can", preds, "--labels", "x,y,z", "--prior", "0.2,0.5,0.3").stdout
    from_train = invoke("calibrate-can", preds, "--labels", "x,y,z", "--prior-from", train, "--label-col", "label")
    from_counts = invoke("calibrate-can", preds, "--labels", "x,y,z", "--prior", counts)
    assert from_train.exit_code == 0, from_train.stderr
    assert from_counts.exit_code == 0, from_counts.stderr
    assert jsonl(from_train.stdout) == jsonl(listed) == jsonl(from_counts.stdout)


def test_csv_columns_input_and_output(invoke, tmp_path):
    src = tmp_path / "p.csv"
    src.write_text(
        "id,p_x,p_y,p_z\n" + "".join(f"{i},{a},{b},{c}\n" for i, (a, b, c) in enumerate(r["probs"] for r in ROWS)),
        encoding="utf-8",
    )
    out = tmp_path / "o.csv"
    r = invoke("calibrate-can", src, "--columns", "p_*", "-o", out)
    assert r.exit_code == 0, r.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "id,p_x,p_y,p_z,pred,adjusted,uncertainty"
    assert lines[1].split(",")[4] == "p_x"  # class names default to the column names
    expected = calibrate_reference(np.array([r["probs"] for r in ROWS]))
    assert [float(v) for v in lines[4].split(",")[1:4]] == pytest.approx(expected[3].tolist(), abs=1e-12)


def test_sample_data_runs(invoke, tmp_path):
    out = tmp_path / "o.jsonl"
    r = invoke(
        "calibrate-can",
        SAMPLE_DATA / "agnews_preds.jsonl",
        "--labels",
        "World,Sports,Business,Sci/Tech",
        "--label-col",
        "label",
        "--prior",
        SAMPLE_DATA / "agnews_prior.csv",
        "-o",
        out,
    )
    assert r.exit_code == 0, r.stderr
    assert len(out.read_text().splitlines()) == 300


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ('{"probs": [0.5, 0.5, 0.0]}\n{"probs": [0.5, 0.5]}\n', [], ":2: field 'probs': 2 probabilities"),
        ('{"probs": [0.5, 0.5]}\n{"probs": [NaN, 0.5]}\n', [], ":2: field 'probs'"),
        ('{"probs": [0.5, 0.5]}\n{"probs": [1.5, -0.5]}\n', [], ":2: field 'probs'"),
        ('{"probs": [0.5, 0.5]}\n{"probs": [0.5, 0.6]}\n', [], "--renormalize"),
        ('{"probs": [0.5, 0.5]}\n', ["--prior", "0.3,0.3,0.4"], "--prior '0.3,0.3,0.4' has 3 values"),
        ('{"probs": [0.5, 0.5], "label": "q"}\n', ["--label-col", "label"], "label 'q' is not a class"),
        ('{"probs": [0.5, 0.5]}\n', ["--labels", "a,b,c"], "--labels names 3 classes"),
        ('{"probs": [0.5, 0.5]}\n', ["--prior", "abc"], "neither a file nor"),
    ],
)
def test_bad_input(invoke, tmp_path, content, args, message):
    src = tmp_path / "bad.jsonl"
    src.write_text(content, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    r = invoke("calibrate-can", src, "-o", out, *args)
    assert r.exit_code == 1, r.stdout
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("Error: ") and message in err
    assert not out.exists()


def test_usage_errors(invoke, preds):
    assert invoke("calibrate-can", preds, "--prior", "0.5,0.5", "--prior-from", preds).exit_code == 2
    assert invoke("calibrate-can", preds, "--top-k", "1").exit_code == 2


def test_spooled_stdin_is_removed(invoke, preds, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r = invoke("calibrate-can", "-", input=preds.read_text())
    assert r.exit_code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["preds.jsonl"]


def test_warns_when_almost_no_row_is_confident(invoke, tmp_path):
    # near-uniform rows (as zero-shot scores often are): nothing to calibrate against, the user is told
    flat = tmp_path / "flat.jsonl"
    flat.write_text("".join(json.dumps({"probs": [0.34, 0.33, 0.33]}) + "\n" for _ in range(5)), encoding="utf-8")
    r = invoke("calibrate-can", flat)
    assert r.exit_code == 0, r.stderr
    assert "only 0 of 5 rows are confident" in r.stderr
    r = invoke("calibrate-can", tmp_path / "flat.jsonl", "--threshold", "1.01")  # every row confident: no warning
    assert r.exit_code == 0 and "rows are confident" not in r.stderr


def test_no_warning_with_enough_confident_rows(invoke, preds):
    r = invoke("calibrate-can", preds)
    assert r.exit_code == 0 and "rows are confident" not in r.stderr


@pytest.mark.parametrize(
    ("name", "content"),
    [("counts.csv", "label,count\nx,2\nz,3\n"), ("counts.json", '{"x": 2, "z": 3}'), ("counts.yaml", "x: 2\nz: 3\n")],
)
def test_prior_counts_missing_a_class_is_an_error(invoke, preds, tmp_path, name, content):
    # 'y' is missing: it used to get prior 0 silently, and probability 0.0 in every adjusted row
    counts = tmp_path / name
    counts.write_text(content, encoding="utf-8")
    r = invoke("calibrate-can", preds, "--labels", "x,y,z", "--prior", counts)
    assert r.exit_code == 1, r.stdout
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and f"--prior file {counts} gives no count for 1 class(es): 'y'" in err
    # an explicit zero is accepted, and the prior used goes into --metrics-out
    explicit = {"csv": "label,count\nx,2\ny,0\nz,3\n", "json": '{"x": 2, "y": 0, "z": 3}', "yaml": "x: 2\ny: 0\nz: 3\n"}
    counts.write_text(explicit[name.split(".")[1]], encoding="utf-8")
    m = tmp_path / "m.json"
    r = invoke("calibrate-can", preds, "--labels", "x,y,z", "--prior", counts, "--metrics-out", m)
    assert r.exit_code == 0, r.stderr
    doc = json.loads(m.read_text())
    assert doc["metrics"]["prior"] == pytest.approx([0.4, 0.0, 0.6]) and doc["params"]["prior"] == str(counts)


def test_prior_used_is_in_metrics(invoke, preds, tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"t{i},{lab}\n" for i, lab in enumerate("xxyyyyyzzz")), encoding="utf-8")
    m = tmp_path / "m.json"
    r = invoke("calibrate-can", preds, "--labels", "x,y,z", "--prior-from", train, "--metrics-out", m)
    assert r.exit_code == 0, r.stderr
    doc = json.loads(m.read_text())
    assert doc["metrics"]["prior"] == pytest.approx([0.2, 0.5, 0.3]) and doc["params"]["prior_from"] == str(train)
    # a class absent from --prior-from stays a warning (the counts are data; see CHANGELOG)
    train.write_text("text,label\nt0,x\nt1,z\n", encoding="utf-8")
    r = invoke("calibrate-can", preds, "--labels", "x,y,z", "--prior-from", train)
    assert r.exit_code == 0 and "never occur" in r.stderr and "(y)" in r.stderr


def test_alpha_help_and_validation_agree(invoke, preds):
    r = invoke("calibrate-can", preds, "--alpha", "0")
    assert r.exit_code == 2 and "> 0" in r.stderr
    assert invoke("calibrate-can", preds, "--alpha", "-1").exit_code == 2
    assert invoke("calibrate-can", preds, "--alpha", "0.5").exit_code == 0
    text = re.sub(r"[\s│]+", " ", invoke("calibrate-can", "--help").stdout)
    assert "(α > 0)" in text and "x>=0" not in text


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('{"probs": [1.5, -0.5]}', "probability in class 1 is negative (-0.5); entries must be >= 0"),
        ('{"probs": [0.5, 0.6]}', "probabilities sum to 1.1, not 1 (tolerance 1e-06); pass --renormalize to divide"),
    ],
)
def test_errors_show_plain_numbers(invoke, row, message):
    # these used to read "negative (np.float64(-0.5))" and "sum to np.float64(1.1) ... --renormalize (or --renormalize)"
    r = invoke("calibrate-can", "-", input=row + "\n")
    assert r.exit_code == 1 and message in r.stderr and "np." not in r.stderr

import json
import math

import numpy as np
import pytest

from nlptool.core.entropy import entropy
from tests.conftest import jsonl

ROWS = [{"id": 1, "probs": [0.5, 0.25, 0.25]}, {"id": 2, "probs": [0.7, 0.2, 0.1]}, {"id": 3, "probs": [0.1, 0.9]}]


@pytest.fixture
def preds(tmp_path):
    p = tmp_path / "preds.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return p


def test_target_in_nats_file_and_stdin(invoke, preds):
    r = invoke("entropy-normalize", preds, "--target", "0.3")
    assert r.exit_code == 0, r.stderr
    out = jsonl(r.stdout)
    assert [o["id"] for o in out] == [1, 2, 3]  # rows keep their fields and order (ragged lengths too)
    for o, src in zip(out, ROWS, strict=True):
        p = np.array(o["probs"])
        assert p.sum() == pytest.approx(1, abs=1e-12)
        assert abs(entropy(p) - 0.3) <= 1e-9 and o["entropy"] == pytest.approx(0.3, abs=1e-9)
        assert (np.argsort(p) == np.argsort(src["probs"])).all() or len(set(src["probs"])) < len(p)
        # p~ is p**gamma renormalised
        q = np.array(src["probs"]) ** o["gamma"]
        assert p == pytest.approx(q / q.sum(), abs=1e-12)
    r2 = invoke("entropy-normalize", "-", "--target", "0.3", input=preds.read_text())
    assert r2.exit_code == 0 and r2.stdout == r.stdout


def test_hand_computed_gamma_two(invoke, tmp_path):
    # [0.5, 0.25, 0.25] squared and renormalised is [2/3, 1/6, 1/6]: that entropy must come back with gamma = 2
    target = -(2 / 3 * math.log(2 / 3) + 2 * (1 / 6) * math.log(1 / 6))
    r = invoke("entropy-normalize", "-", "--target", repr(target), input='{"probs": [0.5, 0.25, 0.25]}\n')
    out = jsonl(r.stdout)[0]
    assert out["gamma"] == pytest.approx(2.0, abs=1e-8)
    assert out["probs"] == pytest.approx([2 / 3, 1 / 6, 1 / 6], abs=1e-12)


def test_target_ratio_and_csv_columns(invoke, tmp_path):
    src = tmp_path / "p.csv"
    src.write_text("text,p_neg,p_pos\nbad,0.8,0.2\ngood,0.3,0.7\n", encoding="utf-8")
    out = tmp_path / "o.csv"
    r = invoke("entropy-normalize", src, "--columns", "p_*", "--target-ratio", "0.5", "-o", out)
    assert r.exit_code == 0, r.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "text,p_neg,p_pos,gamma,entropy"
    for line in lines[1:]:
        _, a, b, _, h = line.split(",")
        assert float(a) + float(b) == pytest.approx(1)
        assert float(h) == pytest.approx(0.5 * math.log(2), abs=1e-9)


def test_logits(invoke):
    logits = [2.0, 1.0, -1.0]
    r = invoke(
        "entropy-normalize",
        "-",
        "--field",
        "logits",
        "--logits",
        "--target-ratio",
        "0.5",
        input=json.dumps({"logits": logits}) + "\n",
    )
    out = jsonl(r.stdout)[0]
    assert out["logits"] == logits and abs(entropy(np.array(out["probs"])) - 0.5 * math.log(3)) <= 1e-9


def test_zero_target_is_one_hot_with_null_gamma(invoke):
    r = invoke("entropy-normalize", "-", "--target", "0", input='{"probs": [0.2, 0.5, 0.3]}\n')
    out = jsonl(r.stdout)[0]
    assert out["probs"] == [0.0, 1.0, 0.0] and out["gamma"] is None


def test_out_of_range_error_and_clip(invoke, tmp_path, preds):
    out = tmp_path / "o.jsonl"
    r = invoke("entropy-normalize", preds, "--target", "1.0", "-o", out)  # row 3 has 2 classes: max log 2 < 1.0
    assert r.exit_code == 1
    assert f"{preds}:3: field 'probs'" in r.stderr and "reachable range" in r.stderr and "--clip" in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [preds]
    r = invoke("entropy-normalize", preds, "--target", "1.0", "--clip", "-o", out)
    assert r.exit_code == 0
    last = jsonl(out.read_text())[-1]
    assert last["probs"] == pytest.approx([0.5, 0.5]) and last["gamma"] == 0.0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"probs": [0.5, NaN]}', "value nan"),
        ('{"probs": [1.2, -0.2]}', "negative"),
        ('{"probs": [0.5, 0.4]}', "--renormalize"),
        ('{"probs": "x"}', "expected a list of numbers"),
        ('{"p": [0.5, 0.5]}', "missing"),
        ('{"probs": [0.5, 0.5]', "invalid JSON"),
    ],
)
def test_bad_rows_name_file_line_field(invoke, tmp_path, line, message):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"probs": [0.5, 0.5]}\n' + line + "\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    r = invoke("entropy-normalize", src, "--target", "0.5", "-o", out)
    assert r.exit_code == 1
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"Error: {src}:2") and message in err
    assert not out.exists()


def test_renormalize(invoke):
    r = invoke("entropy-normalize", "-", "--target-ratio", "1", "--renormalize", input='{"probs": [2, 1, 1]}\n')
    assert r.exit_code == 0, r.stderr
    assert jsonl(r.stdout)[0]["probs"] == pytest.approx([1 / 3] * 3)


def test_usage_errors(invoke, preds):
    assert invoke("entropy-normalize", preds).exit_code == 2
    assert invoke("entropy-normalize", preds, "--target", "1", "--target-ratio", "0.5").exit_code == 2


def test_force_needed_to_overwrite(invoke, preds, tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text("mine\n")
    r = invoke("entropy-normalize", preds, "--target", "0.3", "-o", out)
    assert r.exit_code == 1 and "--force" in r.stderr and out.read_text() == "mine\n"
    r = invoke("entropy-normalize", preds, "--target", "0.3", "-o", out, "--force")
    assert r.exit_code == 0 and len(out.read_text().splitlines()) == 3


def test_csv_without_columns_option_explains(invoke, tmp_path):
    src = tmp_path / "p.csv"
    src.write_text("a,b\n0.5,0.5\n", encoding="utf-8")
    r = invoke("entropy-normalize", src, "--target", "0.1")
    assert r.exit_code == 1 and "--columns" in r.stderr


def test_chunking_does_not_change_results(invoke, tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "many.jsonl"
    src.write_text("".join(json.dumps({"probs": list(p)}) + "\n" for p in rng.dirichlet(np.ones(5), 50)))
    a = invoke("entropy-normalize", src, "--target-ratio", "0.3").stdout
    b = invoke("entropy-normalize", src, "--target-ratio", "0.3", "--batch-size", "7").stdout
    assert a == b and len(jsonl(a)) == 50

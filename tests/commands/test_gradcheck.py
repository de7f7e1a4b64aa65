import json

import pytest
import torch
from torch import nn

from tests.conftest import jsonl


def test_random_nets_hold(invoke):
    r = invoke("gradcheck", "--layers", "4,8,8,1", "--activation", "relu", "--trials", "3", "--inputs", "4")
    assert r.exit_code == 0, r.stderr
    rows = jsonl(r.stdout)
    assert len(rows) == 12
    assert {(row["trial"], row["input"]) for row in rows} == {(t, i) for t in range(3) for i in range(4)}
    for row in rows:
        assert row["holds"] and 0 <= row["ratio"] <= 1 + 1e-9
        assert row["ratio"] == pytest.approx(row["lhs"] / row["rhs"])
        assert len(row["layers"]) == 3
        assert sum(layer["lhs_term"] for layer in row["layers"]) == pytest.approx(row["lhs"])
    assert "gradcheck summary" in r.stderr


def test_same_seed_same_output(invoke):
    args = ("gradcheck", "--layers", "3,6,2", "--trials", "2", "--inputs", "2", "--seed", "7")
    a, b = invoke(*args), invoke(*args)
    assert a.exit_code == 0 and a.stdout == b.stdout
    assert invoke("gradcheck", "--layers", "3,6,2", "--trials", "2", "--inputs", "2", "--seed", "8").stdout != a.stdout


def test_vector_output_uses_sqnorm_and_output_requires_scalar(invoke):
    r = invoke("gradcheck", "--layers", "3,4,2", "--trials", "1", "--inputs", "1", "--metrics-out", "-")
    assert r.exit_code == 0, r.stderr
    r = invoke("gradcheck", "--layers", "3,4,2", "--f", "output", "--trials", "1", "--inputs", "1")
    assert r.exit_code == 1 and "sqnorm" in r.stderr


def test_inputs_from_file_and_stdin(invoke, tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"x": [0.1, 0.2, 0.3]}\n{"x": [1, -1, 2]}\n', encoding="utf-8")
    r = invoke("gradcheck", "--layers", "3,5,1", "--trials", "1", "--input", p)
    assert r.exit_code == 0, r.stderr
    rows = jsonl(r.stdout)
    assert [row["line"] for row in rows] == [1, 2]
    r2 = invoke("gradcheck", "--layers", "3,5,1", "--trials", "1", "--input", "-", input=p.read_text())
    assert jsonl(r2.stdout) == rows
    csv = tmp_path / "x.csv"
    csv.write_text("a,b,c\n0.1,0.2,0.3\n1,-1,2\n", encoding="utf-8")
    r3 = invoke("gradcheck", "--layers", "3,5,1", "--trials", "1", "--input", csv)
    assert [row["lhs"] for row in jsonl(r3.stdout)] == pytest.approx([row["lhs"] for row in rows])


def test_bad_input_rows(invoke, tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"x": [0.1, 0.2, 0.3]}\n{"x": [1, 2]}\n', encoding="utf-8")
    r = invoke("gradcheck", "--layers", "3,5,1", "--input", p)
    assert r.exit_code == 1
    assert f"{p}:2: field 'x': input has 2 values but the network takes 3" in r.stderr
    p.write_text('{"x": [0.1, "a", 0.3]}\n', encoding="utf-8")
    r = invoke("gradcheck", "--layers", "3,5,1", "--input", p, "-o", tmp_path / "out.jsonl")
    assert r.exit_code == 1 and ":1: field 'x'" in r.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_checkpoint_state_dict_and_module(invoke, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    sd = tmp_path / "mlp.pt"
    torch.save(model.state_dict(), sd)
    r = invoke("gradcheck", "--checkpoint", sd, "--activation", "tanh", "--inputs", "3")
    assert r.exit_code == 0, r.stderr
    rows = jsonl(r.stdout)
    assert len(rows) == 3 and rows[0]["layers"][0]["w_spec"] == pytest.approx(
        torch.linalg.matrix_norm(model[0].weight, ord=2).item()
    )
    full = tmp_path / "mlp_module.pt"
    torch.save(model, full)
    r = invoke("gradcheck", "--checkpoint", full)
    assert r.exit_code == 1 and "--unsafe-load" in r.stderr
    r = invoke("gradcheck", "--checkpoint", full, "--unsafe-load", "--inputs", "3")
    assert r.exit_code == 0, r.stderr
    assert [x["lhs"] for x in jsonl(r.stdout)] == pytest.approx([x["lhs"] for x in rows])


def test_checkpoint_with_unsupported_layer(invoke, tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    path = tmp_path / "bn.pt"
    torch.save(model, path)
    r = invoke("gradcheck", "--checkpoint", path, "--unsafe-load")
    assert r.exit_code == 1 and "BatchNorm1d" in r.stderr


def test_violation_exits_1(invoke, tmp_path, monkeypatch):
    # A doctored check: force one case to fail so the exit code path is exercised end to end.
    import nlptool.core.gradients as g

    real = g.check_inequality

    def doctored(*a, **k):
        rows = real(*a, **k)
        rows[0]["holds"] = False
        rows[0]["status"] = "fails"
        rows[0]["ratio"] = 1.5
        return rows

    monkeypatch.setattr(g, "check_inequality", doctored)
    out = tmp_path / "rows.jsonl"
    r = invoke("gradcheck", "--trials", "1", "--inputs", "2", "-o", out)
    assert r.exit_code == 1 and "fails in 1 of 2 cases" in r.stderr and "overflowed" not in r.stderr
    assert len(out.read_text().splitlines()) == 2  # the rows are still written: they show the violation


def test_metrics_out(invoke, tmp_path):
    m = tmp_path / "m.json"
    r = invoke("gradcheck", "--trials", "2", "--inputs", "2", "--metrics-out", m)
    assert r.exit_code == 0
    doc = json.loads(m.read_text())
    assert doc["metrics"]["total"] == 4 and doc["metrics"]["violations"] == 0 and doc["seed"] == 0
    assert "torch" in doc["versions"]


def test_float32_overflow_is_reported_as_overflow_not_failure(invoke, tmp_path):
    m = tmp_path / "m.json"
    r = invoke("gradcheck", "--dtype", "float32", "--input-scale", "1e20", "--trials", "1", "--inputs", "4",
               "--metrics-out", m)  # fmt: skip
    assert r.exit_code == 1
    assert "fails" not in r.stderr and "nan" not in r.stderr
    assert "no verdict for all 4 cases" in r.stderr and "--dtype float64" in r.stderr
    rows = jsonl(r.stdout)
    assert [row["status"] for row in rows] == ["overflow"] * 4 and all(row["holds"] is None for row in rows)
    doc = json.loads(m.read_text())["metrics"]
    assert (doc["overflow"], doc["violations"], doc["holding"]) == (4, 0, 0)


def test_float64_overflow_does_not_hold(invoke):
    # lhs and rhs are both inf: this used to print "holds": true and exit 0
    r = invoke("gradcheck", "--activation", "relu", "--input-scale", "1e160", "--trials", "1", "--inputs", "2")
    assert r.exit_code == 1 and "no verdict for all 2 cases" in r.stderr and "smaller inputs" in r.stderr
    assert "--dtype float64" not in r.stderr  # already float64
    assert all(row["status"] == "overflow" and row["holds"] is None for row in jsonl(r.stdout))


def test_overflowing_input_row_is_not_a_violation(invoke, tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b,c,d\n0.1,0.2,0.3,0.4\n1e200,1,1,1\n", encoding="utf-8")
    r = invoke("gradcheck", "--input", p, "--trials", "1")
    assert r.exit_code == 1
    assert "fails in" not in r.stderr
    assert "no verdict for 1 of 2 cases (the other 1 hold)" in r.stderr
    rows = jsonl(r.stdout)
    assert [(row["line"], row["status"]) for row in rows] == [(2, "holds"), (3, "overflow")]


def test_random_inputs_that_overflow_the_dtype(invoke):
    r = invoke("gradcheck", "--dtype", "float32", "--input-scale", "1e40", "--trials", "1")
    assert r.exit_code == 1 and "--input-scale 1e+40" in r.stderr and "--dtype float64" in r.stderr


def test_nonfinite_input_names_file_and_line(invoke, tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"x": [0.1, 0.2, 0.3]}\n{"x": [1, NaN, 2]}\n', encoding="utf-8")
    r = invoke("gradcheck", "--layers", "3,5,1", "--input", p)
    assert r.exit_code == 1
    assert f"{p}:2: field 'x': value 1 is nan, not a finite number" in r.stderr
    csv = tmp_path / "x.csv"
    csv.write_text("a,b,c\n0.1,0.2,0.3\n1,inf,2\n", encoding="utf-8")
    r = invoke("gradcheck", "--layers", "3,5,1", "--input", csv)
    assert r.exit_code == 1 and f"{csv}:3: field 'b': inf, not a finite number" in r.stderr

import json

import numpy as np
import pytest

from nlptool.core.encoder import SentenceEncoder
from nlptool.core.models import default_model_path
from tests.conftest import SAMPLE_DATA, jsonl

TEXTS = ["w1 w2 w3", "a b c d e f", "w4", "w5 w6 a b"]


@pytest.fixture
def texts_file(tmp_path):
    p = tmp_path / "texts.txt"
    p.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return p


def test_encode_jsonl_matches_core(invoke, tiny_bert_dir, texts_file):
    r = invoke("encode", tiny_bert_dir, texts_file, "--batch-size", "2")
    assert r.exit_code == 0, r.stderr
    rows = jsonl(r.stdout)
    assert [row["line"] for row in rows] == [1, 2, 3, 4]
    expected = SentenceEncoder.load(str(tiny_bert_dir)).encode(TEXTS)
    got = np.array([row["embedding"] for row in rows], dtype=np.float32)
    assert got.shape == (4, 32) and np.abs(got - expected).max() < 1e-6


def test_encode_npy_npz_and_stdin(invoke, tiny_bert_dir, texts_file, tmp_path):
    npy = tmp_path / "e.npy"
    r = invoke("encode", tiny_bert_dir, texts_file, "-o", npy, "--chunk-size", "3", "--normalize")
    assert r.exit_code == 0, r.stderr
    a = np.load(npy)
    assert a.shape == (4, 32) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    npz = tmp_path / "e.npz"
    r = invoke("encode", tiny_bert_dir, "-", "-o", npz, "--normalize", input="\n".join(TEXTS) + "\n")
    assert r.exit_code == 0, r.stderr
    z = np.load(npz)
    assert np.abs(z["embeddings"] - a).max() < 1e-6 and list(z["lines"]) == [1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy", "e.npz", "texts.txt"]  # no spool files left


def test_encode_table_input(invoke, tiny_bert_dir, tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("id,sentence\n1,w1 w2\n2,a b\n", encoding="utf-8")
    r = invoke("encode", tiny_bert_dir, src)
    assert r.exit_code == 0, r.stderr
    assert [row["line"] for row in jsonl(r.stdout)] == [2, 3]
    r = invoke("encode", tiny_bert_dir, src, "--text-col", "nope")
    assert r.exit_code == 1 and f"{src}:1: no column 'nope'" in r.stderr


def test_encode_refuses_overwrite_and_bad_model(invoke, tiny_bert_dir, texts_file, tmp_path):
    out = tmp_path / "e.npy"
    out.write_bytes(b"keep")
    r = invoke("encode", tiny_bert_dir, texts_file, "-o", out)
    assert r.exit_code == 1 and "--force" in r.stderr and out.read_bytes() == b"keep"
    r = invoke("encode", tmp_path / "no-model", texts_file)
    assert r.exit_code == 1 and "does not exist" in r.stderr


def test_eval_sts_metrics(invoke, tiny_bert_dir, tmp_path):
    m = tmp_path / "m.json"
    preds = tmp_path / "p.jsonl"
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("w1 w2\tw1 w2 w3\t4.5\na b\tw9\t0.5\nw4 w5\tw4\t3.0\nc d\te f\t1.0\n", encoding="utf-8")
    r = invoke("eval-sts", tiny_bert_dir, pairs, "--metrics-out", m, "-o", preds)
    assert r.exit_code == 0, r.stderr
    doc = json.loads(m.read_text())
    met = doc["metrics"]
    assert met["pairs"] == 4 and -1 <= met["spearman"] <= 1 and met["label_type"] == "score"
    rows = jsonl(preds.read_text())
    from scipy.stats import spearmanr

    assert met["spearman"] == pytest.approx(spearmanr([r["cosine"] for r in rows], [r["label"] for r in rows])[0])
    assert "spearman ×100" in r.stderr


def test_eval_sts_binary_threshold(invoke, tiny_bert_dir, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("w1 w2\tw1 w2\t1\na b\tw9\t0\nw4\tw4 w5\t1\nc d\te f\t0\n", encoding="utf-8")
    r = invoke("eval-sts", tiny_bert_dir, pairs, "--metrics-out", "-")
    assert r.exit_code == 0, r.stderr
    met = json.loads(r.stdout)["metrics"]
    assert met["label_type"] == "binary" and 0.5 <= met["best_threshold_accuracy"] <= 1


def test_eval_sts_bad_pairs(invoke, tiny_bert_dir, tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b,1\n,c,0\n", encoding="utf-8")
    r = invoke("eval-sts", tiny_bert_dir, pairs)
    assert r.exit_code == 1 and f"{pairs}:2: field '0': empty text" in r.stderr


@pytest.mark.slow
@pytest.mark.skipif(default_model_path() is None, reason="default model package not installed")
def test_default_model_eval_and_encode_match_sentence_transformers(invoke, texts_file):
    from sentence_transformers import SentenceTransformer

    r = invoke("eval-sts", "default", SAMPLE_DATA / "stsb_dev_sample.csv", "--metrics-out", "-")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["metrics"]["spearman"] > 0.8  # all-MiniLM-L6-v2 is a trained STS model
    r = invoke("encode", "default", texts_file)
    got = np.array([row["embedding"] for row in jsonl(r.stdout)])
    expected = SentenceTransformer(str(default_model_path())).encode(TEXTS)
    assert np.abs(got - expected).max() < 1e-5  # normalised by default, as the model's pipeline does


def test_eval_sts_constant_labels_is_an_error(invoke, tiny_bert_dir, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("w1 w2\tw1 w2 w3\t3\na b\tw9\t3\nw4 w5\tw4\t3\n", encoding="utf-8")
    m = tmp_path / "m.json"
    r = invoke("eval-sts", pairs, "--model", tiny_bert_dir, "--metrics-out", m)
    assert r.exit_code == 1 and "nan" not in r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and f"{pairs}: every label (column '2') is 3, so Spearman" in err
    assert not m.exists()


def test_eval_sts_constant_predictions_is_an_error(invoke, tiny_bert_dir, tmp_path, monkeypatch):
    import numpy as np

    from nlptool.core.encoder import SentenceEncoder

    def collapsed(self, texts, **kwargs):
        return np.full((len(texts), 4), 0.5, dtype=np.float32)

    monkeypatch.setattr(SentenceEncoder, "encode", collapsed)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("w1 w2\tw1 w2 w3\t4.5\na b\tw9\t0.5\nw4 w5\tw4\t3.0\n", encoding="utf-8")
    r = invoke("eval-sts", tiny_bert_dir, pairs)
    assert r.exit_code == 1 and "gives every pair the same cosine (1)" in r.stderr and "nan" not in r.stderr


def test_eval_sts_label_type(invoke, tiny_bert_dir, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("w1 w2\tw1 w2\t1\na b\tw9\t0\nw4\tw4 w5\t1\nc d\te f\t0\n", encoding="utf-8")
    r = invoke("eval-sts", tiny_bert_dir, pairs, "--label-type", "score", "--metrics-out", "-")
    assert r.exit_code == 0, r.stderr
    met = json.loads(r.stdout)["metrics"]
    assert met["label_type"] == "score" and "best_threshold_accuracy" not in met
    pairs.write_text("w1 w2\tw1 w2\t1\na b\tw9\t0\nw4\tw4 w5\t2\n", encoding="utf-8")
    r = invoke("eval-sts", tiny_bert_dir, pairs, "--label-type", "binary")
    assert r.exit_code == 1 and f"{pairs}:3: field '2': binary labels must be 0 or 1, found 2" in r.stderr
    assert invoke("eval-sts", tiny_bert_dir, pairs, "--label-type", "ordinal").exit_code == 2

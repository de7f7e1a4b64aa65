"""encode split across processes: --shard i/n + merge-shards, and torchrun, give one process's output."""

import json

import numpy as np
import pytest

from tests.conftest import jsonl, run_nlptool

TEXTS = ["w1 w2 w3", "a b c d e f", "w4", "w5 w6 a b", "w7 w8", "a", "b c d"]


@pytest.fixture
def texts_file(tmp_path):
    p = tmp_path / "texts.txt"
    p.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return p


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _same_rows(a, b):
    assert [r["line"] for r in a] == [r["line"] for r in b]
    assert np.abs(np.array([r["embedding"] for r in a]) - np.array([r["embedding"] for r in b])).max() < 1e-5


@pytest.mark.parametrize(  # 9 shards of 7 texts: two shards are empty
    "name, n", [("e.jsonl", 2), ("e.npy", 2), ("e.npz", 2), ("e.txt", 2), ("e.jsonl", 9), ("e.npz", 9)]
)
def test_shards_then_merge_equal_one_process(invoke, tiny_bert_dir, texts_file, tmp_path, name, n):
    one = tmp_path / f"one-{name}"
    r = invoke("encode", "--model", tiny_bert_dir, texts_file, "-o", one, "--batch-size", "2")
    assert r.exit_code == 0, r.stderr
    out = tmp_path / name
    for i in range(n):
        args = ["--batch-size", "2", "--shard", f"{i}/{n}"]
        r = invoke("encode", "--model", tiny_bert_dir, texts_file, "-o", out, *args)
        assert r.exit_code == 0, r.stderr
        assert (tmp_path / f"{name}.part-{i}-of-{n}").is_file() and not out.exists()
        assert "no rows" not in r.stderr  # an empty shard is normal
    r = invoke("merge-shards", out)
    assert r.exit_code == 0, r.stderr
    assert f"{len(TEXTS)} rows written to {out}" in r.stderr
    assert not list(tmp_path.glob("*.part-*"))
    if name.endswith(".npy"):
        a, b = np.load(one), np.load(out)
        assert a.shape == b.shape == (len(TEXTS), 32) and b.dtype == np.float32 and np.abs(a - b).max() < 1e-5
    elif name.endswith(".npz"):
        a, b = np.load(one), np.load(out)
        assert list(b["lines"]) == list(a["lines"]) == list(range(1, len(TEXTS) + 1))
        assert np.abs(a["embeddings"] - b["embeddings"]).max() < 1e-5
    else:
        _same_rows(_rows(one), _rows(out))


def test_bad_shard_values_are_usage_errors(invoke, tiny_bert_dir, texts_file):
    for value in ["2/2", "1/0", "a", "-1/2", "1/2/3"]:
        r = invoke("encode", "--model", tiny_bert_dir, texts_file, "-o", "x.jsonl", "--shard", value)
        assert r.exit_code == 2, (value, r.stderr)
        assert "--shard" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_shard_needs_a_file_and_force_for_an_old_part(invoke, tiny_bert_dir, texts_file, tmp_path):
    r = invoke("encode", "--model", tiny_bert_dir, texts_file, "--shard", "0/2")
    assert r.exit_code == 1 and "writes a part file, not stdout" in r.stderr and r.stdout == ""
    out = tmp_path / "e.jsonl"
    part = tmp_path / "e.jsonl.part-1-of-2"
    part.write_text("keep\n")
    r = invoke("encode", "--model", tiny_bert_dir, texts_file, "-o", out, "--shard", "1/2")
    assert r.exit_code == 1 and "--force" in r.stderr and part.read_text() == "keep\n"
    r = invoke("encode", "--model", tiny_bert_dir, texts_file, "-o", out, "--shard", "1/2", "--force")
    assert r.exit_code == 0 and [row["line"] for row in _rows(part)] == [2, 4, 6]


def test_merge_shards_errors_and_stdout(invoke, tiny_bert_dir, texts_file, tmp_path):
    out = tmp_path / "e.jsonl"
    r = invoke("merge-shards", out)
    assert r.exit_code == 1 and "no part files" in r.stderr
    r = invoke("encode", "--model", tiny_bert_dir, texts_file, "-o", out, "--shard", "0/3")
    assert r.exit_code == 0, r.stderr
    r = invoke("merge-shards", out)
    assert r.exit_code == 1 and "missing part files" in r.stderr and "part-1-of-3" in r.stderr
    for i in (1, 2):
        invoke("encode", "--model", tiny_bert_dir, texts_file, "-o", out, "--shard", f"{i}/3")
    r = invoke("merge-shards", out, "--to", "-", "--keep-parts")
    assert r.exit_code == 0 and [row["line"] for row in jsonl(r.stdout)] == list(range(1, len(TEXTS) + 1))
    assert len(list(tmp_path.glob("e.jsonl.part-*"))) == 3


def test_under_torchrun_stdin_and_shard_are_refused(invoke, tiny_bert_dir, texts_file, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    r = invoke("encode", "--model", tiny_bert_dir, "-", "-o", tmp_path / "x.jsonl", input="a b\n")
    assert r.exit_code == 1 and "stdin under torchrun" in r.stderr
    r = invoke("encode", "--model", tiny_bert_dir, texts_file, "-o", tmp_path / "x.jsonl", "--shard", "0/2")
    assert r.exit_code == 1 and "torchrun already splits the input" in r.stderr
    assert not list(tmp_path.glob("x.jsonl*"))


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(invoke, tiny_bert_dir, texts_file, tmp_path):
    """torchrun --nproc_per_node 2 -m nlptool encode: rank 0 merges the ranks' parts into one process's output."""
    common = ["-q", "encode", "--model", str(tiny_bert_dir), str(texts_file), "--batch-size", "2", "--device", "cpu"]
    for name in ("e.jsonl", "e.npy"):
        one = tmp_path / f"one-{name}"
        r = invoke("encode", "--model", tiny_bert_dir, texts_file, "-o", one, "--batch-size", "2", "--device", "cpu")
        assert r.exit_code == 0, r.stderr
        run = run_nlptool([*common, "-o", str(tmp_path / name)], nproc=2, cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        if name == "e.npy":
            a, b = np.load(one), np.load(tmp_path / name)
            assert a.shape == b.shape and np.abs(a - b).max() < 1e-5
        else:
            _same_rows(_rows(one), _rows(tmp_path / name))
        assert not list(tmp_path.glob("*.part-*"))
    # -o -: rank 0 writes the merged rows to stdout (once)
    run = run_nlptool(common, nproc=2, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    _same_rows(jsonl(run.stdout), _rows(tmp_path / "one-e.jsonl"))

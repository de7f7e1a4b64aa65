"""ner predict, zero-shot and kg-qa predict split across processes (--shard i/n + merge-shards, and torchrun) give
one process's output: the same rows in the same order, numbers within 1e-5 (encode: test_encode_shard.py)."""

from __future__ import annotations

import pytest

from tests.commands.test_ner import trained  # noqa: F401 - the module-scoped trained NER folder
from tests.conftest import SAMPLE_DATA, jsonl, run_nlptool

TEXTS = ["w1 w2 a b", "w3 w4 c", "a b c d e", "w5", "w6 w7 w8 a", "b", "c d w1"]


def _flatten(value, prefix=""):
    """(path, value) leaves of a JSON value: numbers compared with a tolerance, everything else exactly."""
    if isinstance(value, dict):
        for k in sorted(value):
            yield from _flatten(value[k], f"{prefix}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, value


def _same_rows(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        fa, fb = list(_flatten(a)), list(_flatten(b))
        assert [k for k, _ in fa] == [k for k, _ in fb]
        for (k, x), (_, y) in zip(fa, fb, strict=True):
            if isinstance(x, float) or isinstance(y, float):
                assert x == pytest.approx(y, abs=1e-5), k
            else:
                assert x == y, k


@pytest.fixture
def texts_file(tmp_path):
    p = tmp_path / "texts.txt"
    p.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return p


def _commands(trained_dir, tiny_bert_dir, texts_file):  # noqa: F811
    return {
        "ner": ["ner", "predict", str(texts_file), "--model", str(trained_dir["dir"]), "--batch-size", "2"],
        "zero-shot": ["zero-shot", str(texts_file), "--labels", "alpha,beta", "--template", "w1 {}", "--model",
                      str(tiny_bert_dir), "--batch-size", "2"],
    }  # fmt: skip


@pytest.mark.parametrize("name", ["ner", "zero-shot"])
def test_shards_merge_to_one_process(invoke, trained, tiny_bert_dir, texts_file, tmp_path, name):  # noqa: F811
    args = _commands(trained, tiny_bert_dir, texts_file)[name]
    one = invoke(*args)
    assert one.exit_code == 0, one.stderr
    out = tmp_path / "out.jsonl"
    for i in range(3):  # 3 shards over 7 texts: uneven
        r = invoke(*args, "-o", out, "--shard", f"{i}/3")
        assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in tmp_path.glob("out.jsonl.part-*")) == [f"out.jsonl.part-{i}-of-3" for i in range(3)]
    merged = invoke("merge-shards", out)
    assert merged.exit_code == 0, merged.stderr
    _same_rows(jsonl(out.read_text(encoding="utf-8")), jsonl(one.stdout))


def test_zero_shot_metrics_need_every_row(invoke, tiny_bert_dir, texts_file, tmp_path):
    args = _commands({"dir": "unused"}, tiny_bert_dir, texts_file)["zero-shot"]
    r = invoke(*args, "-o", tmp_path / "o.jsonl", "--shard", "0/2", "--metrics-out", tmp_path / "m.json")
    assert r.exit_code == 1 and "--metrics-out needs every row" in r.stderr
    assert not list(tmp_path.glob("o.jsonl*")) and not (tmp_path / "m.json").exists()


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(invoke, trained, tiny_bert_dir, texts_file, tmp_path):  # noqa: F811
    """torchrun --nproc_per_node 2: rank 0 merges the ranks' parts into one process's output."""
    from tests.commands.test_kg_qa import KB, TINY, TRAIN

    kgqa = tmp_path / "kgqa"
    r = invoke("kg-qa", "train", "--kb", KB, "--train", TRAIN, "--out", kgqa, "--epochs", "2", *TINY)
    assert r.exit_code == 0, r.stderr
    commands = _commands(trained, tiny_bert_dir, texts_file)
    commands["kg-qa"] = ["kg-qa", "predict", str(SAMPLE_DATA / "kgqa_dev.jsonl"), "--model", str(kgqa),
                         "--num-beams", "2", "--top-k", "2", "--batch-size", "4", "--device", "cpu"]  # fmt: skip
    for name, args in commands.items():
        one = invoke(*args)
        assert one.exit_code == 0, (name, one.stderr)
        out = tmp_path / f"{name}.jsonl"
        p = run_nlptool(["-q", *args, "-o", str(out)], nproc=2, cwd=tmp_path)
        assert p.returncode == 0, (name, p.stderr[-2000:])
        _same_rows(jsonl(out.read_text(encoding="utf-8")), jsonl(one.stdout))
        assert not list(tmp_path.glob(f"{name}.jsonl.part-*"))

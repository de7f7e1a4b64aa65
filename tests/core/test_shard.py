"""nlptool.core.shard: --shard parsing, round-robin selection, and merging parts back into input order."""

import json

import numpy as np
import pytest

from nlptool.core import shard as shard_mod
from nlptool.core.errors import NlptoolError
from nlptool.core.shard import Shard, find_parts, merge_parts, merge_shards, parse_shard, part_path


@pytest.mark.parametrize("value, expected", [("0/2", (0, 2)), ("1/2", (1, 2)), (" 2 / 3 ", (2, 3)), ("0/1", (0, 1))])
def test_parse_shard(value, expected):
    assert parse_shard(value) == expected


@pytest.mark.parametrize("value", ["2/2", "3/2", "1/0", "0/0", "-1/2", "a/b", "1", "1/2/3", "", "1.0/2"])
def test_parse_shard_refuses(value):
    with pytest.raises(ValueError):
        parse_shard(value)


def _split(rows, n):
    return [list(Shard(i, n).select(rows)) for i in range(n)]


def test_select_is_round_robin_and_lazy():
    assert _split(range(7), 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert _split(range(2), 4) == [[0], [1], [], []]
    assert list(Shard().select(iter("abc"))) == ["a", "b", "c"]

    def endless():
        k = 0
        while True:
            yield k
            k += 1

    it = Shard(1, 2).select(endless())
    assert [next(it) for _ in range(3)] == [1, 3, 5]  # streams: no count up front


def _write_parts(tmp_path, name, pieces, write):
    paths = []
    for i, piece in enumerate(pieces):
        p = part_path(tmp_path / name, i, len(pieces))
        write(p, piece)
        paths.append(p)
    return paths


def _jsonl_write(path, rows):
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"line": r, "text": f"t{r} ü"}, ensure_ascii=False) + "\n" for r in rows)


@pytest.mark.parametrize("n_rows, n_shards", [(7, 3), (6, 2), (2, 5), (0, 2), (1, 1)])
def test_merge_jsonl_restores_input_order(tmp_path, n_rows, n_shards):
    parts = _write_parts(tmp_path, "out.jsonl", _split(range(n_rows), n_shards), _jsonl_write)
    out = tmp_path / "out.jsonl"
    assert merge_parts(parts, str(out)) == n_rows
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in rows] == list(range(n_rows)) and all("ü" in r["text"] for r in rows)


def test_merge_refuses_parts_of_different_splits(tmp_path):
    parts = _write_parts(tmp_path, "out.jsonl", [[0, 2], [1, 3, 5]], _jsonl_write)
    with pytest.raises(NlptoolError, match="round-robin"):
        merge_parts(parts, str(tmp_path / "out.jsonl"))
    assert not (tmp_path / "out.jsonl").exists()
    parts = _write_parts(tmp_path, "b.jsonl", [[0, 3, 6], [1]], _jsonl_write)
    with pytest.raises(NlptoolError, match="round-robin"):
        merge_parts(parts, str(tmp_path / "b.jsonl"))


def test_merge_csv_keeps_one_header_and_multiline_cells(tmp_path):
    import csv

    rows = [{"id": k, "text": f'say "hi"\nline {k}' if k % 2 else f"plain, {k}"} for k in range(5)]

    def write(path, piece):
        with open(path, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            if piece:
                w.writerow(["id", "text"])
            w.writerows([[r["id"], r["text"]] for r in piece])

    parts = _write_parts(tmp_path, "out.csv", _split(rows, 3), write)
    out = tmp_path / "out.csv"
    assert merge_parts(parts, str(out)) == 5
    single = tmp_path / "single.csv"
    write(single, rows)
    assert out.read_text(encoding="utf-8") == single.read_text(encoding="utf-8")


def _npy_write(path, array):
    with open(path, "wb") as fh:  # np.save(str) would add ".npy" to a part name
        np.save(fh, array)


def test_merge_npy_streams_blocks_and_matches_np_save(tmp_path, monkeypatch):
    monkeypatch.setattr(shard_mod, "_BLOCK_ROUNDS", 2)  # several blocks, one partial
    full = np.arange(11 * 3, dtype=np.float32).reshape(11, 3)
    parts = _write_parts(tmp_path, "e.npy", [full[i::3] for i in range(3)], _npy_write)
    out = tmp_path / "e.npy"
    assert merge_parts(parts, str(out)) == 11
    np.save(tmp_path / "ref.npy", full)
    assert out.read_bytes() == (tmp_path / "ref.npy").read_bytes()


def test_merge_npy_empty_shards_and_mismatch(tmp_path):
    full = np.ones((1, 4), dtype=np.float32)
    parts = _write_parts(tmp_path, "e.npy", [full[i::3] for i in range(3)], _npy_write)
    merge_parts(parts, str(tmp_path / "e.npy"))
    assert np.array_equal(np.load(tmp_path / "e.npy"), full)
    parts = _write_parts(tmp_path, "f.npy", [np.zeros((1, 4), np.float32), np.zeros((1, 5), np.float32)], _npy_write)
    with pytest.raises(NlptoolError, match="does not match part 0"):
        merge_parts(parts, str(tmp_path / "f.npy"))


def test_merge_npz_interleaves_every_array(tmp_path):
    emb = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    lines = np.array([1, 2, 4, 5, 7], dtype=np.int64)

    def write(path, k):
        with open(path, "wb") as fh:
            np.savez(fh, embeddings=emb[k::2], lines=lines[k::2])

    parts = _write_parts(tmp_path, "e.npz", [0, 1], write)
    assert merge_parts(parts, str(tmp_path / "e.npz")) == 5
    z = np.load(tmp_path / "e.npz")
    assert np.array_equal(z["embeddings"], emb) and np.array_equal(z["lines"], lines)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("e.npz.part")) == ["e.npz"]


def test_find_parts_and_merge_shards(tmp_path, capsys):
    out = str(tmp_path / "o.jsonl")
    with pytest.raises(NlptoolError, match="no part files"):
        find_parts(out)
    _write_parts(tmp_path, "o.jsonl", _split(range(5), 3), _jsonl_write)
    (tmp_path / "o.jsonl.part-0-of-3").rename(tmp_path / "keep")
    with pytest.raises(NlptoolError, match=r"missing part files .*o\.jsonl\.part-0-of-3"):
        find_parts(out)
    (tmp_path / "keep").rename(tmp_path / "o.jsonl.part-0-of-3")
    _jsonl_write(part_path(out, 0, 2), [0])
    with pytest.raises(NlptoolError, match="different splits"):
        find_parts(out)
    (tmp_path / "o.jsonl.part-0-of-2").unlink()
    assert merge_shards(out, to="-", keep_parts=True) == 5
    assert [json.loads(x)["line"] for x in capsys.readouterr().out.splitlines()] == [0, 1, 2, 3, 4]
    assert merge_shards(out) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl"]
    _write_parts(tmp_path, "o.jsonl", _split(range(5), 3), _jsonl_write)
    with pytest.raises(NlptoolError, match="--force"):
        merge_shards(out)
    assert merge_shards(out, force=True) == 5


def test_resolve_from_torchrun_env(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert Shard.resolve() == Shard(0, 1) and not Shard.resolve().active
    assert Shard.resolve("1/3") == Shard(1, 3, torchrun=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    sh = Shard.resolve()
    assert sh == Shard(1, 2, torchrun=True) and not sh.main
    with pytest.raises(NlptoolError, match="torchrun already splits"):
        Shard.resolve("0/2")
    with pytest.raises(NlptoolError, match="stdin under torchrun"):
        sh.check("-", "out.jsonl", False)


def test_check_refuses_shard_to_stdout_and_existing_part(tmp_path):
    with pytest.raises(NlptoolError, match="writes a part file, not stdout"):
        Shard(0, 2).check("in.txt", "-", False)
    out = tmp_path / "o.jsonl"
    Shard(0, 2).check("in.txt", str(out), False)
    (tmp_path / "o.jsonl.part-0-of-2").write_text("x\n")
    with pytest.raises(NlptoolError, match="--force"):
        Shard(0, 2).check("in.txt", str(out), False)
    Shard(0, 2).check("in.txt", str(out), True)
    Shard(1, 2).check("in.txt", str(out), False)

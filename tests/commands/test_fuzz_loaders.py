"""Damaged model folders through the CLI, fuzzed: random bytes, random JSON values, truncated and missing files in
place of each file a loader reads (config.json, tokenizer files, weights, nlptool's own settings files). Every loader
(encode, ner predict, kg-qa predict, zero-shot --method nsp, gradcheck --checkpoint) must stop with exit 1, one line on
stderr that names the file or its folder, no traceback and no output file.

Bounded: a few derandomized examples per loader on tiny models, a few seconds each."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.conftest import SAMPLE_DATA

FUZZ = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# How a JSON file may be replaced by a random JSON value and still be certainly wrong:
ANY = "any"  # the loader needs keys that random objects lack (config.json's model_type, nlptool's format fields)
NOT_OBJECT = "not-object"  # an object with unknown keys may be fine, anything else is not
NOT_LIST = "not-list"  # modules.json: a list of modules
BINARY = "binary"  # not JSON: random bytes and truncation only

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
_JSON_VALUES = {
    ANY: _json,
    NOT_OBJECT: _json.filter(lambda v: not isinstance(v, dict)),
    NOT_LIST: _scalars | st.dictionaries(st.text(max_size=6), _json, max_size=3) | st.lists(_scalars, min_size=1),
}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_bert_dir, tiny_bert_no_heads_dir) -> dict[str, Path]:
    """One intact folder of each kind (and a gradcheck checkpoint), built in-test."""
    from transformers import AutoModel, AutoTokenizer

    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.kgqa import KgqaModel, read_kb, read_qa
    from nlptool.core.ner import SpanNerModel

    base = tmp_path_factory.mktemp("intact")
    encoder = SentenceEncoder.load(tiny_bert_no_heads_dir, pooling="cls")
    encoder.save(base / "encoder")
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_no_heads_dir)
    bert = AutoModel.from_pretrained(tiny_bert_no_heads_dir, add_pooling_layer=False)
    ner = SpanNerModel(bert, ["PER", "LOC"], head_size=8, max_length=32)
    ner.save(base / "ner", tokenizer)
    kb_file = SAMPLE_DATA / "kgqa_kb.tsv"
    questions = [e.question for e in read_qa(str(SAMPLE_DATA / "kgqa_train.jsonl"))]
    kgqa = KgqaModel.create(read_kb(kb_file), questions, d_model=16, layers=1, heads=2, ffn=16)
    kgqa.save(base / "kgqa", kb_path=str(kb_file))
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    (base / "gradcheck").mkdir()
    torch.save(mlp.state_dict(), base / "gradcheck" / "mlp.pt")
    shutil.copytree(tiny_bert_dir, base / "nsp")
    shutil.copytree(base / "encoder", base / "st")
    (base / "st" / "nlptool_encoder.json").unlink()
    return {name: base / name for name in ("encoder", "st", "ner", "kgqa", "nsp", "gradcheck")}


def _texts(work: Path) -> Path:
    path = work / "texts.txt"
    path.write_text("w1 a b\nw2 c\n", encoding="utf-8")
    return path


def _encode(folder: Path, work: Path) -> list[str]:
    return ["encode", str(_texts(work)), "-m", str(folder), "-o", str(work / "out.npy")]


def _ner(folder: Path, work: Path) -> list[str]:
    return ["ner", "predict", str(_texts(work)), "-m", str(folder), "-o", str(work / "out.jsonl")]


def _kgqa(folder: Path, work: Path) -> list[str]:
    return ["kg-qa", "predict", str(SAMPLE_DATA / "kgqa_dev.jsonl"), "-m", str(folder), "-o", str(work / "out.jsonl"),
            "--device", "cpu"]  # fmt: skip


def _nsp(folder: Path, work: Path) -> list[str]:
    return ["zero-shot", str(_texts(work)), "--labels", "w3,w4", "--method", "nsp", "--model", str(folder), "-o",
            str(work / "out.jsonl")]  # fmt: skip


def _gradcheck(folder: Path, work: Path) -> list[str]:
    return ["gradcheck", "--checkpoint", str(folder / "mlp.pt"), "--trials", "1", "-o", str(work / "out.jsonl")]


# loader: (folder, command line, {file: JSON kind}, files whose absence must be an error)
LOADERS: dict[str, tuple[str, Callable[[Path, Path], list[str]], dict[str, str], tuple[str, ...]]] = {
    "encode": (
        "encoder",
        _encode,
        {"config.json": ANY, "tokenizer.json": ANY, "tokenizer_config.json": NOT_OBJECT, "model.safetensors": BINARY,
         "nlptool_encoder.json": NOT_OBJECT, "modules.json": NOT_LIST, "sentence_bert_config.json": NOT_OBJECT},
        ("config.json", "model.safetensors"),
    ),
    "encode-st": (  # a sentence-transformers folder: the pooling comes from modules.json and 1_Pooling/config.json
        "st",
        _encode,
        {"modules.json": NOT_LIST, "1_Pooling/config.json": NOT_OBJECT, "sentence_bert_config.json": NOT_OBJECT},
        ("1_Pooling/config.json",),
    ),
    "ner": (
        "ner",
        _ner,
        {"config.json": ANY, "tokenizer.json": ANY, "tokenizer_config.json": NOT_OBJECT, "model.safetensors": BINARY,
         "ner_config.json": ANY, "ner_head.safetensors": BINARY},
        ("config.json", "model.safetensors", "ner_config.json", "ner_head.safetensors"),
    ),
    "kgqa": (
        "kgqa",
        _kgqa,
        {"config.json": ANY, "model.safetensors": BINARY, "kgqa.json": ANY, "kgqa_vocab.json": ANY, "kb.tsv": BINARY,
         "trie.npz": BINARY, "generation_config.json": NOT_OBJECT},
        ("config.json", "model.safetensors", "kgqa.json", "kgqa_vocab.json", "kb.tsv"),
    ),
    "nsp": (
        "nsp",
        _nsp,
        {"config.json": ANY, "tokenizer.json": ANY, "tokenizer_config.json": NOT_OBJECT, "model.safetensors": BINARY},
        ("config.json", "model.safetensors"),
    ),
    "gradcheck": ("gradcheck", _gradcheck, {"mlp.pt": BINARY}, ("mlp.pt",)),
}  # fmt: skip


@st.composite
def damage(draw, files: dict[str, str], required: tuple[str, ...]) -> tuple[str, str, object]:
    """``(file, how, argument)``: random bytes, a random JSON value, a truncation point (fraction) or removal."""
    name = draw(st.sampled_from(sorted(files)))
    hows = ["bytes", "truncate"] + (["json"] if files[name] != BINARY else [])
    hows += ["remove"] if name in required else []
    how = draw(st.sampled_from(hows))
    if how == "bytes":
        return name, how, draw(st.binary(max_size=48))
    if how == "json":
        return name, how, draw(_JSON_VALUES[files[name]])
    if how == "truncate":
        return name, how, draw(st.floats(min_value=0.0, max_value=0.999))
    return name, how, None


def _apply(path: Path, how: str, arg: object) -> None:
    if how == "bytes":
        path.write_bytes(arg)  # type: ignore[arg-type]
    elif how == "json":
        path.write_text(json.dumps(arg), encoding="utf-8")
    elif how == "truncate":
        data = path.read_bytes().rstrip()  # a JSON text cut before its last character is never valid
        path.write_bytes(data[: min(int(len(data) * arg), len(data) - 1)])  # type: ignore[operator]
    else:
        path.unlink()


def check_one_line_error(result, names: list[str], work: Path) -> None:
    assert result.exit_code == 1, (result.exit_code, result.stdout[:300], result.stderr, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert any(n in lines[0] for n in names), (names, lines[0])
    assert not [p.name for p in work.iterdir() if p.name.startswith("out")], "an output file was written"
    assert not result.stdout.strip()


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_damaged_folder_files_give_one_line_errors(loader, folders):
    from nlptool.cli import app

    kind, argv, files, required = LOADERS[loader]

    @FUZZ
    @given(damage(files, required))
    def run(case):
        name, how, arg = case
        with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
            work = Path(tmp)
            folder = work / "model"
            shutil.copytree(folders[kind], folder)
            _apply(folder / name, how, arg)
            result = CliRunner().invoke(app, argv(folder, work))
            check_one_line_error(result, [name, Path(name).name, str(folder)], work)

    run()

"""Fuzz every input reader through the CLI with input that must fail: random bytes holding a byte that is never
UTF-8, JSONL files with random JSON values of which at least one is not an object, and valid JSONL cut inside its
last record. Whatever the input, a command must exit 1 with one line on stderr that names the file (or
``<stdin>``), print no traceback, and leave no output file, no temporary file beside it and no copy of stdin.

Bounded (a few examples per command, tiny in-test models) so that it runs in the default suite in seconds."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.commands.test_readers import NAMES, Spec, ner_model_dir, run, specs  # noqa: F401 - ner_model_dir: fixture

#: One valid JSONL record per command: the base of the JSON and truncation cases (non-ASCII, so that a cut can also
#: fall inside a character).
RECORDS = {
    "encode": {"text": "w1 é w2"},
    "ner-predict": {"text": "w1 é w2"},
    "ner-eval": {"text": "w1 é w2", "entities": [{"start": 0, "end": 2, "label": "PER"}]},
    "ner-train": {"text": "w1 é w2", "entities": [{"start": 0, "end": 2, "label": "PER"}]},
    "ner-convert-cluener": {"text": "é w1", "label": {"PER": {"w1": [[2, 3]]}}},
    "zero-shot": {"text": "w1 é w2", "label": "a"},
    "calibrate-can": {"probs": [0.25, 0.75], "note": "é"},
    "entropy-normalize": {"probs": [0.25, 0.75], "note": "é"},
    "eval-sts": {"text1": "w1 é", "text2": "w2 é", "label": 0.5},
    "train-cosent": {"text1": "w1 é", "text2": "w2 é", "label": 0.5},
    "gradcheck": {"x": [0.5, -1.5], "note": "é"},
    "nsp-adapt": {"text": "w1 é.\nw2 é."},
}
JSONL_NAMES = sorted(RECORDS)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
NOT_OBJECTS = JSON_VALUES.filter(lambda v: not isinstance(v, dict))


@st.composite
def bytes_with_a_bad_byte(draw) -> bytes:
    """Random bytes with 0xff (never part of UTF-8) somewhere."""
    data = draw(st.binary(max_size=120))
    pos = draw(st.integers(0, len(data)))
    return data[:pos] + b"\xff" + data[pos:]


@st.composite
def jsonl_with_a_non_object(draw, record: dict) -> bytes:
    """Valid records and random JSON values, at least one of them not an object."""
    values = draw(st.lists(st.one_of(st.just(record), JSON_VALUES), max_size=3))
    values.insert(draw(st.integers(0, len(values))), draw(NOT_OBJECTS))
    return "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in values).encode()


@st.composite
def truncated_jsonl(draw, record: dict) -> bytes:
    """1-3 valid records cut strictly inside the last one (never at a line end, so the last line is broken)."""
    n = draw(st.integers(1, 3))
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    keep = draw(st.integers(1, len(line) - 2))  # 1..len-2 bytes of the last record: a strict prefix of its JSON
    return line * (n - 1) + line[:keep]


FUZZ = settings(
    max_examples=4,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure reports its raw example, in bounded time
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def fuzz_specs(tiny_bert_dir, tiny_bert_no_heads_dir, ner_model_dir) -> dict[str, Spec]:  # noqa: F811
    return {s.name: s for s in specs(tiny_bert_dir, tiny_bert_no_heads_dir, ner_model_dir)}


def check(runner, spec: Spec, data: bytes, folder: Path, stdin: bool) -> None:
    for old in folder.iterdir():  # hypothesis reuses the folder between examples
        if old.is_file():
            old.unlink()
    result, src, out = run(runner, spec, data, folder, stdin=stdin)
    shown = "<stdin>" if stdin else str(src)
    err = result.stderr.strip()
    assert result.exit_code == 1, (data, result.exit_code, err, result.stdout[:300])
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("Error: "), (data, err)
    assert shown in err, (data, err)
    assert not out.exists() or (spec.out.endswith("/") and not (out / "config.json").exists()), data
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], data


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=bytes_with_a_bad_byte(), stdin=st.booleans())
def test_random_bytes(runner, fuzz_specs, tmp_path_factory, name, data, stdin):
    check(runner, fuzz_specs[name], data, _folder(tmp_path_factory, name), stdin)


@pytest.mark.parametrize("name", JSONL_NAMES)
@FUZZ
@given(case=st.data())
def test_random_json_values(runner, fuzz_specs, tmp_path_factory, name, case):
    spec = _jsonl_spec(fuzz_specs, name)
    data = case.draw(jsonl_with_a_non_object(RECORDS[name]))
    check(runner, spec, data, _folder(tmp_path_factory, name), stdin=False)


@pytest.mark.parametrize("name", JSONL_NAMES)
@FUZZ
@given(case=st.data(), stdin=st.booleans())
def test_truncated_jsonl(runner, fuzz_specs, tmp_path_factory, name, case, stdin):
    data = case.draw(truncated_jsonl(RECORDS[name]))
    check(runner, _jsonl_spec(fuzz_specs, name), data, _folder(tmp_path_factory, name), stdin)


def _jsonl_spec(all_specs: dict[str, Spec], name: str) -> Spec:
    return replace(all_specs[name], suffix=".jsonl")


_FOLDERS: dict[str, Path] = {}


def _folder(factory, name: str) -> Path:
    """One folder per command for all examples (function-scoped tmp_path would be shared by them anyway)."""
    if name not in _FOLDERS:
        _FOLDERS[name] = factory.mktemp(f"fuzz-{name}")
    return _FOLDERS[name]

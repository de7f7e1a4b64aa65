"""One CLI contract across the commands (README "The CLI contract"): the same option names for the same things,
help that shows flags as flags, one-line usage errors, one --device, and the old spellings still working."""

from __future__ import annotations

import json
import re

import pytest
import typer.main

from nlptool.cli import app
from tests.conftest import jsonl

TEXTS = ["w1 w2 w3", "a b c d e f", "w4"]


def _commands():
    """Every leaf command as (path, click command)."""
    root = typer.main.get_command(app)
    out = []

    def walk(prefix, cmd):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk([*prefix, name], sub)
        else:
            out.append((" ".join(prefix), cmd))

    walk([], root)
    return out


def _parse(path: str, *args: str) -> dict:
    """The parameter values ``nlptool PATH ARGS`` parses to (nothing runs)."""
    cmd = dict(_commands())[path]
    return cmd.make_context(path, list(args)).params


@pytest.fixture
def texts_file(tmp_path):
    p = tmp_path / "texts.txt"
    p.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return p


# -- help ------------------------------------------------------------------------------------------------------------
HELP_CASES = [
    ("encode", "INPUT"),
    ("eval-sts", "PAIRS"),
    ("calibrate-can", "INPUT"),
    ("entropy-normalize", "INPUT"),
    ("zero-shot", "INPUT"),
    ("ner predict", "INPUT"),
    ("ner eval", "GOLD"),
    ("kg-qa eval", "QA"),
]


@pytest.mark.parametrize(("command", "argument"), HELP_CASES)
def test_help_shows_flags_as_flags_and_arguments_in_capitals(invoke, command, argument):
    r = invoke(*command.split(), "--help")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    usage = out.splitlines()[0]
    assert usage.endswith(f"{command} [OPTIONS] {argument}"), usage  # the deprecated positional model is hidden
    assert "<bool>" not in out and "<str>" not in out and "{input}" not in out.lower()
    force = next(line for line in out.splitlines() if line.strip().startswith("--force"))
    assert force.split()[:2] == ["--force,", "-f"] and force.split()[2] == "Overwrite"  # a flag takes no value
    assert re.search(rf"^  {argument}\s", out, re.M)  # the argument row
    for hidden in ("--predictions-out", "--text-field"):
        assert hidden not in out


def test_help_value_options_show_click_types(invoke):
    out = invoke("encode", "--help").stdout
    assert re.search(r"^  --output, -o TEXT\s", out, re.M)
    assert re.search(r"^  --batch-size INTEGER RANGE\s", out, re.M)
    assert "--device [auto|cpu|cuda|cuda:N|mps]" in out
    assert re.search(r"^  --normalize / --no-normalize\s", out, re.M)


def test_group_help_plain(invoke):
    out = invoke("--help").stdout
    assert re.search(r"^  --quiet, -q\s+Errors only", out, re.M)
    assert "<int>" not in out and "╭" not in out


def test_train_cosent_max_length_help_is_consistent(invoke):
    out = " ".join(invoke("train-cosent", "--help").stdout.split())
    start = out.index("--max-length")
    text = out[start : out.index("--", start + 3)]
    assert "default: 128" in text and "model's setting" not in text


# -- usage errors -----------------------------------------------------------------------------------------------------
USAGE_ERRORS = [
    (["encode", "--bogus", "x.txt"], "No such option: --bogus", "nlptool encode"),
    (["calibrate-can"], "Missing argument 'INPUT'", "nlptool calibrate-can"),
    (["ner", "predict", "--device", "gpu", "x.txt"], "Invalid value for '--device'", "nlptool ner predict"),
    (["entropy-normalize", "x.jsonl", "--format", "xml"], "Invalid value for '--format'", "nlptool entropy-normalize"),
    (["entropy-normalize", "x.jsonl"], "Invalid value for --target: give exactly one", "nlptool entropy-normalize"),
    (["kg-qa", "eval", "--bogus"], "No such option: --bogus", "nlptool kg-qa eval"),
    (["no-such-command"], "No such command 'no-such-command'", "nlptool"),
    (["--bogus", "encode"], "No such option: --bogus", "nlptool"),
]


@pytest.mark.parametrize(("args", "message", "path"), USAGE_ERRORS)
def test_usage_errors_are_one_line(invoke, args, message, path):
    r = invoke(*args)
    assert r.exit_code == 2
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"Error: {message}") and lines[0].endswith(f"(see '{path} --help')"), lines[0]
    assert "╭" not in r.stderr and "Usage:" not in r.stderr


# -- one name for one thing -------------------------------------------------------------------------------------------
def _options(cmd):
    return {p.name: p for p in cmd.params if p.param_type_name == "option"}


def test_same_names_for_the_same_things():
    models = 0
    for path, cmd in _commands():
        opts = _options(cmd)
        for param in cmd.params:
            names = set(param.opts)
            if param.name == "output" and param.param_type_name == "option":
                assert {"--output", "-o"} <= names, path
            if "--output" in names:
                assert param.name == "output", path
            if param.name in ("predictions_out",):
                pytest.fail(f"{path}: --predictions-out is a hidden alias of -o/--output now")
            if "--text-field" in names:
                assert "--text-col" in names, path
        model = next((p for p in opts.values() if "--model" in p.opts), None)
        if model is not None:
            models += 1
            assert "-m" in model.opts, path
            assert model.name == "model", path  # the --config key too
        if "device" in opts:
            assert opts["device"].metavar == "[auto|cpu|cuda|cuda:N|mps]", path
    assert models >= 9  # encode, eval-sts, train-cosent, zero-shot, nsp-adapt, ner train/predict/eval, kg-qa ...


@pytest.mark.parametrize("path", ["encode", "eval-sts", "ner predict", "ner eval", "kg-qa predict", "kg-qa eval"])
def test_model_option_and_the_old_positional_form_parse_alike(path):
    new = _parse(path, "--model", "m-dir", "data.jsonl")
    old = _parse(path, "m-dir", "data.jsonl")
    arg = next(k for k, v in new.items() if v == "data.jsonl")
    model_key = next(k for k, v in new.items() if v == "m-dir")
    assert new[arg] == "data.jsonl" and new[model_key] == "m-dir"
    from nlptool.commands._common import model_and_input

    legacy = next(k for k, v in old.items() if v == "data.jsonl")
    assert model_and_input(old[model_key], old[arg], old[legacy], command=path) == ("m-dir", "data.jsonl")


@pytest.mark.parametrize(
    ("path", "args", "key"),
    [
        ("eval-sts", ["pairs.csv"], "output"),
        ("ner eval", ["-m", "d", "gold.jsonl"], "output"),
        ("kg-qa eval", ["-m", "d", "qa.jsonl"], "output"),
    ],
)
def test_output_and_its_old_spelling(path, args, key):
    assert _parse(path, *args, "-o", "p.jsonl")[key] == "p.jsonl"
    assert _parse(path, *args, "--output", "p.jsonl")[key] == "p.jsonl"
    assert _parse(path, *args, "--predictions-out", "p.jsonl")[key] == "p.jsonl"


def test_text_col_and_its_old_spelling():
    base = ["--corpus", "c.jsonl", "--out", "o"]
    assert _parse("nsp-adapt", *base, "--text-col", "body")["text_col"] == "body"
    assert _parse("nsp-adapt", *base, "--text-field", "body")["text_col"] == "body"


@pytest.mark.parametrize("path", ["encode", "eval-sts", "zero-shot", "ner predict", "kg-qa predict", "nsp-adapt"])
@pytest.mark.parametrize("value", ["auto", "cpu", "cuda", "cuda:1", "mps", "CUDA:0"])
def test_device_accepts_the_same_values_everywhere(path, value):
    args = ["--corpus", "c", "--out", "o"] if path == "nsp-adapt" else ["x.jsonl"]
    assert _parse(path, *args, "--device", value)["device"] == value.lower()


# -- behaviour through the whole command -------------------------------------------------------------------------------
def test_encode_model_option_equals_old_positional(invoke, tiny_bert_dir, texts_file):
    new = invoke("encode", texts_file, "--model", tiny_bert_dir)
    assert new.exit_code == 0, new.stderr
    assert "deprecated" not in new.stderr
    short = invoke("encode", "-m", tiny_bert_dir, texts_file)
    old = invoke("encode", tiny_bert_dir, texts_file)
    assert old.exit_code == 0, old.stderr
    assert jsonl(new.stdout) == jsonl(old.stdout) == jsonl(short.stdout)
    assert "Warning: the model as the first argument is deprecated" in old.stderr and "--model" in old.stderr
    both = invoke("encode", "--model", tiny_bert_dir, tiny_bert_dir, texts_file)
    assert both.exit_code == 2 and "give the model once" in both.stderr


def test_required_model_missing_is_a_usage_error(invoke, texts_file):
    r = invoke("ner", "predict", texts_file)
    assert r.exit_code == 2
    assert r.stderr.startswith("Error: Missing option '--model'") and len(r.stderr.splitlines()) == 1


def test_device_cuda_n_without_cuda_is_an_expected_error(invoke, tiny_bert_dir, texts_file):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = invoke("encode", texts_file, "-m", tiny_bert_dir, "--device", "cuda:0")
    assert r.exit_code == 1 and "no CUDA device" in r.stderr


def test_eval_sts_stdout_only_on_request_and_fractions(invoke, tiny_bert_dir, tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "text1,text2,label\nw1 w2,w1 w3,4.5\na b,c d,1.0\nw4 w5,w4 w6,3.0\na c,w7 w8,0.5\n", encoding="utf-8"
    )
    quiet = invoke("eval-sts", pairs, "-m", tiny_bert_dir)
    assert quiet.exit_code == 0, quiet.stderr
    assert quiet.stdout == ""
    doc = json.loads(invoke("eval-sts", pairs, "-m", tiny_bert_dir, "--metrics-out", "-").stdout)
    assert -1.0 <= doc["metrics"]["spearman"] <= 1.0 and -1.0 <= doc["metrics"]["pearson"] <= 1.0
    rows = jsonl(invoke("eval-sts", pairs, "-m", tiny_bert_dir, "-o", "-").stdout)
    assert len(rows) == 4 and all(-1.0001 <= r["cosine"] <= 1.0001 for r in rows)
    old = tmp_path / "old.jsonl"
    r = invoke("eval-sts", tiny_bert_dir, pairs, "--predictions-out", old)
    assert r.exit_code == 0 and r.stdout == "" and jsonl(old.read_text()) == rows

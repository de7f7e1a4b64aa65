"""The house rules every command shares: help, exit codes, config files, seeds, closed pipes."""

import json
import subprocess
import sys
import time

from tests.conftest import jsonl

COMMANDS = ["entropy-normalize", "calibrate-can", "gradcheck"]


def test_help_lists_commands(invoke):
    r = invoke("--help")
    assert r.exit_code == 0
    for c in COMMANDS:
        assert c in r.stdout


def test_no_heavy_imports_at_startup():
    heavy = "('torch', 'transformers', 'pandas', 'numpy')"
    code = f"import sys, nlptool.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_is_fast():
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nlptool", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - t < 3.0  # typically ~0.2 s; generous for a loaded CI machine


def test_version(invoke):
    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.startswith("nlptool ")


def test_each_command_has_help(invoke):
    for c in COMMANDS:
        r = invoke(c, "--help")
        assert r.exit_code == 0, r.stderr
        assert "Example:" in r.stdout and "kexue.fm" in r.stdout


def test_usage_error_exit_2(invoke):
    r = invoke("gradcheck", "--no-such-option")
    assert r.exit_code == 2
    r = invoke("no-such-command")
    assert r.exit_code == 2


def test_expected_error_is_one_line_exit_1(invoke, tmp_path):
    r = invoke("entropy-normalize", str(tmp_path / "missing.jsonl"), "--target", "0.5")
    assert r.exit_code == 1
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "missing.jsonl" in lines[0]
    assert "Traceback" not in r.stderr


def test_config_supplies_options_and_flags_win(invoke, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("gradcheck:\n  layers: 3,5,1\n  trials: 2\n  inputs: 1\n", encoding="utf-8")
    r = invoke("--config", cfg, "gradcheck")
    assert r.exit_code == 0, r.stderr
    rows = jsonl(r.stdout)
    assert len(rows) == 2 and len(rows[0]["layers"]) == 2
    r = invoke("--config", cfg, "gradcheck", "--trials", "3")
    assert len(jsonl(r.stdout)) == 3
    flat = tmp_path / "flat.yaml"
    flat.write_text("layers: [3, 4, 4, 1]\ntrials: 1\ninputs: 2\n", encoding="utf-8")
    r = invoke("--config", flat, "gradcheck")
    assert r.exit_code == 0, r.stderr
    rows = jsonl(r.stdout)
    assert len(rows) == 2 and len(rows[0]["layers"]) == 3


def test_config_errors(invoke, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gradcheck:\n  no_such: 1\n", encoding="utf-8")
    r = invoke("--config", bad, "gradcheck")
    assert r.exit_code == 1 and "no option 'no_such'" in r.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1,\n", encoding="utf-8")
    r = invoke("--config", broken, "gradcheck")
    assert r.exit_code == 1 and "invalid YAML" in r.stderr
    r = invoke("--config", tmp_path / "none.yaml", "gradcheck")
    assert r.exit_code == 1 and "does not exist" in r.stderr


def test_global_seed_sets_command_seed(invoke):
    a = invoke("--seed", "3", "gradcheck", "--trials", "1", "--inputs", "1").stdout
    b = invoke("gradcheck", "--seed", "3", "--trials", "1", "--inputs", "1").stdout
    c = invoke("gradcheck", "--trials", "1", "--inputs", "1").stdout
    assert a == b != c


def test_quiet_silences_stderr(invoke):
    r = invoke("-q", "gradcheck", "--trials", "1", "--inputs", "1")
    assert r.exit_code == 0 and r.stderr == ""


def test_closed_pipe_exits_quietly(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps({"probs": [0.7, 0.2, 0.1]}) + "\n" for _ in range(200000)))
    cmd = f"{sys.executable} -m nlptool entropy-normalize {src} --target-ratio 0.5 | head -n 2"
    p = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert len(p.stdout.splitlines()) == 2
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr


def test_global_flags_after_the_command(invoke):
    r = invoke("gradcheck", "--trials", "1", "--inputs", "1", "-q")
    assert r.exit_code == 0 and r.stderr == "" and len(jsonl(r.stdout)) == 1


def test_global_seed_reaches_subcommands_of_groups():
    import typer

    from nlptool.cli import _default_seed, app

    root = typer.main.get_command(app)
    for group_name in ("ner", "kg-qa"):
        group = root.commands[group_name]
        section: dict = {}
        _default_seed(section, group, 7)
        with_seed = {n for n, c in group.commands.items() if any(p.name == "seed" for p in c.params)}
        assert "train" in with_seed
        assert {n for n, opts in section.items() if opts.get("seed") == 7} == with_seed


def test_plain_turns_numpy_and_torch_values_into_python_ones():
    import numpy as np
    import torch

    from nlptool.core.errors import plain

    assert repr(plain(np.float64(-1.0))) == "-1.0" and repr(plain(np.int64(3))) == "3"
    assert plain(torch.tensor(2.5)) == 2.5 and plain(np.array([1, 2])) == [1, 2]
    assert repr(plain([np.int64(4), 8])) == "[4, 8]" and plain("x") == "x"


def test_config_takes_the_option_names_help_shows(invoke, tmp_path):
    # gradcheck's --f and --input used to be refused while the hidden parameter names objective/input_file worked
    x = tmp_path / "x.jsonl"
    x.write_text('{"x": [0.1, 0.2, 0.3]}\n{"x": [1, -1, 2]}\n', encoding="utf-8")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"gradcheck:\n  f: sum\n  input: {x}\n  layers: 3,4,2\n  trials: 1\n  output_format: jsonl\n")
    r = invoke("--config", cfg, "gradcheck", "--metrics-out", tmp_path / "m.json")
    assert r.exit_code == 0, r.stderr
    assert [row["line"] for row in jsonl(r.stdout)] == [1, 2]
    assert json.loads((tmp_path / "m.json").read_text())["params"]["f"] == "sum"
    for internal in ("objective: sum", f"input_file: {x}"):
        cfg.write_text(f"gradcheck:\n  {internal}\n")
        r = invoke("--config", cfg, "gradcheck")
        key = internal.split(":")[0]
        assert r.exit_code == 1 and f"no option '{key}'" in r.stderr and ", f, " in r.stderr
    cfg.write_text("gradcheck:\n  input-scale: 2\n  input_scale: 3\n")
    r = invoke("--config", cfg, "gradcheck")
    assert r.exit_code == 1 and "twice" in r.stderr


def test_config_arguments_and_negative_flags(invoke, tmp_path):
    data = tmp_path / "p.csv"
    data.write_text("p0,p1\n0.9,0.1\n0.2,0.8\n", encoding="utf-8")
    cfg = tmp_path / "can.yaml"
    cfg.write_text(f"calibrate-can:\n  input: {data}\n  no-header: false\n  columns: p0,p1\n  top-k: 2\n")
    r = invoke("--config", cfg, "calibrate-can")
    assert r.exit_code == 0, r.stderr
    assert [row["pred"] for row in jsonl(r.stdout)] == ["p0", "p1"]
    cfg.write_text(f"calibrate-can:\n  input: {data}\n  no_header: true\n  columns: 0,1\n  top-k: 2\n")
    r = invoke("--config", cfg, "calibrate-can")  # the header line is now data: 'p0' is not a number
    assert r.exit_code == 1 and f"{data}:1: field '0'" in r.stderr
    cfg.write_text(f"calibrate-can:\n  input: {data}\n  top_k: 2\n  no-header: 1\n")
    r = invoke("--config", cfg, "calibrate-can")
    assert r.exit_code == 1 and "takes true or false" in r.stderr

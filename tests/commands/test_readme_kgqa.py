"""The README's "From Python" example for kg-qa runs as written (from a copy of the repository's sample_data)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import SAMPLE_DATA

README = SAMPLE_DATA.parent / "README.md"
MARKER = "<!-- from-python: kgqa -->"


def readme_block(marker: str) -> str:
    """The ```python block right after ``marker`` in README.md."""
    text = README.read_text(encoding="utf-8")
    assert marker in text, f"README.md has no '{marker}' line"
    found = re.match(r"\s*```python\n(.*?)\n```", text.split(marker, 1)[1], re.S)
    assert found, f"no ```python block right after '{marker}'"
    return found.group(1)


def test_block_is_found():
    code = readme_block(MARKER)
    assert "kgqa.train(" in code and "KgqaModel.load(" in code
    compile(code, "README.md", "exec")


@pytest.mark.slow
def test_readme_from_python_kgqa_example_runs(tmp_path):
    shutil.copytree(SAMPLE_DATA, tmp_path / "sample_data")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(SAMPLE_DATA.parent)}
    done = subprocess.run(
        [sys.executable, "-c", readme_block(MARKER)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("青石镇（虚构的江南小镇） ||| 所属省份 ||| 云澜省 "), done.stdout
    assert (tmp_path / "kgqa-py" / "kgqa.json").is_file()

"""Model cards: the ``README.md`` every trained model folder gets, as the Hugging Face Trainer and
sentence-transformers write one.

:func:`model_card` is a pure function of what a run knows (base model, technique and reference, data files, options,
metrics, training log, command line, versions, date) and returns Markdown with YAML front matter in the Hub's
metadata schema (``library_name``, ``pipeline_tag``, ``tags``, ``base_model``, ``datasets``, ``metrics`` and a
``model-index`` with the dev results), so the folder can be pushed to the Hub as it is. :func:`describe_file` measures
a data file (bytes, SHA-256) and :func:`command_line` quotes ``sys.argv``; the training commands write the card through
``TrainingRun.finish`` (``nlptool.commands._common``).
"""

from __future__ import annotations

import hashlib
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CardInfo", "DataFile", "model_card", "describe_file", "command_line", "CARD_FILE"]

CARD_FILE = "README.md"
#: Most rows of the training-log table in a card; the full log is ``training/train_log.jsonl``.
MAX_LOG_ROWS = 60
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class DataFile:
    """A data file of a run: its role (``train``, ``dev`` ...), path as given, rows read, size and SHA-256
    (``None`` when unknown, e.g. for stdin)."""

    role: str
    path: str
    rows: int | None = None
    bytes: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class CardInfo:
    """What a training command tells the card about its model (the rest comes from the run).

    Attributes:
        command: the subcommand (``train-cosent``), a tag and part of the title.
        technique: one or two sentences: what was trained and how (loss, head).
        reference: the technique's reference (author, title, URL).
        usage: how to load the folder: ``sentence-transformers`` (``SentenceTransformer(path)``, ``nlptool encode
            --model path``), ``transformers`` (``AutoModel``) or ``token-classification``
            (``AutoModelForTokenClassification``).
        library_name, pipeline_tag, tags, datasets: the Hub metadata (``datasets``: hub ids, when known).
        data: ``(role, path, rows)`` of each data file (rows ``None`` when not counted); empty: the run's inputs,
            role ``input``.
        nlptool_usage: extra ``nlptool`` command lines that use the folder (``{path}`` stands for it).
    """

    command: str
    technique: str
    reference: str | None = None
    usage: str = "transformers"
    library_name: str = "transformers"
    pipeline_tag: str | None = None
    tags: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    data: tuple[tuple[str, str, int | None], ...] = ()
    nlptool_usage: tuple[str, ...] = field(default=())


def describe_file(path: str, *, role: str, rows: int | None = None) -> DataFile:
    """Measure ``path`` (bytes and SHA-256, read in chunks); ``-`` (stdin) or a missing file: size and hash ``None``."""
    p = Path(path)
    if path == "-" or not p.is_file():
        return DataFile(role, path, rows)
    digest = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return DataFile(role, path, rows, p.stat().st_size, digest.hexdigest())


def command_line(argv: Sequence[str]) -> str:
    """``argv`` shell-quoted (:func:`shlex.join`), the installed script or ``python -m``'s ``__main__.py`` shown as
    ``nlptool``."""
    args = [str(a) for a in argv]
    if args and Path(args[0]).name in ("nlptool", "nlptool.exe", "__main__.py"):
        args[0] = "nlptool"
    return shlex.join(args)


def dev_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The dev results among ``metrics``: ``dev_<name>`` floats (not counts, not ``*_before``) → ``{name: value}``."""
    out = {}
    for key, value in metrics.items():
        if key.startswith("dev_") and not key.endswith("_before") and isinstance(value, float):
            out[key[len("dev_") :]] = value
    return out


def model_card(
    info: CardInfo,
    *,
    name: str,
    base_model: str | None,
    data: Sequence[DataFile] = (),
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    history: Sequence[Mapping[str, Any]] = (),
    command: str | None = None,
    versions: Mapping[str, str] | None = None,
    date: str | None = None,
    path: str | None = None,
) -> str:
    """The model card (``README.md``) of a trained folder, as Markdown with YAML front matter.

    Args:
        info: what the command knows (:class:`CardInfo`).
        name: the model's name (the folder's name), the title and the ``model-index`` name.
        base_model: the model training started from (a hub id goes into the front matter's ``base_model``; a local
            path only into the text).
        data: the data files (:func:`describe_file`).
        params: the run's options (``metrics.json``'s ``params``).
        metrics: the run's metrics (``metrics.json``'s ``metrics``); ``dev_<name>`` floats are the dev results,
            ``dev_<name>_before`` the value before training, ``best_step`` the step of the kept checkpoint.
        history: the training log's events (``train_log.jsonl``), shown as a table.
        command: the command line (:func:`command_line`).
        versions: library versions (nlptool, torch, transformers, python ...).
        date: when the run finished (ISO 8601).
        path: how the usage examples name the folder (default: ``name``).
    """
    import yaml

    params = dict(params or {})
    metrics = dict(metrics or {})
    versions = dict(versions or {})
    path = path or name
    dev = dev_metrics(metrics)
    dev_file = next((d.path for d in data if d.role == "dev"), None)

    meta: dict[str, Any] = {"library_name": info.library_name}
    if info.pipeline_tag:
        meta["pipeline_tag"] = info.pipeline_tag
    meta["tags"] = list(dict.fromkeys([*info.tags, "nlptool", info.command]))
    if base_model and _HUB_ID.match(base_model) and not base_model.startswith((".", "~")):
        meta["base_model"] = base_model
    if info.datasets:
        meta["datasets"] = list(info.datasets)
    if dev:
        meta["metrics"] = sorted(dev)
        dataset_name = Path(dev_file).name if dev_file and dev_file != "-" else "dev"
        meta["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": info.pipeline_tag or info.command, "name": info.command},
                        "dataset": {"name": dataset_name, "type": dataset_name, "split": "dev"},
                        "metrics": [
                            {"type": k, "value": _yaml_float(v), "name": f"dev {k}"} for k, v in sorted(dev.items())
                        ],
                    }
                ],
            }
        ]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False)

    lines = ["---", front.rstrip("\n"), "---", "", f"# {name}", ""]
    base = f"`{base_model}`" if base_model else "an untrained model"
    lines += [f"Trained with [nlptool](https://pypi.org/project/nlptool/) `{info.command}` from {base}.", ""]
    lines += [info.technique, ""]
    if info.reference:
        lines += [f"Reference: {info.reference}", ""]

    lines += ["## Usage", ""]
    lines += _usage(info, path)

    lines += ["## Training data", ""]
    if data:
        lines += ["| role | file | rows | bytes | SHA-256 |", "|---|---|---:|---:|---|"]
        for d in data:
            shown = "<stdin>" if d.path == "-" else d.path
            sha = f"`{d.sha256[:16]}`" if d.sha256 else ""
            lines.append(f"| {d.role} | `{shown}` | {_cell(d.rows)} | {_cell(d.bytes)} | {sha} |")
        lines.append("")
    else:
        lines += ["Not recorded.", ""]

    if dev or metrics:
        lines += ["## Evaluation", ""]
    if dev:
        where = f" on `{dev_file}`" if dev_file and dev_file != "-" else ""
        lines += [f"Dev results{where} (the saved model):", "", "| metric | before training | after training |"]
        lines.append("|---|---:|---:|")
        for k, v in sorted(dev.items()):
            lines.append(f"| {k} | {_cell(metrics.get(f'dev_{k}_before'))} | {_cell(v)} |")
        lines.append("")
        if metrics.get("best_step") is not None:
            steps = f" of {metrics['steps']}" if metrics.get("steps") is not None else ""
            best = metrics["best_step"]
            lines += [f"The saved weights are those of step {best}{steps}, the best on the dev set.", ""]
    if metrics:
        lines += ["All metrics (as in `metrics.json`):", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in sorted(metrics.items())]
        lines.append("")

    table = _log_table(history)
    if table:
        lines += ["## Training log", "", *table, ""]

    lines += ["## Training options", ""]
    if params:
        lines += ["| option | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(v, raw=True)} |" for k, v in sorted(params.items())]
        lines.append("")
    if command:
        lines += ["Command line:", "", "```bash", command, "```", ""]

    lines += ["## Environment", ""]
    if date:
        lines += [f"- date: {date}"]
    lines += [f"- {k}: {v}" for k, v in versions.items()]
    lines.append("")
    return "\n".join(lines)


def _usage(info: CardInfo, path: str) -> list[str]:
    q = repr(path)  # a Python string literal
    shell = shlex.quote(path)
    if info.usage == "sentence-transformers":
        code = [
            "from sentence_transformers import SentenceTransformer",
            "",
            f"model = SentenceTransformer({q})",
            'embeddings = model.encode(["The first sentence.", "The second one."])',
        ]
    elif info.usage == "token-classification":
        code = [
            "from transformers import AutoModelForTokenClassification, AutoTokenizer",
            "",
            f"tokenizer = AutoTokenizer.from_pretrained({q})",
            f"model = AutoModelForTokenClassification.from_pretrained({q})",
        ]
    else:
        code = [
            "from transformers import AutoModel, AutoTokenizer",
            "",
            f"tokenizer = AutoTokenizer.from_pretrained({q})",
            f"model = AutoModel.from_pretrained({q})",
        ]
    out = ["```python", *code, "```", ""]
    commands = [c.replace("{path}", shell) for c in info.nlptool_usage]
    if commands:
        out += ["With nlptool:", "", "```bash", *commands, "```", ""]
    return out


def _log_table(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """step | epoch | training loss | dev metrics: one row per evaluation, or per train event without any."""
    evals = [e for e in history if e.get("event") == "eval"]
    trains = [e for e in history if e.get("event") == "train"]
    if not evals and not trains:
        return []
    names = sorted({k for e in evals for k in (e.get("metrics") or {})})
    rows = []
    if evals:
        for e in evals:
            loss = next((t.get("loss") for t in reversed(trains) if t.get("step", 0) <= e.get("step", 0)), None)
            values = [(e.get("metrics") or {}).get(k) for k in names]
            best = " (best)" if e.get("is_best") else ""
            rows.append([f"{e.get('step')}{best}", _cell(e.get("epoch")), _cell(loss), *map(_cell, values)])
    else:
        rows = [[str(t.get("step")), _cell(t.get("epoch")), _cell(t.get("loss"))] for t in trains]
    header = ["step", "epoch", "training loss", *(f"dev {k}" for k in names)]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    shown = rows if len(rows) <= MAX_LOG_ROWS else rows[: MAX_LOG_ROWS // 2] + rows[-MAX_LOG_ROWS // 2 :]
    for i, row in enumerate(shown):
        if len(rows) > MAX_LOG_ROWS and i == MAX_LOG_ROWS // 2:
            out.append("| … |" + " |" * (len(header) - 1))
        out.append("| " + " | ".join(row) + " |")
    return out


def _yaml_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _cell(value: Any, *, raw: bool = False) -> str:
    """A table cell: floats to 4 decimals (``raw``: as Python writes them, for options such as ``lr``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not raw:
        return f"{value:.4f}" if math.isfinite(value) and abs(value) >= 1e-3 else f"{value:.4g}"
    if isinstance(value, (list, tuple, dict)):
        import json

        return f"`{json.dumps(value, ensure_ascii=False)}`"
    return str(value).replace("|", "\\|")

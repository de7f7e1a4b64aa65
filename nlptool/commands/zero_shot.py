"""``nlptool zero-shot``: prompt-based zero-shot classification with BERT's NSP head (NSP-BERT), or by embeddings.

The technique (prompt scoring, calibration, probabilities, metrics) is :func:`nlptool.core.nsp.classify_nsp` and
:func:`nlptool.core.nsp.classify_embedding`; this module reads the rows, calls them and writes rows, metrics and the
table.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer

from nlptool.commands._common import (
    DeviceOpt,
    ForceOpt,
    Format,
    FormatOpt,
    HeaderOpt,
    InputArg,
    MetricsOutOpt,
    ModelOpt,
    OutputFormatOpt,
    OutputOpt,
    ShardOpt,
    fmt_value,
    info,
    parse_csv_list,
    print_table,
    progress,
    warn_empty,
    write_metrics,
)
from nlptool.core.errors import InputError, NlptoolError

TEXT_COLUMNS = ("text", "sentence", "content", "description")  # then the first column


class Method(str, Enum):
    nsp = "nsp"
    embedding = "embedding"


class Position(str, Enum):
    prefix = "prefix"
    suffix = "suffix"


class Mapping(str, Enum):
    candidates = "candidates"
    samples = "samples"


class Calibration(str, Enum):
    none = "none"
    content_free = "content-free"


# The command's options (help texts are the --help reference).
LabelsOpt = Annotated[
    str | None,
    typer.Option("--labels", help="Labels in order, 'World,Sports,Business'; each fills the template's {}."),
]
LabelsFileOpt = Annotated[
    str | None,
    typer.Option(
        "--labels-file",
        help="YAML/JSON: label -> word, {word: ...} or {prompt: ...} (optionally under 'labels:' with a "
        "'template:'); see the README.",
    ),
]
TemplateOpt = Annotated[
    str | None,
    typer.Option(
        "--template",
        help="Prompt template with one {} for the label word. Default: the labels file's, else "
        "'This text is about {}.'",
        show_default=False,
    ),
]
PositionOpt = Annotated[
    Position, typer.Option("--position", help="prefix: prompt is segment A, text B; suffix: text A, prompt B.")
]
MethodOpt = Annotated[
    Method,
    typer.Option("--method", help="nsp: P(IsNext) from an NSP head; embedding: cosine to each filled prompt."),
]
MappingOpt = Annotated[
    Mapping,
    typer.Option(
        "--mapping",
        help="candidates: argmax over the labels; samples: rank all rows by the first label's score (or the "
        "pair's, with --text2-col) and cut into equal bins, one per label in order (nsp only).",
    ),
]
CalibrateOpt = Annotated[
    Calibration,
    typer.Option(
        "--calibrate",
        help="content-free: divide each row's probs by the label distribution the prompts give the content-free "
        "texts 'N/A', '' and [MASK], then renormalise (Zhao et al. 2021); pred = argmax of the result. Uses no "
        "labels. candidates mapping only.",
    ),
]
TextColOpt = Annotated[
    str | None,
    typer.Option("--text-col", help="Text column (default: text, sentence, content, description, else the first)."),
]
Text2ColOpt = Annotated[
    str | None,
    typer.Option("--text2-col", help="Second text of a pair task: A = text, B = text2 (needs --mapping samples)."),
]
LabelColOpt = Annotated[
    str | None,
    typer.Option("--label-col", help="Gold label column: accuracy, macro-F1 and confusion matrix on stderr."),
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Pairs (or texts) per forward pass.", min=1)]
MaxLengthOpt = Annotated[
    int, typer.Option("--max-length", help="Max tokens of a (prompt, text) pair; only the text is cut.", min=8)
]
TemperatureOpt = Annotated[
    float,
    typer.Option(
        "--temperature",
        help="embedding: probs = softmax(cos / T). 0.05 is the scale (20) all-MiniLM-L6-v2 was trained with.",
        min=1e-6,
    ),
]


def zero_shot(
    input: InputArg,
    output: OutputOpt = "-",
    labels: LabelsOpt = None,
    labels_file: LabelsFileOpt = None,
    template: TemplateOpt = None,
    position: PositionOpt = Position.prefix,
    method: MethodOpt = Method.nsp,
    mapping: MappingOpt = Mapping.candidates,
    calibrate: CalibrateOpt = Calibration.none,
    model: ModelOpt = None,
    text_col: TextColOpt = None,
    text2_col: Text2ColOpt = None,
    label_col: LabelColOpt = None,
    batch_size: BatchSizeOpt = 64,
    max_length: MaxLengthOpt = 256,
    temperature: TemperatureOpt = 0.05,
    device: DeviceOpt = "auto",
    metrics_out: MetricsOutOpt = None,
    format: FormatOpt = Format.auto,
    output_format: OutputFormatOpt = Format.auto,
    header: HeaderOpt = None,
    shard: ShardOpt = None,
    force: ForceOpt = False,
) -> None:
    """Classify texts with no training data: each label becomes a prompt, scored against the text.

    --method nsp (NSP-BERT): score(label) = P(IsNext) from BERT's next-sentence head on (prompt, text) (prefix) or
    (text, prompt) (suffix); the prediction is the best label. The model needs a trained NSP head (bert-base-* has
    one); for encoders without (such as the default all-MiniLM-L6-v2) train one with `nlptool nsp-adapt`.
    --method embedding: score(label) = cosine between the text's and the prompt's sentence embeddings.
    Output rows: the input fields plus "scores" {label: score}, "probs" (in label order; pipe into calibrate-can)
    and "pred".

    Example: nlptool zero-shot news.csv --labels World,Sports,Business,Sci/Tech --template "The above news is about
    {}." --position suffix --model nsp-model/ | nlptool calibrate-can - --labels World,Sports,Business,Sci/Tech

    Reference: Sun et al., "NSP-BERT: A Prompt-based Few-Shot Learner Through an Original Pre-training
    Task — Next Sentence Prediction", COLING 2022 (arXiv 2109.03564); Su Jianlin, https://kexue.fm/archives/8671
    """
    import numpy as np

    from nlptool.core.device import resolve_device
    from nlptool.core.io import read_texts

    _check_options(labels, labels_file, text2_col, method, mapping, calibrate)
    sh = _sharding(shard, input, output, metrics_out, force)
    prompts, used_template = _prompts(labels, labels_file, template)
    label_names = [p.label for p in prompts]
    with read_texts(
        input, text_col=text_col, fmt=fmt_value(format), header=header, table=True, default_cols=TEXT_COLUMNS
    ) as reader:
        rows = list(sh.select(reader))  # all (of this shard): every text is scored against every prompt
        fieldnames = reader.fieldnames
        col = reader.text_col or "text"
    if not rows:
        _write_empty_shard(sh, input, output, output_format, fieldnames, metrics_out, label_names, force)
        return
    texts = [_text(r, col, input) for r in rows]
    texts2 = [_text(r, text2_col, input) for r in rows] if text2_col else None
    gold = None
    if label_col is not None:
        gold = np.array([_gold_index(r, label_col, label_names, input) for r in rows], dtype=np.int64)
    dev = resolve_device(device)
    options = {"calibrate": calibrate, "batch_size": batch_size}
    if method == Method.nsp:
        layout = {"position": position, "mapping": mapping, "max_length": max_length}
        result = _classify_nsp(model, texts, texts2, prompts, dev, **layout, **options)
    else:
        result = _classify_embedding(model, texts, prompts, dev, temperature=temperature, **options)
    _report_prior(result)
    with sh.output(output, force=force, fmt=fmt_value(output_format) or None) as out:
        _write_rows(out.path, output_format, out.force, rows, fieldnames, result)
    metrics = result.metrics(gold)
    _report(result, metrics, method, mapping, gold is not None)
    params = {"method": method.value, "mapping": mapping.value, "position": position.value, "template": used_template}
    params |= {"text_col": col, "text2_col": text2_col, "label_col": label_col, "batch_size": batch_size}
    params |= {"max_length": max_length, "temperature": temperature if method == Method.embedding else None}
    params |= {"calibrate": calibrate.value, "device": dev}
    inputs = [input, *([labels_file] if labels_file else [])]
    write_metrics(metrics_out, metrics, force=force, inputs=inputs, model=result.model, params=params)


def _sharding(shard: str | None, input: str, output: str, metrics_out: str | None, force: bool) -> Any:
    """This process's :class:`~nlptool.core.shard.Shard` (--shard, torchrun or none), the outputs checked."""
    from nlptool.core.io import check_output_path
    from nlptool.core.shard import Shard

    sh = Shard.resolve(shard)
    if sh.count > 1 and metrics_out is not None:
        raise NlptoolError(
            "--metrics-out needs every row, and a shard sees 1/n of them: run without --shard/torchrun for metrics, "
            "or score the merged output"
        )
    sh.check(input, output, force)
    check_output_path(metrics_out, force)
    return sh


def _write_empty_shard(
    sh: Any,
    input: str,
    output: str,
    output_format: Format,
    fieldnames: list[str] | None,
    metrics_out: str | None,
    label_names: list[str],
    force: bool,
) -> None:
    """No rows in this shard: its (empty) part; the warning and the metrics when no shard had any."""
    with sh.output(output, force=force, fmt=fmt_value(output_format) or None) as out:
        _write_empty(input, out.path, output_format, fieldnames, None, label_names, out.force, warn=False)
    if (out.rows if sh.torchrun else 0) == 0 and sh.main:
        warn_empty(input)
        write_metrics(metrics_out, {"rows": 0, "labels": label_names}, force=force, inputs=[input])


def _write_empty(
    input: str,
    output: str,
    output_format: Format,
    fieldnames: list[str] | None,
    metrics_out: str | None,
    label_names: list[str],
    force: bool,
    *,
    warn: bool = True,
) -> None:
    """No rows: a warning, an empty output (the header alone for CSV/TSV) and metrics that say so."""
    from nlptool.core.io import open_writer

    if warn:
        warn_empty(input)
    with open_writer(output, fmt_value(output_format), force=force, fieldnames=fieldnames):
        pass
    write_metrics(metrics_out, {"rows": 0, "labels": label_names}, force=force, inputs=[input])


def _write_rows(
    output: str, output_format: Format, force: bool, rows: list[Any], fieldnames: list[str] | None, result: Any
) -> None:
    """Each input row plus the result's fields for it (scores, probs, pred; samples: score, pred)."""
    from nlptool.core.io import open_writer

    out_fields = None
    if fieldnames is not None:
        extra = ["score", "pred"] if result.mapping == Mapping.samples.value else ["scores", "probs", "pred"]
        out_fields = [*fieldnames, *[e for e in extra if e not in fieldnames]]
    with open_writer(output, fmt_value(output_format), force=force, fieldnames=out_fields) as writer:
        for i, record in enumerate(rows):
            writer.write({**record.data, **result.row(i)})


def _report_prior(result: Any) -> None:
    """The content-free prior on stderr (when calibrated)."""
    if result.content_free_prior is not None:
        info(
            "content-free calibration: label prior on "
            + ", ".join(repr(t) for t in result.content_free_texts or [])
            + ": "
            + ", ".join(f"{y} {v:.3f}" for y, v in zip(result.labels, result.content_free_prior, strict=True))
        )


def _report(result: Any, metrics: dict[str, Any], method: Method, mapping: Mapping, with_gold: bool) -> None:
    """stderr for people: the speed line and, with gold labels, the confusion table."""
    prompts_per_row = len(result.labels) if mapping == Mapping.candidates else 1
    info(
        f"zero-shot ({method.value}, {mapping.value}): {len(result.pred)} rows x {prompts_per_row} prompt(s) = "
        f"{result.pairs} pairs in {result.seconds:.2f} s ({result.pairs_per_s:.1f} pairs/s); model {result.model}"
    )
    if with_gold:
        _print_confusion(metrics, result.labels)


def _check_options(
    labels: str | None,
    labels_file: str | None,
    text2_col: str | None,
    method: Method,
    mapping: Mapping,
    calibrate: Calibration,
) -> None:
    """Usage errors (exit 2) for option combinations that do not go together."""
    if (labels is None) == (labels_file is None):
        raise typer.BadParameter("give --labels or --labels-file (one of them)", param_hint="--labels")
    if text2_col is not None and mapping != Mapping.samples:
        raise typer.BadParameter("a pair task (--text2-col) is scored with --mapping samples", param_hint="--mapping")
    if mapping == Mapping.samples and method != Method.nsp:
        raise typer.BadParameter("--mapping samples ranks NSP scores; use it with --method nsp", param_hint="--mapping")
    if mapping == Mapping.samples and calibrate != Calibration.none:
        raise typer.BadParameter("--calibrate applies to --mapping candidates", param_hint="--calibrate")


def _prompts(labels: str | None, labels_file: str | None, template: str | None) -> tuple[list[Any], str | None]:
    """The label prompts and the template used (``None`` when the labels file gives whole prompts)."""
    from nlptool.core.nsp import DEFAULT_TEMPLATE, make_prompts, read_labels_file

    if labels_file is not None:
        return read_labels_file(labels_file, template)
    prompts = make_prompts(parse_csv_list(labels) or [], template)
    return prompts, template if template is not None else DEFAULT_TEMPLATE


def _classify_nsp(
    model: str | None,
    texts: list[str],
    texts2: list[str] | None,
    prompts: list[Any],
    dev: str,
    *,
    max_length: int,
    position: Position,
    mapping: Mapping,
    calibrate: Calibration,
    batch_size: int,
) -> Any:
    """Load the NSP model and run :func:`nlptool.core.nsp.classify_nsp` with a progress bar."""
    from nlptool.commands.encode import model_spec
    from nlptool.core.nsp import NSPScorer, classify_nsp

    scorer = NSPScorer.load(model_spec(model), max_length=max_length)
    scorer.model.to(dev)
    total = len(texts) * (len(prompts) if mapping == Mapping.candidates else 1)
    with progress("scoring", total=total, unit="pairs") as advance:
        return classify_nsp(
            scorer,
            texts,
            prompts,
            position=position.value,
            mapping=mapping.value,
            texts2=texts2,
            calibrate=calibrate.value,
            batch_size=batch_size,
            progress=advance,
        )


def _classify_embedding(
    model: str | None,
    texts: list[str],
    prompts: list[Any],
    dev: str,
    *,
    temperature: float,
    calibrate: Calibration,
    batch_size: int,
) -> Any:
    """Load the sentence encoder and run :func:`nlptool.core.nsp.classify_embedding` with a progress bar."""
    from nlptool.commands.encode import model_spec
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.nsp import classify_embedding

    encoder = SentenceEncoder.load(model_spec(model))
    with progress("encoding", total=len(texts) + len(prompts), unit="texts") as advance:
        return classify_embedding(
            encoder,
            texts,
            prompts,
            temperature=temperature,
            calibrate=calibrate.value,
            batch_size=batch_size,
            device=dev,
            progress=advance,
        )


def _print_confusion(metrics: dict[str, Any], label_names: list[str]) -> None:
    cm = metrics["confusion_matrix"]
    print_table(
        f"zero-shot: accuracy {100 * metrics['accuracy']:.2f} %, macro-F1 {100 * metrics['macro_f1']:.2f} "
        f"(rows: gold, columns: predicted)",
        ["gold \\ pred", *label_names],
        [[y, *[int(v) for v in cm[k]]] for k, y in enumerate(label_names)],
    )


def _text(record: Any, col: str, path: str) -> str:
    from nlptool.core.io import get_field

    value = get_field(record, col, path)
    if not isinstance(value, str):
        raise InputError(f"expected a text, found {type(value).__name__}", path=path, line=record.line, field=col)
    if not value.strip():
        raise InputError("empty text", path=path, line=record.line, field=col)
    return value


def _gold_index(record: Any, col: str, names: list[str], path: str) -> int:
    from nlptool.core.io import get_field

    value = get_field(record, col, path)
    key = str(value).strip() if value is not None else ""
    if key in names:
        return names.index(key)
    raise InputError(
        f"gold label '{key}' is not one of the labels ({', '.join(names)}); name the labels as the gold column does",
        path=path,
        line=record.line,
        field=col,
    )

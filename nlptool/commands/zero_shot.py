"""``nlptool zero-shot``: prompt-based zero-shot classification with BERT's NSP head (NSP-BERT), or by embeddings."""

from __future__ import annotations

import time
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
    fmt_value,
    info,
    parse_csv_list,
    print_table,
    progress,
    warn_empty,
    write_metrics,
)
from nlptool.core.errors import InputError

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


#: Zhao et al. (2021)'s content-free inputs; ``{mask}`` becomes the tokenizer's mask token (dropped if it has none).
CONTENT_FREE_TEXTS = ("N/A", "", "{mask}")


def zero_shot(
    input: InputArg,
    output: OutputOpt = "-",
    labels: Annotated[
        str | None,
        typer.Option("--labels", help="Labels in order, 'World,Sports,Business'; each fills the template's {}."),
    ] = None,
    labels_file: Annotated[
        str | None,
        typer.Option(
            "--labels-file",
            help="YAML/JSON: label -> word, {word: ...} or {prompt: ...} (optionally under 'labels:' with a "
            "'template:'); see the README.",
        ),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            help="Prompt template with one {} for the label word. Default: the labels file's, else "
            "'This text is about {}.'",
            show_default=False,
        ),
    ] = None,
    position: Annotated[
        Position, typer.Option("--position", help="prefix: prompt is segment A, text B; suffix: text A, prompt B.")
    ] = Position.prefix,
    method: Annotated[
        Method,
        typer.Option("--method", help="nsp: P(IsNext) from an NSP head; embedding: cosine to each filled prompt."),
    ] = Method.nsp,
    mapping: Annotated[
        Mapping,
        typer.Option(
            "--mapping",
            help="candidates: argmax over the labels; samples: rank all rows by the first label's score (or the "
            "pair's, with --text2-col) and cut into equal bins, one per label in order (nsp only).",
        ),
    ] = Mapping.candidates,
    calibrate: Annotated[
        Calibration,
        typer.Option(
            "--calibrate",
            help="content-free: divide each row's probs by the label distribution the prompts give the content-free "
            "texts 'N/A', '' and [MASK], then renormalise (Zhao et al. 2021); pred = argmax of the result. Uses no "
            "labels. candidates mapping only.",
        ),
    ] = Calibration.none,
    model: ModelOpt = None,
    text_col: Annotated[
        str | None,
        typer.Option("--text-col", help="Text column (default: text, sentence, content, description, else the first)."),
    ] = None,
    text2_col: Annotated[
        str | None,
        typer.Option("--text2-col", help="Second text of a pair task: A = text, B = text2 (needs --mapping samples)."),
    ] = None,
    label_col: Annotated[
        str | None,
        typer.Option("--label-col", help="Gold label column: accuracy, macro-F1 and confusion matrix on stderr."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs (or texts) per forward pass.", min=1)] = 64,
    max_length: Annotated[
        int, typer.Option("--max-length", help="Max tokens of a (prompt, text) pair; only the text is cut.", min=8)
    ] = 256,
    temperature: Annotated[
        float,
        typer.Option(
            "--temperature",
            help="embedding: probs = softmax(cos / T). 0.05 is the scale (20) all-MiniLM-L6-v2 was trained with.",
            min=1e-6,
        ),
    ] = 0.05,
    device: DeviceOpt = "auto",
    metrics_out: MetricsOutOpt = None,
    format: FormatOpt = Format.auto,
    output_format: OutputFormatOpt = Format.auto,
    header: HeaderOpt = None,
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

    from nlptool.commands.encode import model_spec
    from nlptool.core.device import resolve_device
    from nlptool.core.io import check_output_path, open_writer, read_texts
    from nlptool.core.metrics import accuracy, confusion_matrix, macro_f1
    from nlptool.core.nsp import DEFAULT_TEMPLATE, make_prompts, read_labels_file, samples_contrast

    if (labels is None) == (labels_file is None):
        raise typer.BadParameter("give --labels or --labels-file (one of them)", param_hint="--labels")
    if text2_col is not None and mapping != Mapping.samples:
        raise typer.BadParameter("a pair task (--text2-col) is scored with --mapping samples", param_hint="--mapping")
    if mapping == Mapping.samples and method != Method.nsp:
        raise typer.BadParameter("--mapping samples ranks NSP scores; use it with --method nsp", param_hint="--mapping")
    if mapping == Mapping.samples and calibrate != Calibration.none:
        raise typer.BadParameter("--calibrate applies to --mapping candidates", param_hint="--calibrate")
    check_output_path(output, force)
    check_output_path(metrics_out, force)
    if labels_file is not None:
        prompts, used_template = read_labels_file(labels_file, template)
    else:
        names = parse_csv_list(labels) or []
        prompts = make_prompts(names, template)
        used_template = template if template is not None else DEFAULT_TEMPLATE
    label_names = [p.label for p in prompts]

    # -- read the rows (all: every text is scored against every prompt)
    with read_texts(
        input, text_col=text_col, fmt=fmt_value(format), header=header, table=True, default_cols=TEXT_COLUMNS
    ) as reader:
        rows = list(reader)
        fieldnames = reader.fieldnames
        col = reader.text_col or "text"
    if not rows:
        warn_empty(input)
        with open_writer(output, fmt_value(output_format), force=force, fieldnames=fieldnames):
            pass
        write_metrics(metrics_out, {"rows": 0, "labels": label_names}, force=force, inputs=[input])
        return
    texts = [_text(r, col, input) for r in rows]
    texts2 = [_text(r, text2_col, input) for r in rows] if text2_col else None
    gold = None
    if label_col is not None:
        gold = np.array([_gold_index(r, label_col, label_names, input) for r in rows], dtype=np.int64)
    dev = resolve_device(device)
    n, n_labels = len(texts), len(prompts)
    scores: Any
    if method == Method.nsp:
        from nlptool.core.nsp import NSPScorer, normalise_scores, pair_order

        scorer = NSPScorer.load(model_spec(model), max_length=max_length)
        scorer.model.to(dev)
        model_name = scorer.name
        if mapping == Mapping.samples:
            if texts2 is not None:
                firsts, seconds = texts, texts2
                shorten = "longest"
            else:
                pairs = [pair_order(prompts[0].prompt, t, position.value) for t in texts]
                firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
                shorten = "second" if position == Position.prefix else "first"
            t0 = time.perf_counter()
            with progress("scoring", total=n, unit="pairs") as advance:
                single = scorer.score_pairs(firsts, seconds, shorten=shorten, batch_size=batch_size, progress=advance)
            seconds_taken = time.perf_counter() - t0
            n_pairs = n
            pred = samples_contrast(single, n_labels)
            scores = single
        else:
            texts_in = [p.prompt for p in prompts]
            t0 = time.perf_counter()
            with progress("scoring", total=n * n_labels, unit="pairs") as advance:
                scores = scorer.score(texts, texts_in, position=position.value, batch_size=batch_size, progress=advance)
            seconds_taken = time.perf_counter() - t0
            n_pairs = n * n_labels
            probs = normalise_scores(scores)
            pred = scores.argmax(axis=1)
            if calibrate == Calibration.content_free:
                cf_texts = _content_free_texts(scorer.tokenizer)
                cf_probs = normalise_scores(scorer.score(cf_texts, texts_in, position=position.value))
    else:
        from nlptool.core.encoder import SentenceEncoder

        encoder = SentenceEncoder.load(model_spec(model))
        model_name = encoder.name
        t0 = time.perf_counter()
        with progress("encoding", total=n + n_labels, unit="texts") as advance:
            text_emb = encoder.encode(texts, batch_size=batch_size, normalize=True, device=dev, progress=advance)
            prompt_emb = encoder.encode(
                [p.prompt for p in prompts], batch_size=batch_size, normalize=True, device=dev, progress=advance
            )
        seconds_taken = time.perf_counter() - t0
        n_pairs = n * n_labels
        prompt_emb = prompt_emb.astype(np.float64)
        scores = text_emb.astype(np.float64) @ prompt_emb.T
        probs = _softmax(scores / temperature)
        pred = scores.argmax(axis=1)
        if calibrate == Calibration.content_free:
            cf_texts = _content_free_texts(encoder.tokenizer)
            cf_emb = encoder.encode(cf_texts, batch_size=batch_size, normalize=True, device=dev)
            cf_probs = _softmax(cf_emb.astype(np.float64) @ prompt_emb.T / temperature)
    content_free_prior = None
    if calibrate == Calibration.content_free:
        from nlptool.core.nsp import calibrate_content_free

        probs, content_free_prior = calibrate_content_free(probs, cf_probs)
        pred = probs.argmax(axis=1)
        info(
            "content-free calibration: label prior on "
            + ", ".join(repr(t) for t in cf_texts)
            + ": "
            + ", ".join(f"{y} {v:.3f}" for y, v in zip(label_names, content_free_prior, strict=True))
        )

    # -- write
    out_fields = None
    if fieldnames is not None:
        extra = ["score", "pred"] if mapping == Mapping.samples else ["scores", "probs", "pred"]
        out_fields = [*fieldnames, *[e for e in extra if e not in fieldnames]]
    with open_writer(output, fmt_value(output_format), force=force, fieldnames=out_fields) as writer:
        for i, record in enumerate(rows):
            row = dict(record.data)
            if mapping == Mapping.samples:
                row["score"] = float(scores[i])
            else:
                row["scores"] = {y: float(s) for y, s in zip(label_names, scores[i], strict=True)}
                row["probs"] = [float(v) for v in probs[i]]
            row["pred"] = label_names[int(pred[i])]
            writer.write(row)

    rate = n_pairs / seconds_taken if seconds_taken > 0 else float("nan")
    metrics: dict[str, Any] = {
        "rows": n,
        "labels": label_names,
        "prompts": [p.prompt for p in prompts],
        "pairs": n_pairs,
        "seconds": seconds_taken,
        "pairs_per_s": rate,
        "predicted_counts": {y: int((pred == k).sum()) for k, y in enumerate(label_names)},
    }
    if content_free_prior is not None:
        metrics["content_free_prior"] = {y: float(v) for y, v in zip(label_names, content_free_prior, strict=True)}
    info(
        f"zero-shot ({method.value}, {mapping.value}): {n} rows x {n_labels if mapping == Mapping.candidates else 1} "
        f"prompt(s) = {n_pairs} pairs in {seconds_taken:.2f} s ({rate:.1f} pairs/s); model {model_name}"
    )
    if gold is not None:
        cm = confusion_matrix(gold, pred, n_labels)
        metrics["accuracy"] = accuracy(gold, pred)
        metrics["macro_f1"] = macro_f1(gold, pred, n_labels)
        metrics["confusion_matrix"] = cm.tolist()
        metrics["majority_accuracy"] = float(np.bincount(gold, minlength=n_labels).max() / n)
        print_table(
            f"zero-shot: accuracy {100 * metrics['accuracy']:.2f} %, macro-F1 {100 * metrics['macro_f1']:.2f} "
            f"(rows: gold, columns: predicted)",
            ["gold \\ pred", *label_names],
            [[y, *[int(v) for v in cm[k]]] for k, y in enumerate(label_names)],
        )
    params = {
        "method": method.value,
        "mapping": mapping.value,
        "position": position.value,
        "template": used_template,
        "text_col": col,
        "text2_col": text2_col,
        "label_col": label_col,
        "batch_size": batch_size,
        "max_length": max_length,
        "temperature": temperature if method == Method.embedding else None,
        "calibrate": calibrate.value,
        "device": dev,
    }
    inputs = [input, *([labels_file] if labels_file else [])]
    write_metrics(metrics_out, metrics, force=force, inputs=inputs, model=model_name, params=params)


def _softmax(logits: Any) -> Any:
    import numpy as np

    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _content_free_texts(tokenizer: Any) -> list[str]:
    """:data:`CONTENT_FREE_TEXTS` with ``{mask}`` replaced by the tokenizer's mask token (left out if it has none)."""
    mask = getattr(tokenizer, "mask_token", None)
    texts = []
    for text in CONTENT_FREE_TEXTS:
        if "{mask}" in text:
            if not mask:
                continue
            text = text.replace("{mask}", mask)
        texts.append(text)
    return texts


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

"""NSP-BERT prompts: label prompts from a template or a labels file, the segment order, and the label-score
maths that needs no model (normalisation, contextual calibration, samples contrast). See :mod:`nlptool.core.nsp`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlptool.core.errors import NlptoolError

POSITIONS = ("prefix", "suffix")
DEFAULT_TEMPLATE = "This text is about {}."


@dataclass(frozen=True)
class LabelPrompt:
    """A label and its prompt sentence."""

    label: str
    prompt: str


def check_template(template: str) -> str:
    """Return ``template`` if it holds exactly one ``{}``; otherwise raise :class:`NlptoolError` saying why not."""
    count = template.count("{}")
    if count != 1:
        found = "no {}" if count == 0 else f"{{}} {count} times"
        raise NlptoolError(
            f"template '{template}' has {found}; it needs exactly one {{}} where the label word goes, "
            "e.g. 'The above news is about {}.'"
        )
    return template


def fill_template(template: str, word: str) -> str:
    """``template`` with its single ``{}`` replaced by ``word`` (no other brace is interpreted)."""
    check_template(template)
    return template.replace("{}", word)


def make_prompts(
    labels: Sequence[str], template: str | None = None, words: dict[str, str] | None = None
) -> list[LabelPrompt]:
    """One prompt per label: ``template`` filled with ``words[label]`` (default: the label itself).

    Args:
        labels: label names, in output order (duplicates are an error).
        template: the template with one ``{}`` (default :data:`DEFAULT_TEMPLATE`).
        words: label → word (verbalizer); missing labels use their own name.
    """
    template = check_template(template if template is not None else DEFAULT_TEMPLATE)
    words = words or {}
    _check_labels(labels, "--labels")
    return [LabelPrompt(str(y), fill_template(template, words.get(y, y))) for y in labels]


def _check_labels(labels: Sequence[str], where: str) -> None:
    if len(labels) < 2:
        raise NlptoolError(f"{where} names {len(labels)} label(s); zero-shot classification needs at least 2")
    seen: set[str] = set()
    for y in labels:
        if not str(y).strip():
            raise NlptoolError(f"{where} has an empty label name")
        if y in seen:
            raise NlptoolError(f"{where} names label '{y}' twice")
        seen.add(y)


def read_labels_file(path: str | Path, template: str | None = None) -> tuple[list[LabelPrompt], str | None]:
    """Read labels and their prompts from a YAML or JSON file.

    Accepted shapes::

        # a mapping label -> word (filled into the template), or -> {word: ...} or {prompt: ...}
        World: world
        Sci/Tech: {word: science and technology}
        Sports: {prompt: "The above news is about a game."}

        # the same under "labels:", with the file's own template (a --template flag wins over it)
        template: "The above news is about {}."
        labels: {World: world, Sports: sports}

        # or a list: names alone, or items {label: ..., word: ...} / {label: ..., prompt: ...}
        - positive
        - {label: negative, word: bad}

    A label without a word uses its name as the word; a whole ``prompt`` needs no template.

    Returns:
        The prompts in file order and the template that was used (``None`` if every label has a whole prompt).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise NlptoolError(f"labels file {path} does not exist; check the path")
    from nlptool.core.io import read_text

    text = read_text(p)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise NlptoolError(
            f"{path}{where}: invalid YAML/JSON ({getattr(exc, 'problem', exc)}); fix the syntax"
        ) from None
    file_template = None
    if isinstance(doc, dict) and "labels" in doc and set(doc) <= {"labels", "template"}:
        file_template = doc.get("template")
        if file_template is not None and not isinstance(file_template, str):
            raise NlptoolError(f"{path}: 'template' must be a string with one {{}}")
        doc = doc["labels"]
    chosen = template if template is not None else file_template
    items: list[tuple[str, Any]]
    if isinstance(doc, dict):
        items = [(str(k), v) for k, v in doc.items()]
    elif isinstance(doc, list):
        items = []
        for i, entry in enumerate(doc):
            if isinstance(entry, (str, int, float)) and not isinstance(entry, bool):
                items.append((str(entry), None))
            elif isinstance(entry, dict) and "label" in entry:
                rest = {k: v for k, v in entry.items() if k != "label"}
                items.append((str(entry["label"]), rest or None))
            else:
                raise NlptoolError(
                    f"{path}: list item {i + 1} must be a label name or a mapping with 'label' and 'word' or 'prompt'"
                )
    else:
        raise NlptoolError(
            f"{path}: expected a mapping label -> word/prompt or a list of labels, found "
            f"{type(doc).__name__ if doc is not None else 'an empty file'}"
        )
    prompts: list[LabelPrompt] = []
    used_template = False
    for label, spec in items:
        if spec is None:
            word, prompt = label, None
        elif isinstance(spec, (str, int, float)) and not isinstance(spec, bool):
            word, prompt = str(spec), None
        elif isinstance(spec, dict) and set(spec) <= {"word", "prompt"} and len(spec) == 1:
            word, prompt = (str(spec["word"]), None) if "word" in spec else (None, str(spec["prompt"]))
        else:
            raise NlptoolError(
                f"{path}: label '{label}': give a word (a string), {{word: ...}} or {{prompt: ...}}, not {spec!r}"
            )
        if prompt is not None:
            if not prompt.strip():
                raise NlptoolError(f"{path}: label '{label}' has an empty prompt")
            prompts.append(LabelPrompt(label, prompt))
            continue
        if chosen is None:
            chosen = DEFAULT_TEMPLATE
        try:
            prompts.append(LabelPrompt(label, fill_template(chosen, word)))  # type: ignore[arg-type]
        except NlptoolError as exc:
            raise NlptoolError(f"{path}: label '{label}': {exc}") from None
        used_template = True
    _check_labels([lp.label for lp in prompts], f"labels file {path}")
    return prompts, (chosen if used_template else None)


def pair_order(prompt: str, text: str, position: str) -> tuple[str, str]:
    """Segments ``(A, B)``: ``prefix`` puts the prompt first (A), ``suffix`` puts the text first."""
    if position == "prefix":
        return prompt, text
    if position == "suffix":
        return text, prompt
    raise NlptoolError(f"unknown prompt position '{position}'; choose prefix or suffix")


def normalise_scores(scores: np.ndarray) -> np.ndarray:
    """Scores (N, L) of non-negative values → rows that sum to 1 (``s / sum(s)``; an all-zero row → uniform)."""
    s = np.asarray(scores, dtype=np.float64)
    total = s.sum(axis=1, keepdims=True)
    out = np.divide(s, total, out=np.full_like(s, 1.0 / s.shape[1]), where=total > 0)
    return out


def calibrate_content_free(probs: np.ndarray, content_free_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Contextual calibration (Zhao et al. 2021): divide out the label prior the prompts show on content-free input.

    With :math:`\hat p_{cf}` the mean over content-free inputs (``"N/A"``, ``""``, ``"[MASK]"``) of their
    label distributions, each row becomes

    .. math::

        q(y \mid x) = \frac{p(y \mid x) / \hat p_{cf}(y)}{\sum_{y'} p(y' \mid x) / \hat p_{cf}(y')},

    i.e. :math:`W = \mathrm{diag}(\hat p_{cf})^{-1}`, :math:`b = 0` in the paper's notation. It removes a bias
    toward labels whose prompt scores high whatever the text is (for NSP: a prompt that "follows" anything). It uses
    no labelled data and no evaluation text, only the prompts.

    Args:
        probs: ``(N, L)`` rows summing to 1.
        content_free_probs: ``(K, L)`` rows summing to 1, one per content-free input.

    Returns:
        The calibrated ``(N, L)`` rows and :math:`\hat p_{cf}` ``(L,)``.

    Reference:
        Zhao, Wallace, Feng, Klein, Singh, "Calibrate Before Use: Improving Few-Shot Performance of Language
        Models", ICML 2021 (arXiv 2102.09690).
    """
    p = np.asarray(probs, dtype=np.float64)
    cf = np.asarray(content_free_probs, dtype=np.float64)
    if p.ndim != 2 or cf.ndim != 2 or cf.shape[1] != p.shape[1] or len(cf) == 0:
        raise NlptoolError(
            f"contextual calibration needs probs (N, L) and content-free probs (K, L) with the same L; got "
            f"{p.shape} and {cf.shape}"
        )
    prior = cf.mean(axis=0)
    if not (prior > 0).all():
        raise NlptoolError("contextual calibration: a label has probability 0 on every content-free input")
    q = p / prior
    total = q.sum(axis=1, keepdims=True)
    q = np.divide(q, total, out=np.full_like(q, 1.0 / q.shape[1]), where=total > 0)
    return q, prior


def samples_contrast(scores: Sequence[float] | np.ndarray, n_bins: int) -> np.ndarray:
    """NSP-BERT's samples contrast: rank samples by ``scores`` (highest first) and cut the ranking into ``n_bins``
    equal bins; returns each sample's bin (0 = the highest scores).

    Sample at rank ``r`` (0-based, ties broken by input order) goes to bin ``floor(r * n_bins / N)``, so bin sizes
    differ by at most one. With ``n_bins = 2`` the top half is bin 0.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise NlptoolError(f"samples contrast needs one score per sample (a 1-d array), got shape {s.shape}")
    if n_bins < 1:
        raise NlptoolError(f"samples contrast needs at least one bin, got {n_bins}")
    if np.isnan(s).any():
        raise NlptoolError("samples contrast got a NaN score; cannot rank the samples")
    n = len(s)
    order = np.argsort(-s, kind="stable")
    bins = np.empty(n, dtype=np.int64)
    bins[order] = (np.arange(n) * n_bins) // max(n, 1)
    return bins

r"""NSP-BERT: zero-shot classification with BERT's next-sentence-prediction head, and the data to train such a head.

Sun et al., "NSP-BERT: A Prompt-based Few-Shot Learner Through an Original Pre-training Task — Next Sentence
Prediction" (COLING 2022, arXiv 2109.03564); Su Jianlin's discussion: https://kexue.fm/archives/8671.

Prompts
    Every label ``y`` becomes a prompt sentence ``p_y``: a template with one ``{}`` filled with the label's word
    (``"The above news is about {}."`` + ``sports``), or a whole prompt given for that label.

Scoring ("candidates contrast")
    BERT was pre-trained to tell whether segment B follows segment A. The score of label ``y`` for text ``x`` is

    .. math:: s(x, y) = P(\mathrm{IsNext} \mid A, B) = \mathrm{softmax}(W\,\mathrm{pooler}([CLS]\,A\,[SEP]\,B\,[SEP]))_0

    with ``A = p_y, B = x`` (``prefix``: the prompt comes first) or ``A = x, B = p_y`` (``suffix``); A's tokens have
    token type 0, B's type 1. Index 0 of the two NSP logits is IsNext in Google's BERT and in transformers'
    ``BertForNextSentencePrediction`` (``labels=0`` means "B is a continuation of A"). The prediction is
    ``argmax_y s(x, y)``; ``probs`` are the scores divided by their sum over the labels.

Samples contrast
    For sentence-pair tasks the paper scores every sample with one prompt (or the pair itself), ranks all samples
    by that score and cuts the ranking into equal bins, one per label (:func:`samples_contrast`).

Training an NSP head (``nsp-adapt``)
    Encoders trained without NSP (RoBERTa, MiniLM, sentence-transformers models) get one from unlabelled documents:
    :func:`read_corpus` reads documents and splits them into sentences (:func:`split_sentences`, English and Chinese
    punctuation), :func:`build_nsp_pairs` pairs each sentence with the next one of its document (IsNext) or, with
    probability 1/2, with a random sentence of another document (NotNext), as in BERT's pre-training.
    :func:`nsp_data` holds out whole documents and builds both sides' pairs, :func:`load_nsp_model` loads a model
    whose missing head is initialised from the seed, :func:`set_trainable` picks the layers that train, and
    :func:`fit` runs the shared loop with :class:`NspTask` (a :class:`nlptool.core.tasks.Task`: collate, the NSP
    cross-entropy, held-out NSP accuracy as the metric).

Classifying (``zero-shot``)
    :func:`classify_nsp` scores texts against the prompts (candidates or samples contrast, optionally with Zhao et
    al.'s content-free calibration) and :func:`classify_embedding` is the baseline that needs no NSP head (cosine
    between the text's and each prompt's :class:`nlptool.core.encoder.SentenceEncoder` embeddings); both return one
    :class:`ZeroShotResult` (scores, probs, pred, the content-free prior, and the metrics ``zero-shot`` writes).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlptool.core.batching import pad_ids
from nlptool.core.errors import InputError, NlptoolError

IS_NEXT = 0  # index of "B follows A" among BERT's two NSP logits (labels=0 in BertForNextSentencePrediction)
NOT_NEXT = 1
POSITIONS = ("prefix", "suffix")
DEFAULT_TEMPLATE = "This text is about {}."
NSP_WEIGHTS = ("cls.seq_relationship", "pooler")  # what a checkpoint must hold for NSP scoring

__all__ = [
    "CALIBRATIONS",
    "CONTENT_FREE_TEXTS",
    "DEFAULT_TEMPLATE",
    "IS_NEXT",
    "MAPPINGS",
    "NOT_NEXT",
    "POSITIONS",
    "build_nsp_pairs",
    "calibrate_content_free",
    "check_template",
    "classify_embedding",
    "classify_nsp",
    "content_free_texts",
    "fill_template",
    "fit",
    "LabelPrompt",
    "load_nsp_model",
    "make_prompts",
    "normalise_scores",
    "nsp_data",
    "nsp_model_class",
    "NspData",
    "NspFitResult",
    "NSPPair",
    "NSPScorer",
    "NspTask",
    "pair_order",
    "parse_train_layers",
    "read_corpus",
    "read_labels_file",
    "samples_contrast",
    "set_trainable",
    "softmax_rows",
    "split_documents",
    "split_sentences",
    "ZeroShotResult",
]


# ---------------------------------------------------------------------------------------------------------- prompts


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


# ---------------------------------------------------------------------------------------------------------- scoring


class NSPScorer:
    """P(IsNext) for sentence pairs from a model with an NSP head (``BertForNextSentencePrediction`` and kin).

    Args:
        model: a transformers model whose forward takes ``input_ids``, ``token_type_ids``, ``attention_mask`` and
            returns ``logits`` of shape (batch, 2) with IsNext at index :data:`IS_NEXT`.
        tokenizer: its tokenizer (pair encoding: ``[CLS] A [SEP] B [SEP]`` with token types 0/1).
        max_length: pairs are cut to this many tokens; only the text side is shortened, never the prompt.
    """

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 256) -> None:
        if max_length < 8:
            raise NlptoolError(f"max length {max_length} is too short for a sentence pair; use at least 8")
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = min(max_length, limit) if isinstance(limit, int) else max_length
        self.name = str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)

    @classmethod
    def load(cls, spec: str | None, *, max_length: int = 256) -> NSPScorer:
        """Load a model folder or hub id that has an NSP head; a checkpoint without one is an error.

        ``from_pretrained`` would initialise a missing ``cls.seq_relationship`` (or pooler) at random and score
        with it; :func:`nlptool.core.models.load_model` reports the missing weights instead.
        """
        from nlptool.core.models import load_model, load_tokenizer, resolve_model

        resolved = resolve_model(spec, role="a next-sentence-prediction model")
        model_class = nsp_model_class(resolved)
        tokenizer = load_tokenizer(resolved)  # first: a broken folder fails before its weights load
        model = load_model(
            resolved,
            model_class,
            required=NSP_WEIGHTS,
            head_name="next-sentence-prediction (NSP) head",
            fix_hint="train one on unlabelled text with `nlptool nsp-adapt --corpus TEXT --model "
            f"{spec or 'default'} --out DIR` and pass --model DIR, or use --method embedding",
        )
        scorer = cls(model, tokenizer, max_length=max_length)
        scorer.name = resolved.name
        return scorer

    def encode_pairs(self, firsts: Sequence[str], seconds: Sequence[str], *, shorten: str) -> list[list[int]]:
        """Token ids and token types of each pair, unpadded: a list of ``[input_ids, token_type_ids]``.

        ``shorten`` is ``first`` or ``second`` (the segment cut when a pair exceeds ``max_length``; the prompt is never
        cut) or ``longest`` (tokens come off the longer segment first: training pairs, pairs of two texts).
        """
        strategies = {"first": "only_first", "second": "only_second", "longest": "longest_first"}
        if shorten not in strategies:
            raise NlptoolError(f"shorten must be first, second or longest, got '{shorten}'")
        strategy = strategies[shorten]
        out: list[list[int]] = []
        step = 4096
        for start in range(0, len(firsts), step):
            a = list(firsts[start : start + step])
            b = list(seconds[start : start + step])
            try:
                enc = self.tokenizer(a, b, truncation=strategy, max_length=self.max_length)
            except Exception as exc:  # tokenizers raise when the kept segment alone is too long
                raise NlptoolError(
                    f"a prompt does not fit into --max-length {self.max_length} tokens with any text ({exc}); "
                    "shorten the prompt or raise --max-length"
                ) from None
            types = enc.get("token_type_ids")
            if types is None:
                raise NlptoolError(
                    f"the tokenizer of '{self.name}' gives no token type ids; NSP needs segment A/B types (BERT)"
                )
            out += [[ids, tt] for ids, tt in zip(enc["input_ids"], types, strict=True)]
        return out

    def score_pairs(
        self,
        firsts: Sequence[str],
        seconds: Sequence[str],
        *,
        shorten: str = "second",
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """P(IsNext) for each pair (A = ``firsts[i]``, B = ``seconds[i]``), float64 (n,), in input order.

        Pairs are tokenised once, sorted by length (longest first) and batched, so padding stays small; the model
        runs under ``torch.inference_mode`` in eval mode (its mode is restored).
        """
        import torch

        if len(firsts) != len(seconds):
            raise NlptoolError(f"{len(firsts)} first segments but {len(seconds)} second segments")
        if batch_size < 1:
            raise NlptoolError(f"batch size must be positive, got {batch_size}")
        encoded = self.encode_pairs(firsts, seconds, shorten=shorten)
        n = len(encoded)
        out = np.zeros(n, dtype=np.float64)
        if n == 0:
            return out
        lengths = np.array([len(e[0]) for e in encoded])
        order = np.argsort(-lengths, kind="stable")
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, n, batch_size):
                    idx = order[start : start + batch_size]
                    ids, mask = pad_ids([encoded[i][0] for i in idx], pad_id)
                    types = pad_ids([encoded[i][1] for i in idx], 0)[0]
                    logits = self.model(
                        input_ids=ids.to(device), token_type_ids=types.to(device), attention_mask=mask.to(device)
                    ).logits
                    out[idx] = torch.softmax(logits.float(), dim=-1)[:, IS_NEXT].cpu().numpy()
                    if progress is not None:
                        progress(len(idx))
        finally:
            self.model.train(was_training)
        return out

    def score(
        self,
        texts: Sequence[str],
        prompts: Sequence[str],
        *,
        position: str = "prefix",
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Candidates contrast: P(IsNext) of every (text, prompt) pair as an array (len(texts), len(prompts)).

        All ``N x L`` pairs go through :meth:`score_pairs` together (length-sorted batches across texts and labels).
        """
        firsts: list[str] = []
        seconds: list[str] = []
        for text in texts:
            for prompt in prompts:
                a, b = pair_order(prompt, text, position)
                firsts.append(a)
                seconds.append(b)
        flat = self.score_pairs(
            firsts,
            seconds,
            shorten="second" if position == "prefix" else "first",
            batch_size=batch_size,
            progress=progress,
        )
        return flat.reshape(len(texts), len(prompts))


def nsp_model_class(resolved: Any) -> Any:
    """The transformers NSP class for a model's config (BERT-family only); a clear error for other architectures."""
    from transformers import AutoConfig, AutoModelForNextSentencePrediction
    from transformers.models.auto.modeling_auto import MODEL_FOR_NEXT_SENTENCE_PREDICTION_MAPPING_NAMES as NAMES

    from nlptool.core.models import check_folder_files

    if resolved.source != "hub":
        check_folder_files(resolved.location)  # a damaged config.json is named as such
    try:
        config = AutoConfig.from_pretrained(resolved.location)
    except Exception as exc:  # noqa: BLE001 - transformers fails in many ways on a bad config
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NlptoolError(f"could not read the config of model '{resolved.name}' ({first})") from None
    if config.model_type not in NAMES:
        raise NlptoolError(
            f"model '{resolved.name}' is a {config.model_type} model; transformers has a next-sentence-prediction "
            f"head only for {', '.join(sorted(NAMES))}; use one of those, or --method embedding"
        )
    return AutoModelForNextSentencePrediction


# ------------------------------------------------------------------------------------------- zero-shot classification

#: Zhao et al. (2021)'s content-free inputs; ``{mask}`` becomes the tokenizer's mask token (dropped if it has none).
CONTENT_FREE_TEXTS = ("N/A", "", "{mask}")
MAPPINGS = ("candidates", "samples")
CALIBRATIONS = ("none", "content-free")


def content_free_texts(tokenizer: Any) -> list[str]:
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


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of an ``(N, L)`` array (max-shifted, so large logits do not overflow)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class ZeroShotResult:
    """What :func:`classify_nsp` or :func:`classify_embedding` found for ``N`` texts and ``L`` labels.

    Attributes:
        labels: the label names, in order (the columns of ``scores`` and ``probs``; ``pred`` indexes them).
        prompts: the prompt sentence of each label.
        method: ``nsp`` or ``embedding``.
        mapping: ``candidates`` (argmax over the labels) or ``samples`` (NSP-BERT's samples contrast).
        scores: candidates: ``(N, L)`` float64, P(IsNext) or the cosine of each (text, prompt); samples: ``(N,)``,
            the one score each row was ranked by.
        probs: candidates: ``(N, L)`` rows summing to 1 (NSP: scores over their sum; embedding: ``softmax(cos /
            T)``), calibrated with ``calibrate="content-free"``; samples: ``None``.
        pred: ``(N,)`` int64 label indices (the argmax of ``scores``, of the calibrated ``probs`` when calibrated;
            samples: each row's bin).
        pairs: (text, prompt) pairs scored (or texts × labels compared, for the embedding method).
        seconds: wall time of that scoring (the content-free inputs excluded).
        model: the model's name.
        content_free_prior: ``(L,)``, the label distribution of the content-free inputs that calibration divided
            out, or ``None``.
        content_free_texts: those inputs (``"N/A"``, ``""``, the mask token), or ``None``.
    """

    labels: list[str]
    prompts: list[str]
    method: str
    mapping: str
    scores: np.ndarray
    probs: np.ndarray | None
    pred: np.ndarray
    pairs: int
    seconds: float
    model: str
    content_free_prior: np.ndarray | None = None
    content_free_texts: list[str] | None = None

    @property
    def pred_labels(self) -> list[str]:
        """The predicted label name of every text."""
        return [self.labels[int(k)] for k in self.pred]

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else float("nan")

    def row(self, i: int) -> dict[str, Any]:
        """The fields ``zero-shot`` adds to input row ``i``: ``scores`` ``{label: score}``, ``probs`` (a list in label
        order) and ``pred`` (a label name); with the samples mapping ``score`` and ``pred``."""
        out: dict[str, Any] = {}
        if self.mapping == "samples":
            out["score"] = float(self.scores[i])
        else:
            out["scores"] = {y: float(s) for y, s in zip(self.labels, self.scores[i], strict=True)}
            out["probs"] = [float(v) for v in self.probs[i]]  # type: ignore[index]
        out["pred"] = self.labels[int(self.pred[i])]
        return out

    def metrics(self, gold: Sequence[int] | np.ndarray | None = None) -> dict[str, Any]:
        """``zero-shot``'s metrics: rows, labels, prompts, pairs, seconds, pairs per second, predicted counts per label
        and the content-free prior (when calibrated); with ``gold`` label indices (``(N,)``) also accuracy, macro-F1,
        the confusion matrix (rows: gold, columns: predicted; :mod:`nlptool.core.metrics`) and the accuracy of always
        predicting the most frequent gold label."""
        from nlptool.core.metrics import accuracy, confusion_matrix, macro_f1

        n, n_labels = len(self.pred), len(self.labels)
        out: dict[str, Any] = {
            "rows": n,
            "labels": list(self.labels),
            "prompts": list(self.prompts),
            "pairs": self.pairs,
            "seconds": self.seconds,
            "pairs_per_s": self.pairs_per_s,
            "predicted_counts": {y: int((self.pred == k).sum()) for k, y in enumerate(self.labels)},
        }
        if self.content_free_prior is not None:
            out["content_free_prior"] = {y: float(v) for y, v in zip(self.labels, self.content_free_prior, strict=True)}
        if gold is not None:
            g = np.asarray(gold, dtype=np.int64)
            if g.shape != self.pred.shape:
                raise NlptoolError(f"{len(g)} gold labels for {n} predictions")
            out["accuracy"] = accuracy(g, self.pred)
            out["macro_f1"] = macro_f1(g, self.pred, n_labels)
            out["confusion_matrix"] = confusion_matrix(g, self.pred, n_labels).tolist()
            out["majority_accuracy"] = float(np.bincount(g, minlength=n_labels).max() / n)
        return out


def _check_zero_shot(texts: Sequence[str], prompts: Sequence[LabelPrompt], calibrate: str | None) -> str:
    if len(texts) == 0:
        raise NlptoolError("no texts to classify")
    _check_labels([p.label for p in prompts], "the prompts")
    calibrate = calibrate or "none"
    if calibrate not in CALIBRATIONS:
        raise NlptoolError(f"unknown calibration '{calibrate}'; choose {' or '.join(CALIBRATIONS)}")
    return calibrate


def classify_nsp(
    scorer: NSPScorer,
    texts: Sequence[str],
    prompts: Sequence[LabelPrompt],
    *,
    position: str = "prefix",
    mapping: str = "candidates",
    texts2: Sequence[str] | None = None,
    calibrate: str | None = None,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> ZeroShotResult:
    r"""NSP-BERT zero-shot classification of ``texts`` with one prompt per label (``zero-shot --method nsp``).

    ``candidates``: ``scores[i, y]`` = P(IsNext) of (prompt ``y``, text ``i``) (``prefix``) or (text, prompt)
    (``suffix``), :meth:`NSPScorer.score`; ``probs`` = :func:`normalise_scores`; ``pred`` = argmax. With
    ``calibrate="content-free"`` the content-free texts (:func:`content_free_texts`) are scored against the same
    prompts and :func:`calibrate_content_free` divides their mean distribution out of ``probs``; ``pred`` is then the
    argmax of the calibrated ``probs`` (``scores`` stay raw).

    ``samples``: each row gets one score, P(IsNext) of the first label's prompt with the text (or of the pair (text,
    ``texts2[i]``) when ``texts2`` is given, cut from the longer side), and :func:`samples_contrast` cuts the ranking
    into ``L`` equal bins, one per label in order.

    Args:
        scorer: an :class:`NSPScorer` (a model with an NSP head; it scores on the device its model is on).
        texts: the texts (``N``).
        prompts: one :class:`LabelPrompt` per label (:func:`make_prompts`, :func:`read_labels_file`), at least 2.
        position: ``prefix`` (the prompt is segment A) or ``suffix``.
        mapping: ``candidates`` or ``samples``.
        texts2: the second texts of a pair task (``samples`` only).
        calibrate: ``None``/``"none"`` or ``"content-free"`` (``candidates`` only).
        batch_size: pairs per forward pass.
        progress: called with the number of pairs scored after each batch (``N × L`` in all; ``N`` for samples).

    Returns:
        A :class:`ZeroShotResult`.

    Raises:
        NlptoolError: no texts, fewer than 2 labels, an unknown mapping/position/calibration, a combination the
            mapping does not take, a prompt that does not fit into the scorer's max length.
    """
    calibrate = _check_zero_shot(texts, prompts, calibrate)
    if mapping not in MAPPINGS:
        raise NlptoolError(f"unknown mapping '{mapping}'; choose {' or '.join(MAPPINGS)}")
    if texts2 is not None and mapping != "samples":
        raise NlptoolError("a pair task (texts2) is scored with the samples mapping")
    if texts2 is not None and len(texts2) != len(texts):
        raise NlptoolError(f"{len(texts)} texts but {len(texts2)} second texts")
    if mapping == "samples" and calibrate != "none":
        raise NlptoolError("content-free calibration applies to the candidates mapping")
    labels, prompt_texts = [p.label for p in prompts], [p.prompt for p in prompts]
    n = len(texts)
    t0 = time.perf_counter()
    if mapping == "samples":
        if texts2 is not None:
            firsts, seconds, shorten = list(texts), list(texts2), "longest"
        else:
            pairs = [pair_order(prompt_texts[0], t, position) for t in texts]
            firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
            shorten = "second" if position == "prefix" else "first"
        single = scorer.score_pairs(firsts, seconds, shorten=shorten, batch_size=batch_size, progress=progress)
        took = time.perf_counter() - t0
        pred = samples_contrast(single, len(prompts))
        return ZeroShotResult(labels, prompt_texts, "nsp", mapping, single, None, pred, n, took, scorer.name)
    scores = scorer.score(texts, prompt_texts, position=position, batch_size=batch_size, progress=progress)
    took = time.perf_counter() - t0
    result = ZeroShotResult(
        labels, prompt_texts, "nsp", mapping, scores, normalise_scores(scores), scores.argmax(axis=1), n * len(labels),
        took, scorer.name,
    )  # fmt: skip
    if calibrate == "content-free":
        cf_texts = content_free_texts(scorer.tokenizer)
        cf_probs = normalise_scores(scorer.score(cf_texts, prompt_texts, position=position))
        _calibrate(result, cf_texts, cf_probs)
    return result


def classify_embedding(
    encoder: Any,
    texts: Sequence[str],
    prompts: Sequence[LabelPrompt],
    *,
    temperature: float = 0.05,
    calibrate: str | None = None,
    batch_size: int = 64,
    device: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ZeroShotResult:
    r"""The embedding baseline of ``zero-shot`` (``--method embedding``): no NSP head needed.

    ``scores[i, y]`` = cosine between the sentence embeddings of text ``i`` and prompt ``y``; ``probs`` =
    ``softmax(scores / temperature)`` per row; ``pred`` = argmax. ``calibrate="content-free"`` divides out the
    mean ``probs`` of the content-free texts as :func:`classify_nsp` does.

    Args:
        encoder: a :class:`nlptool.core.encoder.SentenceEncoder`.
        texts, prompts, calibrate, batch_size: as in :func:`classify_nsp`.
        temperature: ``T`` > 0; 0.05 is the scale (20) all-MiniLM-L6-v2 was trained with.
        device: where to encode (the encoder is moved there); ``None``: where it is.
        progress: called with the number of texts encoded after each batch (``N + L`` in all).

    Returns:
        A :class:`ZeroShotResult` (``pairs`` = ``N × L``; ``seconds``: the encoding of texts and prompts).
    """
    calibrate = _check_zero_shot(texts, prompts, calibrate)
    if not temperature > 0:
        raise NlptoolError(f"the temperature must be positive, got {temperature}")
    labels, prompt_texts = [p.label for p in prompts], [p.prompt for p in prompts]

    def encode(batch: Sequence[str], report: Callable[[int], None] | None = None) -> np.ndarray:
        return encoder.encode(batch, batch_size=batch_size, normalize=True, device=device, progress=report)

    t0 = time.perf_counter()
    text_emb = encode(texts, progress)
    prompt_emb = encode(prompt_texts, progress).astype(np.float64)
    took = time.perf_counter() - t0
    scores = text_emb.astype(np.float64) @ prompt_emb.T
    probs = softmax_rows(scores / temperature)
    n = len(texts)
    result = ZeroShotResult(
        labels, prompt_texts, "embedding", "candidates", scores, probs, scores.argmax(axis=1), n * len(labels), took,
        encoder.name,
    )  # fmt: skip
    if calibrate == "content-free":
        cf_texts = content_free_texts(encoder.tokenizer)
        cf_probs = softmax_rows(encode(cf_texts).astype(np.float64) @ prompt_emb.T / temperature)
        _calibrate(result, cf_texts, cf_probs)
    return result


def _calibrate(result: ZeroShotResult, cf_texts: list[str], cf_probs: np.ndarray) -> None:
    """Contextual calibration of ``result``'s probs in place: new probs and pred, the prior and its inputs kept."""
    result.probs, result.content_free_prior = calibrate_content_free(result.probs, cf_probs)  # type: ignore[arg-type]
    result.pred = result.probs.argmax(axis=1)
    result.content_free_texts = cf_texts


# ---------------------------------------------------------------------------------------------- corpus and pairs

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc e.g i.e u.s u.k inc co corp ltd no gen col lt sgt rep sen gov jan feb mar apr "
    "jun jul aug sep sept oct nov dec mt ft fig al approx dept est".split()
)
_CJK_END = "。！？；…"
_BOUNDARY = re.compile(r"([。！？；…]+|[.!?]+)([”’」』）)\]\"']*)")
_CJK_CHAR = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


_NON_SPACE = re.compile(r"\S")  # re's \s is exactly str.isspace()
_OPENERS = "\"'“‘([「『"
_TOKEN_QUOTES = "(\"'“‘"  # stripped from the front of the word before a period
_LONGEST_ABBREVIATION = max(len(a) for a in _ABBREVIATIONS)


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences at English and Chinese sentence punctuation.

    Rules: a line break always ends a sentence. Chinese ``。！？；…`` (and any closing quotes or brackets after them)
    end a sentence wherever they stand. ASCII ``. ! ?`` end one when followed by white space and then an upper-case
    letter, a digit, an opening quote or bracket, or a CJK character (or directly by a CJK character), unless the
    period closes a known abbreviation (Mr., U.S., Inc., ...) or a single-letter initial (J. Smith).

    Linear in the length of the text: every candidate boundary looks only at the white space after it and at most a
    few characters before it (no copies of the rest of the line, no search over everything before it), so a
    one-line document of a megabyte splits in about a second.
    """
    sentences: list[str] = []
    for line in str(text).splitlines():
        start = 0
        content_end = len(line.rstrip())  # past the last non-space character
        for m in _BOUNDARY.finditer(line):
            end = m.end()
            if end >= content_end:  # only white space follows
                continue
            punct = m.group(1)
            if not any(c in _CJK_END for c in punct):
                nxt_at = _NON_SPACE.search(line, end).start()  # type: ignore[union-attr]  # exists: end < content_end
                spaced = nxt_at > end
                nxt = line[nxt_at]
                cjk_next = bool(_CJK_CHAR.match(nxt))
                if not (cjk_next or (spaced and (nxt.isupper() or nxt.isdigit() or nxt in _OPENERS))):
                    continue
                if punct == ".":
                    token = _word_before(line, m.start(1))
                    if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
                        continue
            piece = line[start:end].strip()
            if piece:
                sentences.append(piece)
            start = end
        piece = line[start:].strip()
        if piece:
            sentences.append(piece)
    return sentences


def _word_before(line: str, stop: int) -> str:
    """The white-space-delimited word ending at ``line[stop]``, lower-cased, without leading quotes or brackets, when
    it could be an abbreviation or an initial; ``""`` otherwise (no word, or too long to be one).

    Looks at a bounded number of characters (plus a run of leading quotes) instead of the whole word, so that a long
    run of text without spaces costs no more than its length over all its boundaries.
    """
    window = _LONGEST_ABBREVIATION + 1
    lo = max(0, stop - window)
    k = stop
    while k > lo and not line[k - 1].isspace():
        k -= 1
    if k > lo or k == 0 or line[k - 1].isspace():  # the word starts within the window
        return line[k:stop].lower().lstrip(_TOKEN_QUOTES)
    # The word is longer than the window: it can only be an abbreviation if everything before its last
    # ``_LONGEST_ABBREVIATION`` characters is leading quotes/brackets, which lstrip would remove.
    j = stop - _LONGEST_ABBREVIATION  # the first character that may belong to the abbreviation
    i = j - 1
    while i >= 0 and line[i] in _TOKEN_QUOTES:
        i -= 1
    if i >= 0 and not line[i].isspace():
        return ""  # a non-quote character further left: the stripped word is longer than any abbreviation
    return line[j:stop].lower().lstrip(_TOKEN_QUOTES)


def read_corpus(
    path: str | Path,
    *,
    text_field: str = "text",
    fmt: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """Read unlabelled documents as lists of sentences.

    Formats (by ``fmt`` or the extension; ``.jsonl``/``.json``/``.ndjson`` are JSONL, anything else plain text):

    - plain text: documents separated by one or more blank lines; every line is split into sentences
      (:func:`split_sentences`), so one paragraph or sentence per line works best;
    - JSONL: one document per line in the field ``text_field`` (a string; its line breaks also end sentences).

    ``-`` reads stdin (JSONL when its line 1 starts with ``{``). Empty documents are skipped. Errors name the file
    (``<stdin>``) and line; text must be UTF-8. ``on_progress(n)`` is called as the file is read, with the UTF-8
    bytes of each line (plain text) or of each document's text (JSONL), for a progress bar.
    """
    from nlptool.core.io import replayable

    name = str(path)
    if name != "-" and not Path(name).is_file():
        raise NlptoolError(f"corpus file {path} does not exist; check the path")
    with replayable(name) as source:
        return _read_corpus(source, name, text_field, fmt, on_progress)


def _read_corpus(
    source: str, name: str, text_field: str, fmt: str | None, on_progress: Callable[[int], None] | None
) -> list[list[str]]:
    from nlptool.core.io import format_from_path, open_lines, read_records

    kind = fmt or format_from_path(name)
    if kind is None and name == "-":  # stdin: JSONL when line 1 starts with '{'
        with open_lines(source, name=name) as lines:
            first = next(iter(lines), "")
        kind = "jsonl" if first.lstrip().startswith("{") else "text"
    kind = kind or "text"
    docs: list[list[str]] = []
    if kind == "jsonl":
        with read_records(source, "jsonl", name=name) as reader:
            for rec in reader:
                if text_field not in rec.data:
                    present = ", ".join(list(rec.data)[:8]) or "none"
                    raise InputError(
                        f"missing (fields present: {present}); choose the field with --text-col",
                        path=name,
                        line=rec.line,
                        field=text_field,
                    )
                value = rec.data[text_field]
                if not isinstance(value, str):
                    raise InputError(
                        f"expected a string, found {type(value).__name__}",
                        path=name,
                        line=rec.line,
                        field=text_field,
                    )
                sents = split_sentences(value)
                if sents:
                    docs.append(sents)
                if on_progress is not None:
                    on_progress(len(value.encode("utf-8")))
        return docs
    if kind not in ("text", "txt"):
        raise NlptoolError(f"corpus {name}: unsupported format '{kind}'; give plain text or JSONL")
    with open_lines(source, name=name) as lines:
        current: list[str] = []
        for line in lines:
            if on_progress is not None:
                on_progress(len(line.encode("utf-8")))
            if not line.strip():
                if current:
                    docs.append(current)
                    current = []
                continue
            current += split_sentences(line)
        if current:
            docs.append(current)
    return docs


@dataclass(frozen=True)
class NSPPair:
    """One NSP training example: segments A and B, ``label`` :data:`IS_NEXT` (B follows A) or :data:`NOT_NEXT`."""

    a: str
    b: str
    label: int


def split_documents(
    docs: Sequence[list[str]], eval_fraction: float, *, seed: int = 0
) -> tuple[list[list[str]], list[list[str]]]:
    """Hold out whole documents (a seeded shuffle; ``round(fraction * n)``, at least 2 when the fraction is > 0) so
    that no held-out pair shares a document with a training pair."""
    if not 0.0 <= eval_fraction < 1.0:
        raise NlptoolError(f"the held-out fraction must be in [0, 1), got {eval_fraction}")
    idx = list(range(len(docs)))
    random.Random(seed).shuffle(idx)
    n_eval = 0 if eval_fraction == 0 else max(2, round(eval_fraction * len(docs)))
    if n_eval and len(docs) - n_eval < 2:
        raise NlptoolError(
            f"the corpus has {len(docs)} documents; holding out {n_eval} leaves fewer than 2 for training "
            "(documents are separated by blank lines, or one per JSONL line); add documents or lower --eval-fraction"
        )
    held = sorted(idx[:n_eval])
    kept = sorted(idx[n_eval:])
    return [docs[i] for i in kept], [docs[i] for i in held]


def build_nsp_pairs(
    docs: Sequence[list[str]], *, seed: int = 0, not_next_prob: float = 0.5, max_pairs: int | None = None
) -> list[NSPPair]:
    """BERT's NSP examples from documents: for every sentence that has a successor in its document, B is that
    successor (IsNext) or, with probability ``not_next_prob``, a random sentence of another document (NotNext).

    Deterministic for a seed. ``max_pairs`` keeps a seeded random subset (in corpus order).
    """
    usable = [i for i, d in enumerate(docs) if d]
    if sum(1 for d in docs if len(d) >= 2) == 0:
        raise NlptoolError(
            "no document has two sentences, so there are no consecutive pairs; separate documents with blank lines "
            "(not every sentence) and check the sentence splitting"
        )
    if len(usable) < 2:
        raise NlptoolError("NotNext pairs need sentences from at least 2 documents; the corpus has 1")
    rng = random.Random(seed)
    pairs: list[NSPPair] = []
    for i, doc in enumerate(docs):
        for k in range(len(doc) - 1):
            if rng.random() < not_next_prob:
                j = i
                while j == i:
                    j = usable[rng.randrange(len(usable))]
                other = docs[j]
                pairs.append(NSPPair(doc[k], other[rng.randrange(len(other))], NOT_NEXT))
            else:
                pairs.append(NSPPair(doc[k], doc[k + 1], IS_NEXT))
    if max_pairs is not None and len(pairs) > max_pairs:
        keep = sorted(rng.sample(range(len(pairs)), max_pairs))
        pairs = [pairs[i] for i in keep]
    return pairs


# ---------------------------------------------------------------------------------------------- training a head


@dataclass
class NspData:
    """A corpus split for NSP training: whole documents held out, and the pairs of each side.

    Attributes:
        documents: documents read; sentences: their sentences.
        train_docs, eval_docs: the documents of each side (:func:`split_documents`).
        pairs: training pairs (:func:`build_nsp_pairs` with the seed, at most ``max_pairs``).
        eval_pairs: held-out pairs (seed + 1; empty without held-out documents).
    """

    documents: int
    sentences: int
    train_docs: list[list[str]]
    eval_docs: list[list[str]]
    pairs: list[NSPPair]
    eval_pairs: list[NSPPair]


def nsp_data(
    docs: Sequence[list[str]], *, eval_fraction: float = 0.05, seed: int = 0, max_pairs: int | None = None
) -> NspData:
    """Hold out ``eval_fraction`` of the documents (:func:`split_documents`) and build the NSP pairs of both sides
    (:func:`build_nsp_pairs`, seeds ``seed`` and ``seed + 1``) from documents as :func:`read_corpus` gives them.

    Raises:
        NlptoolError: no documents, too few documents to hold some out, no document with two sentences.
    """
    if not docs:
        raise NlptoolError("no documents; give a corpus with text")
    train_docs, eval_docs = split_documents(docs, eval_fraction, seed=seed)
    pairs = build_nsp_pairs(train_docs, seed=seed, max_pairs=max_pairs)
    eval_pairs = build_nsp_pairs(eval_docs, seed=seed + 1) if eval_docs else []
    return NspData(len(docs), sum(len(d) for d in docs), train_docs, eval_docs, pairs, eval_pairs)


def load_nsp_model(spec: str | None, *, seed: int | None = None) -> tuple[Any, Any, str]:
    """A BERT-family model with an NSP head, for training one: ``(model, tokenizer, name)``.

    Unlike :meth:`NSPScorer.load`, a checkpoint without a pooler or NSP head is accepted: the missing weights are
    initialised at random (from ``seed`` when given, as ``nsp-adapt --seed`` does), to be trained by :func:`fit`.
    """
    from nlptool.core.models import load_model, load_tokenizer, resolve_model

    resolved = resolve_model(spec, role="a BERT-family model for 'nsp-adapt'")
    model_class = nsp_model_class(resolved)
    tokenizer = load_tokenizer(resolved)
    if seed is not None:
        from nlptool.core.seeding import seed_everything

        seed_everything(seed)
    return load_model(resolved, model_class), tokenizer, resolved.name


def set_trainable(model: Any, train_layers: int | str | None) -> int:
    """Choose what trains: the NSP head (pooler + classifier) and the top ``train_layers`` encoder layers (``0``: the
    head alone), or everything (``"all"`` or ``None``, embeddings included). Frozen layers need no backward pass.

    Returns:
        The number of trainable parameters.

    Raises:
        NlptoolError: a count that is not ``all`` or ``>= 0``, more layers than the model has, a model whose layers
            or pooler cannot be found.
    """
    top = parse_train_layers(train_layers)
    if top is None:
        model.requires_grad_(True)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = getattr(model, model.base_model_prefix, None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if base is None or layers is None:
        raise NlptoolError(
            f"cannot find the encoder layers of {type(model).__name__} to train only the top ones; "
            "use --train-layers all"
        )
    if top > len(layers):
        raise NlptoolError(f"--train-layers {top}: the model has only {len(layers)} layers; use 'all'")
    model.requires_grad_(False)
    for layer in list(layers)[len(layers) - top :]:
        layer.requires_grad_(True)
    pooler = getattr(base, "pooler", None)
    if pooler is None:
        raise NlptoolError(f"{type(model).__name__} has no pooler layer; the NSP head needs one")
    pooler.requires_grad_(True)
    for name, module in model.named_children():
        if name != model.base_model_prefix:
            module.requires_grad_(True)  # the classifier (cls.seq_relationship)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parse_train_layers(value: int | str | None) -> int | None:
    """``"all"`` (or ``None``) → ``None`` (everything trains); an integer ``>= 0`` (or its string) → that many top
    layers. Raises :class:`NlptoolError` otherwise."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        raise NlptoolError(f"'{value}' is neither 'all' nor a number of layers") from None
    if n < 0:
        raise NlptoolError("must be 'all' or >= 0")  # nsp-adapt --train-layers shows it as is
    return n


class NspTask:
    """Next-sentence prediction as a :class:`nlptool.core.tasks.Task`: BERT's pooler + 2-way classifier trained with
    cross-entropy on :class:`NSPPair` examples; the main metric is the NSP accuracy on held-out pairs.

    The "encoder" this task trains is the transformers NSP model itself (``BertForNextSentencePrediction``, from
    :func:`load_nsp_model`): its NSP head is part of it, so :attr:`head` is ``None`` and :meth:`head_parameters` is
    empty; the loss is the model's own (``model(**batch, labels=...).loss``, mean cross-entropy over the batch).

    Args:
        model: the NSP model (sets the max length's cap, ``max_position_embeddings``).
        tokenizer: its tokenizer; pairs are encoded ``[CLS] A [SEP] B [SEP]``, cut from the longer side.
        max_length: tokens per pair.
        eval_batch_size: pairs per forward pass in :meth:`evaluate`.
    """

    name = "nsp"
    metric = "nsp_accuracy"
    greater_is_better = True
    head = None

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 128, eval_batch_size: int = 64) -> None:
        self.tokenizer = tokenizer
        self.max_length = NSPScorer(model, tokenizer, max_length=max_length).max_length
        self.eval_batch_size = eval_batch_size
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def _scorer(self, model: Any) -> NSPScorer:
        return NSPScorer(model, self.tokenizer, max_length=self.max_length)

    def examples(self, pairs: Sequence[NSPPair], model: Any = None) -> list[tuple[list[int], list[int], int]]:
        """``(input_ids, token_type_ids, label)`` per pair, unpadded."""
        scorer = NSPScorer(model, self.tokenizer, max_length=self.max_length)
        encoded = scorer.encode_pairs([p.a for p in pairs], [p.b for p in pairs], shorten="longest")
        return [(ids, types, p.label) for (ids, types), p in zip(encoded, pairs, strict=True)]

    @staticmethod
    def lengths(examples: Sequence[tuple[list[int], list[int], int]]) -> list[int]:
        """Tokens per example, for the loop's ``group_by_length``."""
        return [len(e[0]) for e in examples]

    def collate(self, examples: list[tuple[list[int], list[int], int]]) -> dict[str, Any]:
        """``input_ids``, ``token_type_ids``, ``attention_mask`` (padded to the longest) and ``labels``."""
        import torch

        width = max(len(e[0]) for e in examples)
        ids = torch.full((len(examples), width), self._pad_id, dtype=torch.long)
        types = torch.zeros((len(examples), width), dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, (e_ids, e_types, _) in enumerate(examples):
            k = len(e_ids)
            ids[row, :k] = torch.tensor(e_ids)
            types[row, :k] = torch.tensor(e_types)
            mask[row, :k] = 1
        labels = torch.tensor([e[2] for e in examples], dtype=torch.long)
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": labels}

    def loss(self, encoder: Any, batch: dict[str, Any]) -> Any:
        """The model's NSP cross-entropy on ``batch`` (a mean over its pairs)."""
        return encoder(**batch).loss

    def evaluate(self, encoder: Any, dev: Sequence[NSPPair]) -> dict[str, float]:
        """``{"nsp_accuracy"}``: the share of ``dev`` pairs where P(IsNext) > 0.5 agrees with the label; ``{}`` when
        ``dev`` is empty."""
        if not dev:
            return {}
        from nlptool.core.train import unwrap_model

        p = self._scorer(unwrap_model(encoder)).score_pairs(
            [e.a for e in dev], [e.b for e in dev], shorten="longest", batch_size=self.eval_batch_size
        )
        gold = [e.label == IS_NEXT for e in dev]
        correct = sum((pi > 0.5) == g for pi, g in zip(p, gold, strict=True))
        return {"nsp_accuracy": correct / len(dev)}

    def head_parameters(self) -> list[Any]:
        return []

    def save(self, folder: Path) -> None:
        """The tokenizer (the caller saves the model with ``save_pretrained``)."""
        self.tokenizer.save_pretrained(folder)


@dataclass
class NspFitResult:
    """What :func:`fit` did.

    Attributes:
        metrics: ``nsp-adapt``'s metrics.json: ``documents``, ``sentences``, ``train_documents``, ``train_pairs``,
            ``eval_documents``, ``eval_pairs``, ``steps``, ``train_seconds``, ``wall_seconds``, ``pairs_per_s``,
            ``trainable_parameters``, ``nsp_accuracy_before`` and ``nsp_accuracy`` (``None`` without held-out pairs).
        before: held-out metrics before training (``{}`` without held-out pairs, or off rank 0); on ``resume``, those
            the interrupted run measured (kept with its checkpoints).
        after: held-out metrics of the final weights (``{}`` likewise).
        train_result: the shared loop's :class:`~nlptool.core.train.TrainResult`.
        model_dir: the saved model folder, or ``None`` (no ``out_dir``, or not rank 0).
        main: whether this process wrote the files (rank 0; always without torchrun).
    """

    metrics: dict[str, Any]
    before: dict[str, float]
    after: dict[str, float]
    train_result: Any
    model_dir: Path | None
    main: bool


def fit(
    model: Any,
    tokenizer: Any,
    data: NspData,
    out_dir: str | Path | None = None,
    *,
    train_layers: int | str | None = 2,
    max_length: int = 128,
    config: Any = None,
    on_progress: Callable[[dict], None] | None = None,
) -> NspFitResult:
    """Train ``model``'s NSP head (and its top ``train_layers`` layers) on ``data``'s pairs; save it into ``out_dir``.

    :func:`set_trainable`, then the held-out NSP accuracy (reported to ``on_progress`` as ``{"event": "before",
    "step": 0, "metrics": ...}``; kept with the checkpoints through the loop's ``extra_state``, so a resumed run
    reports the first run's), then :func:`nlptool.core.train.train` with :class:`NspTask` (evaluation each epoch on
    the held-out pairs; the *final* weights are the model, no best-checkpoint selection), then the accuracy after.
    ``nsp-adapt`` is this function plus option parsing and output; with the same seed it gives the same weights.

    Args:
        model: a transformers NSP model (:func:`load_nsp_model`), trained in place and left on the CPU when saved.
        tokenizer: its tokenizer (saved with it).
        data: :func:`nsp_data`.
        out_dir: the model folder (a ``BertForNextSentencePrediction`` folder, plus ``training/`` with the log and
            checkpoints; created when missing), or ``None`` to write nothing.
        train_layers: :func:`set_trainable`'s.
        max_length: tokens per pair.
        config: the loop's :class:`~nlptool.core.train.TrainConfig` (default: ``TrainConfig(group_by_length=True)``;
            ``nsp-adapt``'s defaults are ``batch_size=32, lr=5e-5``); ``metric`` is set here (``nsp_accuracy`` with
            held-out pairs) and ``output_dir`` to ``out_dir/training`` unless it is given. The model is moved to
            ``config.device``.
        on_progress: the loop's progress callback (rank 0), plus the ``before`` event.

    Returns:
        An :class:`NspFitResult`. Under torchrun every rank trains; only rank 0 evaluates and writes.
    """
    import dataclasses

    from nlptool.core.device import resolve_device
    from nlptool.core.tasks import TRAINING_DIR
    from nlptool.core.train import TrainConfig, is_main_process, train

    main = is_main_process()
    trainable = set_trainable(model, train_layers)
    task = NspTask(model, tokenizer, max_length=max_length)
    config = config if config is not None else TrainConfig(group_by_length=True)
    out = Path(out_dir) if out_dir is not None else None
    dev = data.eval_pairs
    config = dataclasses.replace(
        config,
        output_dir=config.output_dir or (str(out / TRAINING_DIR) if out is not None else None),
        metric=task.metric if dev else None,
    )
    model.to(resolve_device(config.device))
    resume = bool(config.resume)
    before = task.evaluate(model, dev) if main and not resume else {}
    if before and on_progress is not None:
        on_progress({"event": "before", "step": 0, "metrics": before})
    examples = task.examples(data.pairs, model)
    t0 = time.perf_counter()
    result = train(
        model,
        examples,
        task.collate,
        task.loss,
        config,
        evaluate=(lambda m: task.evaluate(m, dev)) if dev else None,
        lengths=task.lengths(examples),
        on_progress=on_progress,
        extra_state=None if resume else {"before": before},
    )
    if resume:  # measured by the run that started it, kept with its checkpoints
        before = dict(result.extra_state.get("before") or {})
    wall = time.perf_counter() - t0
    after = task.evaluate(model, dev) if main else {}
    model_dir = None
    if main and out is not None:
        model.to("cpu")
        model.save_pretrained(out)
        task.save(out)
        model_dir = out
    metrics: dict[str, Any] = {
        "documents": data.documents,
        "sentences": data.sentences,
        "train_documents": len(data.train_docs),
        "train_pairs": len(data.pairs),
        "eval_documents": len(data.eval_docs),
        "eval_pairs": len(dev),
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "wall_seconds": wall,
        "pairs_per_s": result.examples_per_s,
        "trainable_parameters": trainable,
        "nsp_accuracy_before": before.get("nsp_accuracy"),
        "nsp_accuracy": after.get("nsp_accuracy"),
    }
    return NspFitResult(metrics, before, after, result, model_dir, main)

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

The embedding baseline (cosine between the text and each filled prompt) lives in the ``zero-shot`` command; it needs
no NSP head and uses :class:`nlptool.core.encoder.SentenceEncoder`.
"""

from __future__ import annotations

import random
import re
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
    "DEFAULT_TEMPLATE",
    "IS_NEXT",
    "NOT_NEXT",
    "NSPPair",
    "NSPScorer",
    "LabelPrompt",
    "POSITIONS",
    "build_nsp_pairs",
    "calibrate_content_free",
    "check_template",
    "fill_template",
    "make_prompts",
    "normalise_scores",
    "nsp_model_class",
    "pair_order",
    "read_corpus",
    "read_labels_file",
    "samples_contrast",
    "split_documents",
    "split_sentences",
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

r"""Named-entity recognition with GlobalPointer heads: data, alignment, windows, the model and prediction.

The canonical format is JSONL, one text per line, with character offsets (``end`` exclusive) into ``text``::

    {"text": "Alice met Bob in Paris.", "entities": [{"start": 0, "end": 5, "label": "PER"}, ...]}

Entities may nest (``"New York University"`` ⊃ ``"New York"``); crossing spans, duplicates and out-of-range
offsets are input errors (file and line named). :mod:`nlptool.core.ner_convert` turns CoNLL, character-BIO,
CLUENER and token-span files into this format.

Alignment
---------
Texts are tokenized by a *fast* tokenizer, whose offset mapping gives each token's character span. An entity
``[start, end)`` becomes the token span ``[i, j]`` with token ``i`` starting at ``start`` and token ``j`` ending at
``end``. An entity whose boundary falls inside a token (``"Washington"`` in ``"Washingtonian"`` as one token) or on
a character no token covers (a space) cannot be represented: it is left out of training and counted in
:class:`AlignmentStats`, never moved to a neighbouring token.

Long texts and memory
---------------------
A text longer than ``max_length`` tokens (special tokens included) is cut into windows of at most ``max_length``
tokens that overlap by ``stride`` tokens. In training, each window is one example and holds the entities that lie
wholly inside it; an entity that fits in no window (longer than a window) is counted as ``unrepresentable``. In
prediction, spans that touch a window's cut edge (not the text's own start or end) are dropped, since the
neighbouring window sees them whole when they are at most ``stride`` tokens long, and the spans of all windows are
mapped back to characters and merged (the highest score wins).

The head scores every (type, start, end) of a window, a ``(B, H, L, L)`` tensor, so memory grows with ``L^2``;
``L <= max_length`` bounds it: at ``max_length=512`` with 10 types, one example's scores and their gradient take
``2 · 10 · 512² · 4`` bytes ≈ 21 MB. Gold labels are built per batch in :func:`collate_windows` (a dense
``(B, H, L, L)`` 0/1 tensor of that batch only), never for the whole data set.

References:
    Su Jianlin, "GlobalPointer:用统一的方式处理嵌套和非嵌套NER", 2021. https://kexue.fm/archives/8373
    Su Jianlin, "Efficient GlobalPointer:少点参数,多点效果", 2022. https://kexue.fm/archives/8877
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nlptool.core.batching import length_batches, pad_ids
from nlptool.core.errors import InputError, NlptoolError

__all__ = [
    "Entity",
    "NerExample",
    "AlignmentStats",
    "Window",
    "NER_CONFIG",
    "NER_HEAD_WEIGHTS",
    "HEADS",
    "validate_entities",
    "parse_example",
    "read_ner_jsonl",
    "label_set",
    "default_stride",
    "encode_windows",
    "collate_windows",
    "SpanNerModel",
    "CPU_MAX_BATCH_TOKENS",
    "predict_spans",
    "longest_entity_tokens",
    "resolve_overlaps",
]

NER_CONFIG = "ner_config.json"
NER_HEAD_WEIGHTS = "ner_head.safetensors"
HEADS = ("egp", "gp")
#: Default cap on padded tokens per prediction batch on CPU (:func:`nlptool.core.batching.length_batches`). Chosen
#: by measurement on CoNLL-2003 *training* texts (2,000 of them, all-MiniLM-L6-v2; ``bench_ner_batching.py``,
#: BENCHMARKS.md): 512 / 768 / 1,024 / 1,536 tokens against plain batches of 64 windows, at 1 and 2 threads, two
#: runs each; 1,024 had the best mean speed-up (1.06×, tied with 1,536 at half the memory).
CPU_MAX_BATCH_TOKENS = 1024
_FORMAT = "nlptool-ner"
_FORMAT_VERSION = 1


@dataclass(frozen=True, order=True)
class Entity:
    """A labelled character span ``text[start:end]`` (``end`` exclusive)."""

    start: int
    end: int
    label: str


@dataclass
class NerExample:
    """One text and its gold entities; ``line`` is the 1-based line of the input file (``None`` if unknown)."""

    text: str
    entities: list[Entity] = field(default_factory=list)
    line: int | None = None


@dataclass
class AlignmentStats:
    """What tokenization and windowing did to a data set (reported by the commands, never silent).

    Attributes:
        texts: texts encoded.
        windows: windows produced (``>= texts``).
        split_texts: texts longer than one window.
        entities: gold entities seen.
        misaligned: entities with a boundary inside a token or on untokenized characters (spaces): not trainable.
        unrepresentable: aligned entities longer than a window: in no window whole.
        content_tokens: non-special tokens.
        unk_tokens: of those, the tokenizer's unknown token.
        examples: up to five ``(line, text of the entity, reason)`` samples of dropped entities.
    """

    texts: int = 0
    windows: int = 0
    split_texts: int = 0
    entities: int = 0
    misaligned: int = 0
    unrepresentable: int = 0
    content_tokens: int = 0
    unk_tokens: int = 0
    examples: list[tuple[int | None, str, str]] = field(default_factory=list)

    @property
    def unk_rate(self) -> float:
        return self.unk_tokens / self.content_tokens if self.content_tokens else 0.0

    @property
    def dropped(self) -> int:
        return self.misaligned + self.unrepresentable


@dataclass
class Window:
    """One model input: a slice of a text's tokens.

    Attributes:
        index: which text (position in the input sequence).
        input_ids: token ids, special tokens included.
        offsets: per token, its ``(start, end)`` characters in the text, or ``None`` for special tokens.
        at_text_start: the window begins at the text's first token (its left edge is no cut).
        at_text_end: the window ends at the text's last token.
        spans: gold ``(type, i, j)`` token spans (inclusive) inside this window.
    """

    index: int
    input_ids: list[int]
    offsets: list[tuple[int, int] | None]
    at_text_start: bool = True
    at_text_end: bool = True
    spans: list[tuple[int, int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


# --------------------------------------------------------------------------------------------------------------------
# Reading and validating


def validate_entities(
    text: str, entities: Sequence[Entity], *, path: str | None = None, line: int | None = None
) -> list[Entity]:
    """Check offsets and nesting; return the entities sorted by ``(start, end, label)``.

    Raises:
        InputError: an offset out of ``[0, len(text)]``, ``start >= end``, an empty label, the same span and label
            twice, or two spans that overlap without one containing the other (crossing brackets).
    """
    n = len(text)
    for e in entities:
        if not (0 <= e.start < e.end <= n):
            raise InputError(
                f"entity [{e.start}, {e.end}) '{e.label}' is out of range for a text of {n} characters "
                "(need 0 <= start < end <= len(text), end exclusive)",
                path=path,
                line=line,
                field="entities",
            )
        if not e.label:
            raise InputError("entity with an empty label", path=path, line=line, field="entities")
    ordered = sorted(entities)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a == b:
            raise InputError(
                f"entity [{a.start}, {a.end}) '{a.label}' appears twice; remove the duplicate",
                path=path,
                line=line,
                field="entities",
            )
    # crossing spans: a.start < b.start < a.end < b.end
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if b.start >= a.end:
                break
            if a.start < b.start < a.end < b.end:
                raise InputError(
                    f"entities [{a.start}, {a.end}) '{text[a.start : a.end]}' and [{b.start}, {b.end}) "
                    f"'{text[b.start : b.end]}' overlap without one containing the other; fix the offsets "
                    "(nested entities are fine, crossing ones are not)",
                    path=path,
                    line=line,
                    field="entities",
                )
    return ordered


def _int_field(value: Any, name: str, path: str, line: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(
            f"'{name}' must be an integer character offset, got {value!r}", path=path, line=line, field="entities"
        )
    return value


def parse_example(obj: dict, *, path: str, line: int, require_entities: bool = True) -> NerExample:
    """Validate one canonical JSON object ``{"text", "entities": [{"start", "end", "label"}]}``.

    An entity may also carry ``"text"``; it must equal ``text[start:end]`` (this catches off-by-one offsets).
    """
    text = obj.get("text")
    if not isinstance(text, str):
        raise InputError(
            'missing or non-string \'text\' (expected {"text": ..., "entities": [...]})',
            path=path,
            line=line,
            field="text",
        )
    raw = obj.get("entities")
    if raw is None:
        if require_entities:
            raise InputError("missing 'entities' (a list, possibly empty)", path=path, line=line, field="entities")
        raw = []
    if not isinstance(raw, list):
        raise InputError(f"'entities' must be a list, got {type(raw).__name__}", path=path, line=line, field="entities")
    entities = []
    for k, item in enumerate(raw):
        if not isinstance(item, dict) or not {"start", "end", "label"} <= set(item):
            raise InputError(
                f"entity {k} must be an object with 'start', 'end' and 'label', got {json.dumps(item)[:80]}",
                path=path,
                line=line,
                field="entities",
            )
        start = _int_field(item["start"], "start", path, line)
        end = _int_field(item["end"], "end", path, line)
        label = item["label"]
        if not isinstance(label, str):
            raise InputError(
                f"entity {k}: 'label' must be a string, got {label!r}", path=path, line=line, field="entities"
            )
        ent = Entity(start, end, label)
        surface = item.get("text")
        if surface is not None and 0 <= start < end <= len(text) and text[start:end] != surface:
            raise InputError(
                f"entity {k}: text[{start}:{end}] is '{text[start:end]}' but the entity says '{surface}'; "
                "the offsets are off (they are characters, end exclusive)",
                path=path,
                line=line,
                field="entities",
            )
        entities.append(ent)
    return NerExample(text, validate_entities(text, entities, path=path, line=line), line)


def read_ner_jsonl(path: str, *, require_entities: bool = True) -> list[NerExample]:
    """Read and validate a canonical NER JSONL file (``-`` for stdin)."""
    from nlptool.core.io import read_records

    with read_records(path, "jsonl") as reader:
        return [parse_example(r.data, path=path, line=r.line, require_entities=require_entities) for r in reader]


def label_set(examples: Iterable[NerExample]) -> list[str]:
    """The sorted entity labels of ``examples``."""
    return sorted({e.label for ex in examples for e in ex.entities})


def default_stride(max_length: int) -> int:
    """Token overlap between windows when none is given: a quarter of the window."""
    return max(1, max_length // 4)


# --------------------------------------------------------------------------------------------------------------------
# Tokenization, alignment and windows


def _check_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise NlptoolError(
            f"the tokenizer {type(tokenizer).__name__} is not a fast (Rust) tokenizer, so it has no offset mapping; "
            "use a model that ships tokenizer.json or a fast tokenizer class"
        )


def encode_windows(
    tokenizer: Any,
    examples: Sequence[NerExample] | Sequence[str],
    *,
    max_length: int,
    stride: int,
    label2id: dict[str, int] | None = None,
    batch_size: int = 256,
) -> tuple[list[Window], AlignmentStats]:
    """Tokenize texts into windows of at most ``max_length`` tokens overlapping by ``stride``, with gold spans.

    Args:
        tokenizer: a fast tokenizer (offset mapping).
        examples: :class:`NerExample` objects (gold spans are aligned) or plain strings (no gold).
        max_length: tokens per window, special tokens included.
        stride: tokens shared by consecutive windows of one text.
        label2id: entity label → type index; gold labels must all be in it.
        batch_size: texts per tokenizer call.

    Returns:
        The windows (in text order) and the :class:`AlignmentStats`.

    Raises:
        NlptoolError: a slow tokenizer, a ``stride`` that leaves no room, a gold label not in ``label2id``.
    """
    _check_fast(tokenizer)
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    room = max_length - specials
    if room < 2:
        raise NlptoolError(f"max length {max_length} leaves {room} tokens for text; use at least {specials + 2}")
    if not 0 <= stride < room:
        raise NlptoolError(
            f"stride {stride} must be smaller than the {room} text tokens of a window (max length {max_length}); "
            f"try {default_stride(max_length)}"
        )
    unk_id = tokenizer.unk_token_id
    stats = AlignmentStats()
    windows: list[Window] = []
    for base in range(0, len(examples), batch_size):
        chunk = examples[base : base + batch_size]
        texts = [ex if isinstance(ex, str) else ex.text for ex in chunk]
        enc = tokenizer(
            texts,
            truncation=True,
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            add_special_tokens=True,
        )
        mapping = enc["overflow_to_sample_mapping"]
        per_text: dict[int, list[Window]] = {}
        for w, sample in enumerate(mapping):
            seq_ids = enc.sequence_ids(w)
            offsets = [
                (int(s), int(e)) if sid is not None else None
                for (s, e), sid in zip(enc["offset_mapping"][w], seq_ids, strict=True)
            ]
            ids = list(enc["input_ids"][w])
            for tid, off in zip(ids, offsets, strict=True):
                if off is not None:
                    stats.content_tokens += 1
                    stats.unk_tokens += int(unk_id is not None and tid == unk_id)
            per_text.setdefault(sample, []).append(Window(base + sample, ids, offsets))
        for sample in range(len(chunk)):
            wins = per_text.get(sample) or []
            if not wins:  # the tokenizer gives one window even for empty text; keep the invariant anyway
                continue
            for k, win in enumerate(wins):
                win.at_text_start = k == 0
                win.at_text_end = k == len(wins) - 1
            stats.texts += 1
            stats.windows += len(wins)
            stats.split_texts += int(len(wins) > 1)
            ex = chunk[sample]
            if isinstance(ex, NerExample):
                _align(ex, wins, label2id or {}, stats)
            windows.extend(wins)
    return windows, stats


def _align(ex: NerExample, wins: list[Window], label2id: dict[str, int], stats: AlignmentStats) -> None:
    starts: set[int] = set()
    ends: set[int] = set()
    for win in wins:
        for off in win.offsets:
            if off is not None and off[1] > off[0]:
                starts.add(off[0])
                ends.add(off[1])
    # per window: char start -> first token index, char end -> last token index
    maps = []
    for win in wins:
        s_map: dict[int, int] = {}
        e_map: dict[int, int] = {}
        for t, off in enumerate(win.offsets):
            if off is None or off[1] <= off[0]:
                continue
            s_map.setdefault(off[0], t)
            e_map[off[1]] = t
        maps.append((s_map, e_map))
    for ent in ex.entities:
        stats.entities += 1
        if ent.label not in label2id:
            raise InputError(
                f"entity label '{ent.label}' is not one of the model's labels ({', '.join(sorted(label2id))})",
                line=ex.line,
                field="entities",
            )
        if ent.start not in starts or ent.end not in ends:
            stats.misaligned += 1
            if len(stats.examples) < 5:
                stats.examples.append((ex.line, ex.text[ent.start : ent.end], "boundary inside a token"))
            continue
        placed = False
        for win, (s_map, e_map) in zip(wins, maps, strict=True):
            i, j = s_map.get(ent.start), e_map.get(ent.end)
            if i is not None and j is not None and i <= j:
                win.spans.append((label2id[ent.label], i, j))
                placed = True
        if not placed:
            stats.unrepresentable += 1
            if len(stats.examples) < 5:
                stats.examples.append((ex.line, ex.text[ent.start : ent.end], "longer than a window"))


def collate_windows(windows: Sequence[Window], num_types: int, pad_id: int, *, with_labels: bool = True) -> dict:
    """Pad a batch of windows; with labels, build this batch's dense ``(B, H, L, L)`` 0/1 gold tensor."""
    ids, mask = pad_ids([w.input_ids for w in windows], pad_id)
    b, length = ids.shape
    batch = {"input_ids": ids, "attention_mask": mask}
    if with_labels:
        labels = torch.zeros((b, num_types, length, length), dtype=torch.uint8)
        for k, w in enumerate(windows):
            for t, i, j in w.spans:
                labels[k, t, i, j] = 1
        batch["labels"] = labels
    return batch


# --------------------------------------------------------------------------------------------------------------------
# The model


class SpanNerModel(torch.nn.Module):
    """An encoder (any transformers ``AutoModel``) and a GlobalPointer or Efficient GlobalPointer head.

    ``forward(input_ids, attention_mask) -> (B, H, L, L)`` span logits. Saved as a ``save_pretrained`` folder of the
    encoder and tokenizer plus ``ner_head.safetensors`` (the head) and ``ner_config.json`` (labels and settings).

    Args:
        encoder: the transformer (hidden states from ``last_hidden_state``).
        labels: entity types, in head order.
        head: ``egp`` (Efficient GlobalPointer) or ``gp`` (GlobalPointer).
        head_size: the query/key size ``d`` (64 in Su's posts).
        max_length: tokens per window that prediction uses (the training setting).
        stride: window overlap for long texts.
    """

    def __init__(
        self,
        encoder: Any,
        labels: Sequence[str],
        *,
        head: str = "egp",
        head_size: int = 64,
        max_length: int = 128,
        stride: int | None = None,
    ) -> None:
        super().__init__()
        from nlptool.core.globalpointer import EfficientGlobalPointer, GlobalPointer

        if head not in HEADS:
            raise NlptoolError(f"unknown head '{head}'; choose one of {', '.join(HEADS)}")
        if not labels:
            raise NlptoolError("no entity labels: the training data has no entities")
        self.encoder = encoder
        self.labels = list(labels)
        self.head_kind = head
        self.head_size = head_size
        self.max_length = max_length
        self.stride = default_stride(max_length) if stride is None else stride
        hidden = int(encoder.config.hidden_size)
        cls = EfficientGlobalPointer if head == "egp" else GlobalPointer
        self.head = cls(hidden, len(self.labels), head_size)
        pooler = getattr(encoder, "pooler", None)
        if pooler is not None:
            pooler.requires_grad_(False)  # unused: no gradient (DDP insists), no weight decay

    @property
    def num_types(self) -> int:
        return len(self.labels)

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden, attention_mask)

    def settings(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "labels": self.labels,
            "head": self.head_kind,
            "head_size": self.head_size,
            "max_length": self.max_length,
            "stride": self.stride,
            "rope": True,
        }

    def save(self, path: str | os.PathLike, tokenizer: Any, extra: dict[str, Any] | None = None) -> None:
        """Write the encoder and tokenizer (``save_pretrained``), the head weights and ``ner_config.json``."""
        from safetensors.torch import save_file
        from transformers.utils import logging as hf_logging

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # "Writing model shards" bars: core code does not print
        try:
            self.encoder.save_pretrained(out)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        tokenizer.save_pretrained(out)
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, str(out / NER_HEAD_WEIGHTS))
        doc = {**self.settings(), **(extra or {})}
        (out / NER_CONFIG).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple[SpanNerModel, Any, dict[str, Any]]:
        """Load a folder written by :meth:`save`; returns ``(model, tokenizer, config)``.

        A folder of another kind (a sentence encoder, a kg-qa model) is refused with a line that says what it is, and
        a damaged or incomplete folder with a line that names the file (:mod:`nlptool.core.models`)."""
        from transformers import AutoModel

        from nlptool.core.models import (
            NER,
            ResolvedModel,
            check_model_folder,
            damaged,
            load_model,
            load_safetensors,
            load_tokenizer,
            read_json_file,
        )

        folder = check_model_folder(
            path, accept={NER}, role="an NER model folder", hint="train one with 'nlptool ner train'"
        )
        cfg_path = folder / NER_CONFIG
        if not cfg_path.is_file():
            raise NlptoolError(
                f"{folder} has no {NER_CONFIG}, so the NER model folder is incomplete; retrain it with 'nlptool ner "
                "train'"
            )
        cfg = read_json_file(cfg_path)
        if cfg.get("format") != _FORMAT:
            raise damaged(cfg_path, f"format {cfg.get('format')!r}, not '{_FORMAT}'")
        labels, head = cfg.get("labels"), cfg.get("head")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise damaged(cfg_path, "'labels' is not a non-empty list of strings")
        if head not in HEADS:
            raise damaged(cfg_path, f"'head' is {head!r}, not one of {', '.join(HEADS)}")
        for key in ("head_size", "max_length", "stride"):
            value = cfg.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise damaged(cfg_path, f"'{key}' is {value!r}, not a positive integer")
        weights = folder / NER_HEAD_WEIGHTS
        head_state = load_safetensors(weights)  # before the encoder: a damaged folder fails fast
        resolved = ResolvedModel("local", str(folder.resolve()), str(path))
        tokenizer = load_tokenizer(resolved)
        encoder = load_model(resolved, AutoModel)
        model = cls(
            encoder, labels, head=head, head_size=cfg["head_size"], max_length=cfg["max_length"], stride=cfg["stride"]
        )
        try:
            missing, unexpected = model.head.load_state_dict(head_state, strict=False)
        except RuntimeError as exc:  # tensor shapes that do not fit the head
            raise damaged(weights, f"{str(exc).strip().splitlines()[-1].strip()[:160]}") from None
        if missing or unexpected:
            raise damaged(
                weights,
                f"it does not match a '{head}' head with {len(labels)} types: missing {missing}, unexpected "
                f"{unexpected}",
            )
        model.eval()
        return model, tokenizer, cfg


# --------------------------------------------------------------------------------------------------------------------
# Prediction


def predict_spans(
    model: SpanNerModel,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_batch_tokens: int | None = None,
    threshold: float = 0.0,
    device: str = "cpu",
    max_length: int | None = None,
    stride: int | None = None,
    max_span_tokens: int | None = None,
) -> tuple[list[list[dict[str, Any]]], AlignmentStats]:
    """Entities in each text: ``{"start", "end", "label", "text", "score"}`` (character offsets, end exclusive).

    Windows are sorted by length and run in batches of at most ``batch_size`` windows and ``max_batch_tokens``
    padded tokens (:func:`length_batches`; ``None`` or 0: no token cap); spans with score ``> threshold`` are kept,
    mapped back to characters and merged across windows (same span and label: the highest score). Nested spans are
    all returned; see :func:`resolve_overlaps` for flat output. Each text's entities are sorted by
    ``(start, -end, label)``. ``max_span_tokens``: ignore spans longer than this many tokens (``None``/0: no cap;
    :func:`longest_entity_tokens` of the training windows is the usual cap).
    """
    from nlptool.core.globalpointer import decode_spans

    max_length = max_length or model.max_length
    stride = model.stride if stride is None else stride
    windows, stats = encode_windows(tokenizer, list(texts), max_length=max_length, stride=stride)
    found: list[dict[tuple[int, int, str], float]] = [{} for _ in texts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for idx in length_batches([len(w) for w in windows], batch_size, max_batch_tokens):
                batch_w = [windows[k] for k in idx]
                batch = collate_windows(batch_w, model.num_types, pad_id, with_labels=False)
                logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
                for win, spans in zip(batch_w, decode_spans(logits.float(), threshold, max_span_tokens), strict=True):
                    _collect(win, spans, model.labels, found[win.index])
    finally:
        model.train(was_training)
    out = []
    for text, spans in zip(texts, found, strict=True):
        items = [
            {"start": s, "end": e, "label": lab, "text": text[s:e], "score": score}
            for (s, e, lab), score in spans.items()
        ]
        items.sort(key=lambda d: (d["start"], -d["end"], d["label"]))
        out.append(items)
    return out, stats


def longest_entity_tokens(windows: Sequence[Window]) -> int | None:
    """The longest gold entity of the windows, in tokens (``j - i + 1``); ``None`` when they hold no entity."""
    return max((j - i + 1 for w in windows for _, i, j in w.spans), default=None)


def _collect(
    win: Window, spans: list[tuple[int, int, int, float]], labels: list[str], into: dict[tuple[int, int, str], float]
) -> None:
    content = [t for t, off in enumerate(win.offsets) if off is not None]
    if not content:
        return
    first, last = content[0], content[-1]
    for t, i, j, score in spans:
        oi, oj = win.offsets[i], win.offsets[j]
        if oi is None or oj is None:
            continue
        if (i == first and not win.at_text_start) or (j == last and not win.at_text_end):
            continue  # touches a cut: the neighbouring window sees this span whole
        key = (oi[0], oj[1], labels[t])
        if score > into.get(key, float("-inf")):
            into[key] = score


def resolve_overlaps(entities: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat output: keep entities greedily by descending score, dropping any that overlaps one already kept.

    Returns the kept entities sorted by start.
    """
    kept: list[dict[str, Any]] = []
    for ent in sorted(entities, key=lambda d: (-d["score"], d["start"], d["end"])):
        if all(ent["end"] <= k["start"] or ent["start"] >= k["end"] for k in kept):
            kept.append(ent)
    kept.sort(key=lambda d: (d["start"], d["end"]))
    return kept


def stats_dict(stats: AlignmentStats) -> dict[str, Any]:
    """The stats as a JSON-ready dict (with the UNK rate)."""
    d = asdict(stats)
    d["unk_rate"] = stats.unk_rate
    d["examples"] = [list(x) for x in stats.examples]
    return d

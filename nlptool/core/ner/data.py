r"""Named-entity recognition with GlobalPointer heads: data, alignment, windows, the model, prediction and training.

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

Training (the task layer)
-------------------------
- :class:`TokenEncoder` is the shared encoder of token-level tasks: a transformer and its fast tokenizer, token
  states out, ``save`` as ``save_pretrained`` folders.
- :class:`NerTask` is the :class:`nlptool.core.tasks.Task` of span NER: :meth:`NerTask.windows` turns texts into
  training windows, :meth:`NerTask.collate` pads them and builds the batch's gold tensor, :meth:`NerTask.loss` is
  :func:`~nlptool.core.globalpointer.global_pointer_loss` of its head on the encoder's token states,
  :meth:`NerTask.evaluate` is :func:`evaluate_examples`' micro F1 (the main metric), :meth:`NerTask.save` writes the
  head and ``ner_config.json``.
- :func:`fit` trains a :class:`TokenEncoder` and a fresh head through the shared loop (:mod:`nlptool.core.train`,
  via :func:`nlptool.core.tasks.fit_task`; the head at ``lr × head_lr_scale``) and returns a :class:`FitResult`;
  ``nlptool ner train`` is a thin wrapper over it. :func:`evaluate_examples` is what ``nlptool ner eval`` reports,
  :class:`SpanNerModel` the saved model (:meth:`SpanNerModel.load`) and :func:`predict_spans` what ``ner predict``
  writes.

Example (from Python)::

    from nlptool.core.ner import SpanNerModel, TokenEncoder, fit, predict_spans, read_ner_jsonl
    from nlptool.core.seeding import seed_everything
    from nlptool.core.train import TrainConfig

    seed_everything(0)  # before the encoder is loaded and the head built, as `ner train --seed 0`
    encoder = TokenEncoder.load("my-base-model")
    result = fit(encoder, read_ner_jsonl("train.jsonl"), "ner-model", dev=read_ner_jsonl("dev.jsonl"),
                 config=TrainConfig(epochs=3, batch_size=16, lr=5e-5, group_by_length=True))
    model, tokenizer, cfg = SpanNerModel.load(result.model_dir)
    entities, stats = predict_spans(model, tokenizer, ["Anna Berg visited Oslo ."],
                                    max_span_tokens=cfg["max_span_tokens"])

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
    "TokenEncoder",
    "token_states",
    "make_head",
    "head_settings",
    "save_transformer",
    "write_head",
    "CPU_MAX_BATCH_TOKENS",
    "predict_spans",
    "longest_entity_tokens",
    "resolve_overlaps",
    "stats_dict",
    "check_labels",
    "batch_token_cap",
    "evaluate_examples",
    "NerTask",
    "DEFAULT_HEAD_LR_SCALE",
    "FitResult",
    "fit",
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

    def merge(self, other: AlignmentStats) -> AlignmentStats:
        """Add ``other``'s counts to these (in place; e.g. over the chunks of a streamed input) and keep up to five
        dropped-entity samples in all; returns ``self``."""
        for name in _STAT_COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.examples.extend(other.examples[: max(0, 5 - len(self.examples))])
        return self


_STAT_COUNTS = (
    "texts",
    "windows",
    "split_texts",
    "entities",
    "misaligned",
    "unrepresentable",
    "content_tokens",
    "unk_tokens",
)


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


def make_head(kind: str, encoder: Any, num_types: int, head_size: int) -> torch.nn.Module:
    """A fresh :class:`~nlptool.core.globalpointer.EfficientGlobalPointer` (``egp``) or
    :class:`~nlptool.core.globalpointer.GlobalPointer` (``gp``) over ``encoder``'s hidden size (its
    ``config.hidden_size``; a :class:`TokenEncoder` or sentence encoder: its transformer's)."""
    from nlptool.core.globalpointer import EfficientGlobalPointer, GlobalPointer

    if kind not in HEADS:
        raise NlptoolError(f"unknown head '{kind}'; choose one of {', '.join(HEADS)}")
    hidden = int(_transformer(encoder).config.hidden_size)
    cls = EfficientGlobalPointer if kind == "egp" else GlobalPointer
    return cls(hidden, num_types, head_size)


def _freeze_pooler(transformer: Any) -> None:
    pooler = getattr(transformer, "pooler", None)
    if pooler is not None:
        pooler.requires_grad_(False)  # unused: no gradient (DDP insists), no weight decay


def head_settings(labels: Sequence[str], head: str, head_size: int, max_length: int, stride: int) -> dict[str, Any]:
    """The settings part of ``ner_config.json`` (format, labels, head kind and size, window length and stride)."""
    return {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "labels": list(labels),
        "head": head,
        "head_size": head_size,
        "max_length": max_length,
        "stride": stride,
        "rope": True,
    }


def save_transformer(model: Any, tokenizer: Any, path: str | os.PathLike) -> None:
    """``save_pretrained`` of a transformer and its tokenizer into ``path`` (created), without progress bars."""
    from transformers.utils import logging as hf_logging

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" bars: core code does not print
    try:
        model.save_pretrained(out)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(out)


def write_head(path: str | os.PathLike, head: torch.nn.Module, config: dict[str, Any]) -> None:
    """Write a span head's weights (``ner_head.safetensors``) and ``config`` (``ner_config.json``) into ``path``."""
    from safetensors.torch import save_file

    out = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(out / NER_HEAD_WEIGHTS))
    (out / NER_CONFIG).write_text(json.dumps(config, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


class TokenEncoder(torch.nn.Module):
    """A transformer and its tokenizer as the shared encoder of token-level tasks (:class:`NerTask`): token states
    out, ``save(folder)`` as ``save_pretrained`` folders (what an NER model folder holds besides its head).

    Attributes:
        model: the transformer (``AutoModel``); its pooler, unused by span heads, is frozen.
        tokenizer: its fast tokenizer.
        name: what logs and ``ner_config.json``'s ``base_model`` call it (the model id or folder for :meth:`load`).

    Parameters are named ``model.*``, as in :class:`~nlptool.core.encoder.SentenceEncoder`, whose ``model`` and
    ``tokenizer`` :class:`NerTask` uses the same way.
    """

    def __init__(self, model: Any, tokenizer: Any, name: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        config = getattr(model, "config", None)
        self.name: str = name or str(getattr(config, "_name_or_path", "") or type(model).__name__)
        _freeze_pooler(model)

    @classmethod
    def load(cls, spec: str | os.PathLike | None, *, role: str = "a base encoder for NER") -> TokenEncoder:
        """Load a model folder, hub id or (``None``) the bundled default (:func:`nlptool.core.models.resolve_model`;
        ``role`` names it in errors)."""
        from transformers import AutoModel

        from nlptool.core.models import load_model, load_tokenizer, resolve_model

        resolved = resolve_model(None if spec is None else str(spec), role=role)
        tokenizer = load_tokenizer(resolved)
        return cls(load_model(resolved, AutoModel), tokenizer, resolved.name)

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        """``(B, L)`` ids and mask → ``(B, L, hidden)`` last hidden states."""
        return token_states(self, input_ids, attention_mask)

    def save(self, path: str | os.PathLike) -> None:
        """The transformer and tokenizer, ``save_pretrained`` into ``path``."""
        save_transformer(self.model, self.tokenizer, path)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # Checkpoints of ``ner train`` before the task layer held a SpanNerModel, whose transformer parameters are
        # ``encoder.*`` where this module has ``encoder.model.*``: rename them, so --resume continues those runs.
        for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + "model.")]:
            state_dict[prefix + "model." + key[len(prefix) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)


def token_states(encoder: Any, input_ids: Any, attention_mask: Any) -> Any:
    """The last hidden states of ``encoder``'s transformer: its ``model`` (a :class:`TokenEncoder` or a
    :class:`~nlptool.core.encoder.SentenceEncoder`), else ``encoder`` itself (a plain ``AutoModel``)."""
    return _transformer(encoder)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _transformer(encoder: Any) -> Any:
    return encoder if hasattr(encoder, "config") else encoder.model


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
        head_module: an existing head to use (e.g. :attr:`NerTask.head`, shared, not copied) instead of a new one.
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
        head_module: torch.nn.Module | None = None,
    ) -> None:
        super().__init__()
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
        self.head = head_module if head_module is not None else make_head(head, encoder, len(self.labels), head_size)
        _freeze_pooler(encoder)

    @property
    def num_types(self) -> int:
        return len(self.labels)

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden, attention_mask)

    def settings(self) -> dict[str, Any]:
        return head_settings(self.labels, self.head_kind, self.head_size, self.max_length, self.stride)

    def save(self, path: str | os.PathLike, tokenizer: Any, extra: dict[str, Any] | None = None) -> None:
        """Write the encoder and tokenizer (``save_pretrained``), the head weights and ``ner_config.json``."""
        save_transformer(self.encoder, tokenizer, path)
        write_head(path, self.head, {**self.settings(), **(extra or {})})

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


def check_labels(examples: Iterable[NerExample], labels: Sequence[str], path: str | None, what: str) -> None:
    """Raise :class:`InputError` (file and line) at the first gold entity whose label is not in ``labels`` (those of
    ``what``: the training data, a model)."""
    known = set(labels)
    for ex in examples:
        for e in ex.entities:
            if e.label not in known:
                raise InputError(
                    f"entity label '{e.label}' is unknown to {what} (labels: {', '.join(labels)}); remove or rename it",
                    path=path,
                    line=ex.line,
                    field="entities",
                )


def batch_token_cap(max_batch_tokens: int | None, device: Any) -> int:
    """The padded-token cap per prediction batch: ``max_batch_tokens`` when given (0: none), else
    :data:`CPU_MAX_BATCH_TOKENS` on CPU and none (0) on other devices."""
    if max_batch_tokens is not None:
        return max_batch_tokens
    return CPU_MAX_BATCH_TOKENS if str(device).startswith("cpu") else 0


# --------------------------------------------------------------------------------------------------------------------
# Evaluation


def evaluate_examples(
    model: SpanNerModel,
    tokenizer: Any,
    examples: Sequence[NerExample],
    *,
    batch_size: int = 64,
    device: str = "cpu",
    max_batch_tokens: int | None = None,
    threshold: float = 0.0,
    flat: bool = False,
    max_span_tokens: int | None = None,
) -> dict[str, Any]:
    """Predict ``examples`` and score the spans against their gold entities: what ``nlptool ner eval`` reports.

    A predicted entity is correct when its start, end and label all match a gold one (exact spans; CoNLL / seqeval's
    entity-level measure): :func:`nlptool.core.metrics.span_prf` (micro, per type, macro) plus
    :func:`~nlptool.core.metrics.nested_recall`.

    Args:
        model: a :class:`SpanNerModel` (e.g. from :meth:`SpanNerModel.load`), already on ``device``.
        tokenizer: its fast tokenizer.
        examples: gold texts (:func:`read_ner_jsonl`).
        batch_size, max_batch_tokens, threshold, max_span_tokens: as :func:`predict_spans`;
            ``max_batch_tokens=None``: :func:`batch_token_cap`'s default for ``device``.
        device: where the inputs go.
        flat: resolve overlapping predictions (:func:`resolve_overlaps`) before scoring.

    Returns:
        ``{"metrics", "predictions", "alignment", "seconds"}``: ``metrics`` is ``ner eval``'s metrics document
        (``micro``, ``macro``, ``per_type``, ``nested_gold``, ``nested_recall``, ``texts``, ``texts_per_s``,
        ``alignment``: :func:`stats_dict`), ``predictions`` the entities per text (as :func:`predict_spans`),
        ``alignment`` the :class:`AlignmentStats` and ``seconds`` the prediction time.
    """
    import time

    from nlptool.core.metrics import nested_recall, span_prf

    t0 = time.perf_counter()
    preds, stats = predict_spans(
        model,
        tokenizer,
        [ex.text for ex in examples],
        batch_size=batch_size,
        max_batch_tokens=batch_token_cap(max_batch_tokens, device),
        threshold=threshold,
        device=device,
        max_span_tokens=max_span_tokens,
    )
    seconds = time.perf_counter() - t0
    if flat:
        preds = [resolve_overlaps(p) for p in preds]
    gold = [[(e.start, e.end, e.label) for e in ex.entities] for ex in examples]
    pred = [[(p["start"], p["end"], p["label"]) for p in ps] for ps in preds]
    metrics: dict[str, Any] = span_prf(gold, pred)
    metrics.update(nested_recall(gold, pred))
    metrics["texts"] = len(examples)
    metrics["texts_per_s"] = len(examples) / seconds if seconds > 0 else 0.0
    metrics["alignment"] = stats_dict(stats)
    return {"metrics": metrics, "predictions": preds, "alignment": stats, "seconds": seconds}


# --------------------------------------------------------------------------------------------------------------------
# The task and fit


class NerTask:
    """Span NER with a GlobalPointer / Efficient GlobalPointer head on a shared encoder (a
    :class:`nlptool.core.tasks.Task`).

    Examples are :class:`Window` objects (:meth:`windows`: texts cut into windows of ``max_length`` tokens with
    their gold token spans); a batch is their padded ids and mask plus the batch's dense ``(B, H, L, L)`` 0/1 gold
    tensor (:func:`collate_windows`); the loss runs the encoder's transformer, scores every span with :attr:`head`
    and applies Su's multilabel categorical cross-entropy over all spans
    (:func:`nlptool.core.globalpointer.global_pointer_loss`). Evaluation is exact-span precision/recall/F1 on dev
    texts (:func:`evaluate_examples`; micro F1 is the main metric). :meth:`save` writes ``ner_head.safetensors``
    and ``ner_config.json``; with the encoder's ``save_pretrained`` folder (:meth:`TokenEncoder.save`) that is a
    folder :meth:`SpanNerModel.load` reads.

    Args:
        encoder: the shared encoder (a :class:`TokenEncoder`, or anything with the transformer as ``model`` and a
            fast ``tokenizer``): its hidden size sizes the head, its tokenizer makes windows, its ``name`` is
            recorded as ``base_model``. It is not a submodule of the task.
        labels: the entity types, in head order.
        head: ``egp`` (Efficient GlobalPointer) or ``gp`` (GlobalPointer).
        head_size: the head's query/key size ``d`` (even: RoPE rotates pairs).
        max_length: tokens per window (special tokens included), in training and in the saved model.
        stride: tokens shared by consecutive windows of a long text (default: :func:`default_stride`).
        max_span_tokens: the span cap of evaluation and of the saved model's decoding; :func:`fit` sets it to the
            training data's longest entity.
        eval_batch_size: windows per forward pass in :meth:`evaluate`.
        eval_device: where :meth:`evaluate` runs; ``None``: where the encoder is.

    Raises:
        NlptoolError: an unknown head, no labels, an odd head size.
    """

    name = "ner"
    metric = "f1"
    greater_is_better = True

    def __init__(
        self,
        encoder: Any,
        labels: Sequence[str],
        *,
        head: str = "egp",
        head_size: int = 64,
        max_length: int = 128,
        stride: int | None = None,
        max_span_tokens: int | None = None,
        eval_batch_size: int = 64,
        eval_device: str | None = None,
    ) -> None:
        if head not in HEADS:
            raise NlptoolError(f"unknown head '{head}'; choose one of {', '.join(HEADS)}")
        if not labels:
            raise NlptoolError("no entity labels: the training data has no entities")
        if head_size < 2 or head_size % 2:
            raise NlptoolError(f"head size {head_size} must be even and at least 2 (RoPE rotates pairs)")
        self.labels = list(labels)
        self.head_kind = head
        self.head_size = head_size
        self.max_length = max_length
        self.stride = default_stride(max_length) if stride is None else stride
        self.max_span_tokens = max_span_tokens
        self.eval_batch_size = eval_batch_size
        self.eval_device = eval_device
        self.tokenizer = encoder.tokenizer
        self.base_model: str | None = getattr(encoder, "name", None)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.head: torch.nn.Module = make_head(head, encoder, len(self.labels), head_size)

    @property
    def label2id(self) -> dict[str, int]:
        return {lab: i for i, lab in enumerate(self.labels)}

    def windows(self, examples: Sequence[NerExample]) -> tuple[list[Window], AlignmentStats]:
        """The training examples of ``examples``: windows with gold spans (:func:`encode_windows`) and what
        alignment and windowing did (report :attr:`AlignmentStats.dropped` entities: they are not trained on)."""
        return encode_windows(
            self.tokenizer, examples, max_length=self.max_length, stride=self.stride, label2id=self.label2id
        )

    @staticmethod
    def lengths(windows: Sequence[Window]) -> list[int]:
        """Tokens per window, for the loop's ``group_by_length``."""
        return [len(w) for w in windows]

    def collate(self, windows: list[Window]) -> dict[str, torch.Tensor]:
        """``{"input_ids", "attention_mask"}`` ``(B, L)`` and ``"labels"`` ``(B, H, L, L)`` uint8."""
        return collate_windows(windows, len(self.labels), self.pad_id)

    def logits(self, encoder: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, H, L, L)`` span scores of :attr:`head` on ``encoder``'s token states (padding and ``i > j``:
        a large negative)."""
        return self.head(token_states(encoder, input_ids, attention_mask), attention_mask)

    def loss(self, encoder: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """:func:`~nlptool.core.globalpointer.global_pointer_loss` of :meth:`logits` against ``batch["labels"]``."""
        from nlptool.core.globalpointer import global_pointer_loss

        return global_pointer_loss(self.logits(encoder, batch["input_ids"], batch["attention_mask"]), batch["labels"])

    def model(self, encoder: Any) -> SpanNerModel:
        """A :class:`SpanNerModel` over ``encoder``'s transformer and this task's head (shared, not copied), in
        ``encoder``'s train/eval mode: what :func:`predict_spans` and :func:`evaluate_examples` take."""
        transformer = _transformer(encoder)
        net = SpanNerModel(
            transformer,
            self.labels,
            head=self.head_kind,
            head_size=self.head_size,
            max_length=self.max_length,
            stride=self.stride,
            head_module=self.head,
        )
        return net.train(transformer.training)

    def evaluate(self, encoder: Any, dev: Sequence[NerExample]) -> dict[str, float]:
        """``{"f1", "precision", "recall"}`` (micro, exact spans) on ``dev`` (:func:`evaluate_examples`)."""
        device = self.eval_device or str(next(self.head.parameters()).device)
        result = evaluate_examples(
            self.model(encoder),
            self.tokenizer,
            dev,
            batch_size=self.eval_batch_size,
            device=device,
            max_span_tokens=self.max_span_tokens,
        )
        micro = result["metrics"]["micro"]
        return {"f1": micro["f1"], "precision": micro["precision"], "recall": micro["recall"]}

    def head_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.head.parameters())

    def config(self) -> dict[str, Any]:
        """What ``ner_config.json`` holds: :func:`head_settings`, ``base_model`` and ``max_span_tokens``."""
        settings = head_settings(self.labels, self.head_kind, self.head_size, self.max_length, self.stride)
        return {**settings, "base_model": self.base_model, "max_span_tokens": self.max_span_tokens}

    def save(self, folder: Path) -> None:
        """Write ``ner_head.safetensors`` and ``ner_config.json`` into ``folder`` (the encoder is saved apart)."""
        write_head(folder, self.head, self.config())


#: The head's learning rate is the encoder's times this by default (``ner train --head-lr-scale``; BENCHMARKS.md).
DEFAULT_HEAD_LR_SCALE = 30.0


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        metrics: ``train_texts``, ``train_windows``, ``labels``, ``steps``, ``train_seconds``, ``windows_per_s``,
            ``alignment`` (:func:`stats_dict`); with dev texts (and at least one evaluation) also ``dev_texts``,
            ``dev_f1``, ``dev_precision``, ``dev_recall`` (of the best evaluation) and ``best_step``. The schema of
            ``ner train``'s ``metrics.json``.
        evaluations: the loop's ``eval`` events (``step``, ``metrics``: ``f1``, ``precision``, ``recall``).
        best_step: the step of the best dev F1, or ``None``.
        model_dir: the saved model folder (loads with :meth:`SpanNerModel.load`), or ``None``.
        alignment: what tokenization did to the training data (:class:`AlignmentStats`).
        fit: the task-level :class:`~nlptool.core.tasks.TaskFit` (the loop's full ``TrainResult`` included).
        task: the :class:`NerTask` that was trained (its ``head`` holds the final weights, not the best).
    """

    metrics: dict[str, Any]
    evaluations: list[dict[str, Any]]
    best_step: int | None
    model_dir: Path | None
    alignment: AlignmentStats
    fit: Any = field(repr=False)
    task: NerTask = field(repr=False)


def fit(
    encoder: Any,
    train: Sequence[NerExample],
    out_dir: str | Path | None = None,
    *,
    dev: Sequence[NerExample] | None = None,
    head: str = "egp",
    head_size: int = 64,
    max_length: int = 128,
    stride: int | None = None,
    head_lr_scale: float = DEFAULT_HEAD_LR_SCALE,
    config: Any = None,
    task: NerTask | None = None,
    windows: tuple[list[Window], AlignmentStats] | None = None,
    on_progress: Any = None,
) -> FitResult:
    """Train a GlobalPointer NER model on ``train`` and save it into ``out_dir``.

    Runs the shared loop (:func:`nlptool.core.train.train`: AdamW, warmup, checkpoints in ``out_dir/training``,
    torchrun) through :func:`nlptool.core.tasks.fit_task`, with the head's learning rate ``lr × head_lr_scale``.
    With ``dev``, span F1 is measured at every evaluation and the model folder holds the best dev checkpoint. The
    span cap of evaluation and of the saved model is the training data's longest entity in tokens. ``nlptool ner
    train`` is this function plus option parsing and output. The head is initialised when the task is built (here,
    when ``task`` is not given): seed torch before (:func:`nlptool.core.seeding.seed_everything`) for a reproducible
    run.

    Args:
        encoder: a :class:`TokenEncoder` (trained in place).
        train: training texts (:func:`read_ner_jsonl`); their labels are the model's (:func:`label_set`).
        out_dir: the model folder, or ``None`` to write nothing.
        dev: dev texts (labels among the training labels), or ``None``.
        head, head_size, max_length, stride: the :class:`NerTask`'s (when ``task`` is not given).
        head_lr_scale: factor on ``config.lr`` for the head's parameters (``"head."``; 1: the same lr).
        config: the loop's :class:`~nlptool.core.train.TrainConfig` (default: ``TrainConfig()``); ``output_dir``,
            ``metric``, ``greater_is_better`` and the head's ``lr_scale`` are set here.
        task: a ready :class:`NerTask` (then its settings are used and the head/size/length arguments ignored).
        windows: ``task.windows(train)`` when the caller has already computed it (saves tokenizing twice).
        on_progress: the loop's progress callback (rank 0).

    Returns:
        A :class:`FitResult`; under torchrun, on ranks other than 0 with ``model_dir`` ``None``.

    Raises:
        NlptoolError: no entities in ``train``, a dev label unknown to the training data, the loop's errors.
    """
    import dataclasses

    from nlptool.core.tasks import fit_task
    from nlptool.core.train import TrainConfig

    if task is None:
        task = NerTask(encoder, label_set(train), head=head, head_size=head_size, max_length=max_length, stride=stride)
    if dev is not None:
        check_labels(dev, task.labels, None, "the training data")
    examples, stats = windows if windows is not None else task.windows(train)
    task.max_span_tokens = longest_entity_tokens(examples)
    config = config if config is not None else TrainConfig()
    config = dataclasses.replace(config, lr_scale={"head.": head_lr_scale} if head_lr_scale != 1.0 else None)
    done = fit_task(
        encoder,
        task,
        examples,
        config,
        dev=dev,
        out_dir=out_dir,
        lengths=task.lengths(examples),
        on_progress=on_progress,
        evaluate_before=False,
    )
    result = done.train_result
    evals = [e for e in result.history if e.get("event") == "eval"]
    metrics: dict[str, Any] = {
        "train_texts": len(train),
        "train_windows": len(examples),
        "labels": task.labels,
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "windows_per_s": result.examples_per_s,
        "alignment": stats_dict(stats),
    }
    if dev is not None and evals:
        best = max(evals, key=lambda e: e["metrics"]["f1"])
        metrics.update(
            dev_texts=len(dev),
            dev_f1=best["metrics"]["f1"],
            dev_precision=best["metrics"]["precision"],
            dev_recall=best["metrics"]["recall"],
            best_step=result.best_step,
        )
    return FitResult(metrics, evals, result.best_step, done.model_dir, stats, done, task)

"""NER data: entities and examples, the canonical JSONL reader and its validation, token alignment and windows.

:class:`Entity`, :class:`NerExample`, :func:`read_ner_jsonl` (via :func:`parse_example` and
:func:`validate_entities`); :func:`encode_windows` tokenizes texts into :class:`Window` objects (offset alignment of the
gold entities, long texts cut with a stride) and counts what it could not represent in :class:`AlignmentStats`;
:func:`collate_windows` pads a batch and builds its dense gold tensor. The format, the alignment rule and the memory
bound are described in :mod:`nlptool.core.ner`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from nlptool.core.batching import pad_ids
from nlptool.core.errors import InputError, NlptoolError


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
# Statistics and label checks


def longest_entity_tokens(windows: Sequence[Window]) -> int | None:
    """The longest gold entity of the windows, in tokens (``j - i + 1``); ``None`` when they hold no entity."""
    return max((j - i + 1 for w in windows for _, i, j in w.spans), default=None)


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

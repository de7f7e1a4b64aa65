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

Modules
-------
Every name is importable from ``nlptool.core.ner`` itself, as before the package was split (the private helpers and
``length_batches`` / ``pad_ids`` of :mod:`nlptool.core.batching` too, for code that imported them from here):

- :mod:`~nlptool.core.ner.data`: :class:`Entity`, :class:`NerExample`, :func:`read_ner_jsonl` and its validation,
  alignment and windows (:func:`encode_windows`, :class:`Window`, :class:`AlignmentStats`), :func:`collate_windows`,
  :func:`stats_dict`, :func:`check_labels`, :func:`longest_entity_tokens`;
- :mod:`~nlptool.core.ner.model`: :class:`TokenEncoder`, :class:`SpanNerModel` (save, load), the heads
  (:func:`make_head`, ``HEADS``), :func:`token_states`, the model folder's files (:func:`head_settings`,
  :func:`save_transformer`, :func:`write_head`);
- :mod:`~nlptool.core.ner.decode`: :func:`predict_spans`, :func:`resolve_overlaps`, :func:`batch_token_cap`,
  :func:`evaluate_examples`;
- :mod:`~nlptool.core.ner.task`: :class:`NerTask`, :func:`fit`, :class:`FitResult`.
"""

from nlptool.core.batching import length_batches as length_batches
from nlptool.core.batching import pad_ids as pad_ids
from nlptool.core.ner.data import _STAT_COUNTS as _STAT_COUNTS
from nlptool.core.ner.data import (
    AlignmentStats,
    Entity,
    NerExample,
    Window,
    check_labels,
    collate_windows,
    default_stride,
    encode_windows,
    label_set,
    longest_entity_tokens,
    parse_example,
    read_ner_jsonl,
    stats_dict,
    validate_entities,
)
from nlptool.core.ner.data import _align as _align
from nlptool.core.ner.data import _check_fast as _check_fast
from nlptool.core.ner.data import _int_field as _int_field
from nlptool.core.ner.decode import (
    CPU_MAX_BATCH_TOKENS,
    batch_token_cap,
    evaluate_examples,
    predict_spans,
    resolve_overlaps,
)
from nlptool.core.ner.decode import _collect as _collect
from nlptool.core.ner.model import _FORMAT as _FORMAT
from nlptool.core.ner.model import _FORMAT_VERSION as _FORMAT_VERSION
from nlptool.core.ner.model import (
    HEADS,
    NER_CONFIG,
    NER_HEAD_WEIGHTS,
    SpanNerModel,
    TokenEncoder,
    head_settings,
    make_head,
    save_transformer,
    token_states,
    write_head,
)
from nlptool.core.ner.model import _freeze_pooler as _freeze_pooler
from nlptool.core.ner.model import _transformer as _transformer
from nlptool.core.ner.task import DEFAULT_HEAD_LR_SCALE, FitResult, NerTask, fit

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

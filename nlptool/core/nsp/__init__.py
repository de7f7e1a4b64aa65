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

Modules (every name is importable from ``nlptool.core.nsp`` itself): :mod:`~nlptool.core.nsp.prompts` (prompts,
labels files, normalisation, calibration, samples contrast), :mod:`~nlptool.core.nsp.scoring` (:class:`NSPScorer`),
:mod:`~nlptool.core.nsp.classify` (zero-shot), :mod:`~nlptool.core.nsp.corpus` (sentences, documents, pairs) and
:mod:`~nlptool.core.nsp.training` (the NSP head's training).
"""

from __future__ import annotations

from nlptool.core.nsp.classify import (
    CALIBRATIONS,
    CONTENT_FREE_TEXTS,
    MAPPINGS,
    ZeroShotResult,
    classify_embedding,
    classify_nsp,
    content_free_texts,
    softmax_rows,
)
from nlptool.core.nsp.corpus import _ABBREVIATIONS as _ABBREVIATIONS  # the splitter's tables, for its benchmark
from nlptool.core.nsp.corpus import _BOUNDARY as _BOUNDARY
from nlptool.core.nsp.corpus import _CJK_CHAR as _CJK_CHAR
from nlptool.core.nsp.corpus import _CJK_END as _CJK_END
from nlptool.core.nsp.corpus import (
    NSPPair,
    build_nsp_pairs,
    read_corpus,
    split_documents,
    split_sentences,
)
from nlptool.core.nsp.prompts import (
    DEFAULT_TEMPLATE,
    POSITIONS,
    LabelPrompt,
    calibrate_content_free,
    check_template,
    fill_template,
    make_prompts,
    normalise_scores,
    pair_order,
    read_labels_file,
    samples_contrast,
)
from nlptool.core.nsp.scoring import (
    IS_NEXT,
    NOT_NEXT,
    NSP_WEIGHTS,
    NSPScorer,
    nsp_model_class,
)
from nlptool.core.nsp.training import (
    NspData,
    NspFitResult,
    NspTask,
    fit,
    load_nsp_model,
    nsp_data,
    parse_train_layers,
    set_trainable,
)

__all__ = [
    "CALIBRATIONS",
    "CONTENT_FREE_TEXTS",
    "DEFAULT_TEMPLATE",
    "IS_NEXT",
    "MAPPINGS",
    "NOT_NEXT",
    "NSP_WEIGHTS",
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

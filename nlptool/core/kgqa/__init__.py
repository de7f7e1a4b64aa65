"""Question answering over a knowledge base with Seq2Seq + prefix-tree constrained decoding (``nlptool kg-qa``).

A seq2seq model reads the question and generates the key of a triple, ``base [SEP] predicate [SEP] meaning <end>``;
beam search is masked at every step to the continuations that the trie of all KB keys allows, so only existing
entries can come out, and the object is looked up in the KB (Su Jianlin, https://kexue.fm/archives/8802; GENRE,
De Cao et al., ICLR 2021). The package, one module per seam:

- :mod:`~nlptool.core.kgqa.answers`: subjects and answers (``'S ||| P ||| O'``), KgCLUE's metric :func:`kgclue_scores`;
- :mod:`~nlptool.core.kgqa.data`: :class:`KnowledgeBase`, KB (TSV) and QA (JSONL) files;
- :mod:`~nlptool.core.kgqa.keys`: codecs (:class:`CharCodec`, :class:`HFCodec`), keys and the KB's trie;
- :mod:`~nlptool.core.kgqa.decoding`: :class:`TrieLogitsProcessor`, :class:`DecodeOptions`, :class:`Candidate`;
- :mod:`~nlptool.core.kgqa.backbones`: the :class:`Backbone` protocol and its implementations;
- :mod:`~nlptool.core.kgqa.model`: :class:`KgqaModel` (answer, save, load) and training (:func:`fit`, :func:`train`).

Every public name is importable from ``nlptool.core.kgqa`` itself::

    from nlptool.core.kgqa import DecodeOptions, KgqaModel, kgclue_scores
"""

from nlptool.core.kgqa.answers import (
    ANSWER_SEP,
    CLOSE,
    OPEN,
    f1_sim,
    format_answer,
    join_subject,
    kgclue_scores,
    lcs_length,
    normalize,
    parse_answer,
    split_subject,
)
from nlptool.core.kgqa.backbones import (
    BACKBONES,
    Backbone,
    Seq2SeqBackbone,
    UniLMBackbone,
    char_bart_backbone,
    copy_bart_class,
    load_backbone,
    load_pretrained,
    pad_batch,
    pretrained_backbone,
    trie_loss_per_token,
    trie_tensors,
    with_trie_loss,
)
from nlptool.core.kgqa.data import (
    KB_HEADER_NAMES,
    KnowledgeBase,
    QAExample,
    answers_not_in_kb,
    file_sha256,
    is_kb_header,
    iter_kb_file,
    iter_qa,
    kb_from_qa,
    missing_answers_message,
    paired_answers,
    read_kb,
    read_qa,
    write_kb,
)
from nlptool.core.kgqa.decoding import Candidate, DecodeOptions, TrieLogitsProcessor, prediction_record, token_lcs
from nlptool.core.kgqa.keys import (
    VOCAB_FILE,
    CharCodec,
    HFCodec,
    build_trie,
    build_trie_from_file,
    key_ids,
    trie_choices,
)
from nlptool.core.kgqa.model import (
    CONFIG_FILE,
    FORMAT_VERSION,
    KB_FILE,
    MIN_STEPS,
    TRIE_FILE,
    KgqaModel,
    TrainingData,
    TrainRun,
    TrainSettings,
    TrieBuild,
    build_model,
    build_trie_file,
    fit,
    load_codec,
    low_steps_message,
    predictions_of,
    read_training_data,
    save_trained,
    train,
    training_pairs,
)

__all__ = [
    "ANSWER_SEP", "BACKBONES", "CLOSE", "CONFIG_FILE", "FORMAT_VERSION", "KB_FILE", "KB_HEADER_NAMES", "MIN_STEPS",
    "OPEN", "TRIE_FILE", "VOCAB_FILE", "Backbone", "Candidate", "CharCodec", "DecodeOptions", "HFCodec", "KgqaModel",
    "KnowledgeBase", "QAExample", "Seq2SeqBackbone", "TrainRun", "TrainSettings", "TrainingData",
    "TrieLogitsProcessor", "UniLMBackbone", "answers_not_in_kb", "build_model", "build_trie", "build_trie_from_file",
    "copy_bart_class", "f1_sim", "file_sha256", "fit", "format_answer", "is_kb_header", "iter_kb_file", "iter_qa",
    "join_subject", "kb_from_qa", "key_ids", "kgclue_scores", "lcs_length", "load_pretrained", "low_steps_message",
    "missing_answers_message", "normalize", "pad_batch", "paired_answers", "parse_answer", "prediction_record",
    "predictions_of", "TrieBuild", "build_trie_file", "load_codec", "char_bart_backbone", "load_backbone",
    "pretrained_backbone", "read_kb", "read_qa",
    "read_training_data", "save_trained", "split_subject", "token_lcs", "train", "training_pairs", "write_kb",
    "trie_choices", "trie_loss_per_token", "trie_tensors", "with_trie_loss",
]  # fmt: skip

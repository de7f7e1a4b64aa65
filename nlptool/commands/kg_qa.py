"""``nlptool kg-qa``: question answering over a knowledge base with Seq2Seq + prefix-tree constrained decoding.

Subcommands: ``build-trie``, ``train``, ``predict``, ``eval``, ``ask``. The technique lives in the package
:mod:`nlptool.core.kgqa` (answers and the KgCLUE metric, KB/QA files, codecs and keys, constrained decoding,
backbones, the model and its training steps) and :mod:`nlptool.core.trie` (the sorted-array trie); this module only
parses options, reads input, calls core and writes output.
"""

from __future__ import annotations

import shutil
from enum import Enum
from typing import Annotated, Any

import typer

from nlptool.commands._common import (
    DeviceOpt,
    ForceOpt,
    LegacyPositionalArg,
    MetricsOutOpt,
    OutputOpt,
    ReportTo,
    ReportToOpt,
    SaveEveryOpt,
    SeedOpt,
    ShardOpt,
    TrainingProgress,
    WarmupOpt,
    hidden_alias,
    info,
    interrupt_safe_output,
    model_and_input,
    print_table,
    progress,
    warn,
    warn_empty,
    write_metrics,
)

app = typer.Typer(
    help="Question answering over a knowledge base: Seq2Seq + prefix-tree (trie) constrained decoding "
    "(Su Jianlin, kexue.fm/archives/8802; GENRE, De Cao et al., ICLR 2021).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Backbone(str, Enum):
    auto = "auto"
    seq2seq = "seq2seq"
    unilm = "unilm"


# -- shared options ---------------------------------------------------------------------------------------------------
ModelDirOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="A model folder written by 'nlptool kg-qa train'.")
]
KbOverrideOpt = Annotated[
    str | None,
    typer.Option("--kb", help="Use this KB (TSV subject<TAB>predicate<TAB>object) instead of the model's own."),
]
NumBeamsOpt = Annotated[int, typer.Option("--num-beams", help="Beam width of the search.", min=1)]
TopKOpt = Annotated[int, typer.Option("--top-k", "-k", help="Candidates to return per question.", min=1)]
NoTrieOpt = Annotated[
    bool,
    typer.Option("--no-trie", help="Decode without the trie (an ablation: outputs may not exist in the KB)."),
]
RenormOpt = Annotated[
    bool,
    typer.Option(
        "--renormalize",
        help="Rescale the allowed probabilities to sum to 1 at each step (Su's choice) instead of only masking.",
    ),
]
LookaheadOpt = Annotated[
    bool,
    typer.Option(
        "--lookahead",
        help="Su's look-ahead: after the subject, favour continuations whose keys overlap the question more.",
    ),
]
SubjectInQuestionOpt = Annotated[
    bool,
    typer.Option(
        "--subject-in-question",
        help="Allow only subject names that occur verbatim in the question (falls back to the trie alone when none).",
    ),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Questions per decoding batch.", min=1)]


def _device(spec: str) -> str:
    from nlptool.core.device import resolve_device

    return str(resolve_device(spec))


def _options(
    num_beams: int, top_k: int, no_trie: bool, renormalize: bool, lookahead: bool, subject: bool, batch_size: int
) -> Any:
    from nlptool.core.errors import NlptoolError
    from nlptool.core.kgqa import DecodeOptions

    if top_k > num_beams:
        raise NlptoolError(f"--top-k {top_k} is larger than --num-beams {num_beams}; raise --num-beams")
    if no_trie and (renormalize or lookahead or subject):
        raise NlptoolError("--renormalize, --lookahead and --subject-in-question need the trie; drop --no-trie")
    return DecodeOptions(
        num_beams=num_beams,
        top_k=top_k,
        constrained=not no_trie,
        renormalize=renormalize,
        lookahead=lookahead,
        subject_in_question=subject,
        batch_size=batch_size,
    )


def _answer_all(model: Any, questions: list[str], opts: Any) -> list:
    with progress("decoding", total=len(questions), unit="questions") as advance:
        return model.answer(questions, opts, on_batch=advance)


def _report_missing(kb: Any, examples: list, path: str) -> None:
    from nlptool.core.kgqa import missing_answers_message

    message = missing_answers_message(kb, examples, path)[1]
    if message:
        warn(message)


# -- build-trie -------------------------------------------------------------------------------------------------------
@app.command("build-trie")
def build_trie(
    kb: Annotated[
        str,
        typer.Option(
            "--kb", help="KB file: TSV subject<TAB>predicate<TAB>object, or '-' for stdin.", show_default=False
        ),
    ],
    tokenizer: Annotated[
        str,
        typer.Option(
            "--tokenizer",
            help="A kg-qa model folder (its codec), 'char' (a character vocabulary from the KB itself), or a "
            "Hugging Face tokenizer folder/hub id.",
            show_default=False,
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="The trie file (.npz), or '-' for stdout (not a terminal).", show_default=False
        ),
    ],
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", help="Keys sorted per in-memory chunk before merging.", min=1)
    ] = 1_000_000,
    metrics_out: MetricsOutOpt = None,
    force: ForceOpt = False,
) -> None:
    """Build the prefix tree of every KB key (subject [SEP] predicate [SEP] meaning <end>), streaming the KB.

    The trie stores the keys as sorted token sequences in flat arrays (not nested dicts); each key's value is the
    line number of its first triple in the KB. A first line of column names (subject<TAB>predicate<TAB>object) is
    skipped. Size and speed go to stderr.

    Example: nlptool kg-qa build-trie --kb Knowledge.txt --tokenizer my-kgqa-model -o kb_trie.npz
    """
    import sys
    import tempfile

    from nlptool.core.errors import NlptoolError
    from nlptool.core.io import check_output_path, replayable
    from nlptool.core.kgqa.model import build_trie_file

    if output == "-":
        if sys.stdout.isatty():
            raise NlptoolError(
                "refusing to write the binary trie (.npz) to a terminal; redirect stdout (> trie.npz) or give -o FILE"
            )
        if metrics_out == "-":
            raise NlptoolError("-o - and --metrics-out - both write to stdout; send one of them to a file")
    check_output_path(output, force)
    check_output_path(metrics_out, force)
    with replayable(kb) as kb_path:  # stdin: a temporary copy (read twice), always removed
        built = build_trie_file(kb_path, tokenizer, kb_name="<stdin>" if kb == "-" else kb, chunk_size=chunk_size)
    if built.metrics["collisions"]:
        warn(
            f"{built.metrics['collisions']} KB keys tokenise identically to another key; the first one is kept in the "
            "trie"
        )
    if output == "-":
        with tempfile.TemporaryFile() as tmp:  # np.savez seeks; stdout may be a pipe
            built.trie.write(tmp, built.meta)
            tmp.seek(0)
            shutil.copyfileobj(tmp, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        built.trie.save(output, meta=built.meta)
    print_table("kg-qa build-trie", ["", "value"], [[k, v] for k, v in built.metrics.items()])
    write_metrics(metrics_out, built.metrics, force=force, inputs=[kb], model=tokenizer)
    info(f"kg-qa build-trie: {len(built.trie)} keys written to {'stdout' if output == '-' else output}")


# -- train ------------------------------------------------------------------------------------------------------------
KbTrainOpt = Annotated[
    str, typer.Option("--kb", help="KB file: TSV subject<TAB>predicate<TAB>object.", show_default=False)
]
TrainFileOpt = Annotated[
    str, typer.Option("--train", help="QA JSONL: {'question', 'answer': 'S ||| P ||| O'}.", show_default=False)
]
OutDirOpt = Annotated[str, typer.Option("--out", help="Output model folder.", show_default=False)]
DevOpt = Annotated[
    str | None, typer.Option("--dev", help="Dev QA JSONL: Score after each epoch; the best model is kept.")
]
PretrainedOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="A pretrained seq2seq (T5/BART) or BERT-family masked-LM checkpoint (folder or hub id). Default: a "
        "small character BART trained from scratch (offline).",
    ),
]
BackboneOpt = Annotated[
    Backbone, typer.Option("--backbone", help="How to use --model: seq2seq, unilm (BERT-family), or auto.")
]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Passes over the training questions.", min=1)]
TrainBatchOpt = Annotated[int, typer.Option("--batch-size", help="Questions per batch.", min=1)]
LrOpt = Annotated[
    float | None, typer.Option("--lr", help="Peak learning rate (default 1e-3 from scratch, 5e-5 pretrained).")
]
DModelOpt = Annotated[int, typer.Option("--d-model", help="Char BART: hidden size.", min=8)]
LayersOpt = Annotated[int, typer.Option("--layers", help="Char BART: encoder and decoder layers.", min=1)]
HeadsOpt = Annotated[int, typer.Option("--heads", help="Char BART: attention heads.", min=1)]
FfnOpt = Annotated[int, typer.Option("--ffn", help="Char BART: feed-forward size.", min=8)]
DropoutOpt = Annotated[float, typer.Option("--dropout", help="Char BART: dropout.", min=0.0, max=0.9)]
CopyOpt = Annotated[
    bool,
    typer.Option(
        "--copy/--no-copy",
        help="Char BART: pointer-generator output that can copy question characters (the subject is written in "
        "the question).",
    ),
]
MaxQuestionOpt = Annotated[
    int, typer.Option("--max-question-tokens", help="Questions are cut to this many tokens.", min=4)
]
EvalLimitOpt = Annotated[
    int, typer.Option("--eval-limit", help="Dev questions scored at each evaluation (0 = all).", min=0)
]
EvalBeamsOpt = Annotated[
    int,
    typer.Option(
        "--eval-beams",
        help="Beam width of the dev evaluations that choose the best checkpoint (default: predict's beam width).",
        min=1,
    ),
]
EvalRenormOpt = Annotated[
    bool,
    typer.Option(
        "--eval-renormalize",
        help="Dev evaluations decode with --renormalize (choose the checkpoint for the decoding you will run).",
    ),
]
EvalLookaheadOpt = Annotated[
    bool, typer.Option("--eval-lookahead", help="Dev evaluations decode with --lookahead (as --eval-renormalize).")
]
TrieLossOpt = Annotated[
    float,
    typer.Option(
        "--trie-loss",
        help="Weight of a second loss: each key token's cross-entropy among the tokens the KB's trie allows there "
        "(the --renormalize decoding's loss), which trains the choice between a subject's predicates; 0 = off.",
        min=0.0,
    ),
]
KbLinkOpt = Annotated[
    bool, typer.Option("--kb-link", help="Record the KB's path and SHA-256 in the model folder instead of a copy.")
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume", help="Continue an interrupted run from OUT/training/checkpoint-last (same options and data)."
    ),
]


@app.command("train")
@interrupt_safe_output
def train(
    kb: KbTrainOpt,
    train_file: TrainFileOpt,
    out: OutDirOpt,
    dev: DevOpt = None,
    model: PretrainedOpt = None,
    backbone: BackboneOpt = Backbone.auto,
    epochs: EpochsOpt = 10,
    batch_size: TrainBatchOpt = 64,
    lr: LrOpt = None,
    warmup: WarmupOpt = 0.05,
    d_model: DModelOpt = 128,
    layers: LayersOpt = 3,
    heads: HeadsOpt = 4,
    ffn: FfnOpt = 512,
    dropout: DropoutOpt = 0.1,
    copy: CopyOpt = True,
    max_question_tokens: MaxQuestionOpt = 64,
    eval_limit: EvalLimitOpt = 500,
    eval_beams: EvalBeamsOpt = 5,
    eval_renormalize: EvalRenormOpt = False,
    eval_lookahead: EvalLookaheadOpt = False,
    trie_loss: TrieLossOpt = 0.0,
    kb_link: KbLinkOpt = False,
    resume: ResumeOpt = False,
    device: DeviceOpt = "auto",
    save_every: SaveEveryOpt = 0,
    report_to: ReportToOpt = ReportTo.none,
    seed: SeedOpt = 0,
    metrics_out: MetricsOutOpt = None,
    force: ForceOpt = False,
) -> None:
    """Train a kg-qa model: question → key 'subject [SEP] predicate [SEP] meaning', decoded under the KB's trie.

    The folder keeps the model, its tokenizer, a copy of the KB (or its path and hash with --kb-link) and the trie,
    so predict/ask/eval need no --kb. Under torchrun (--nproc_per_node N) the global batch is split over the
    processes; only rank 0 writes.

    Example: nlptool kg-qa train --kb kb.tsv --train train.jsonl --dev dev.jsonl --out kgqa-model

    Reference: Su Jianlin, https://kexue.fm/archives/8802 (KgCLUE); De Cao et al., "Autoregressive Entity
    Retrieval", ICLR 2021.
    """
    from nlptool.commands._common import TrainingRun, logger
    from nlptool.core import kgqa

    settings = _train_settings(locals())
    # the shared scaffold: under torchrun only rank 0 checks and writes the output folder; seeds
    scaffold = TrainingRun(
        out, force=force, resume=resume, seed=seed, save_every=save_every, metrics_out=metrics_out, report_to=report_to
    )
    data = kgqa.read_training_data(kb, train_file, dev, eval_limit=eval_limit)
    kg = kgqa.build_model(data, settings)
    if scaffold.main:
        _report_setup(kg, data, settings, logger)
    with TrainingProgress("questions") as on_progress:
        run = kgqa.train(kg, data, settings, out, on_progress=on_progress)
    if not scaffold.main:
        return
    kgqa.save_trained(kg, run, out, kb_path=kb, epochs=epochs, kb_link=kb_link)
    _report_trained(kg, run, data, settings, out, scaffold, [kb, train_file, *([dev] if dev else [])])


def _train_settings(options: dict[str, Any]) -> Any:
    """The core's ``TrainSettings`` from the train command's options (the same names): --backbone auto is ``None``
    and --device is resolved."""
    from nlptool.core.kgqa import TrainSettings

    values = {k: v for k, v in options.items() if k in TrainSettings.__dataclass_fields__}
    values["backbone"] = None if options["backbone"] == Backbone.auto else options["backbone"].value
    values["device"] = _device(options["device"])
    values["report_to"] = ReportTo(options["report_to"]).value
    return TrainSettings(**values)


def _report_trained(kg: Any, run: Any, data: Any, settings: Any, out: str, scaffold: Any, inputs: list[str]) -> None:
    """After training (rank 0): the dev evaluations, the dev table, metrics.json, --metrics-out and the model card."""
    for step, score in run.eval_scores():
        info(f"step {step}: dev Score {score:.4f}")
    if run.dev_scores is not None:
        print_table("kg-qa train: dev (saved model)", ["", "value"], [[k, v] for k, v in run.dev_scores.items()])
    metrics, params = run.metrics(data), settings.params(kg.config["backbone"])
    scaffold.finish(metrics, inputs=inputs, model=settings.model, params=params, write=write_metrics)
    info(f"kg-qa train: model saved to {out} ({run.result.steps} steps, {run.seconds:.0f} s)")


def _report_setup(kg: Any, data: Any, settings: Any, logger: Any) -> None:
    """The warnings and the summary line before training (rank 0)."""
    from nlptool.core.kgqa import low_steps_message

    for message in data.warnings:
        warn(message)
    if kg.collisions:
        warn(f"{kg.collisions} KB keys tokenise identically to another key; the first one is kept in the trie")
    info(f"kg-qa train: {kg.config['backbone']} model, {kg.num_parameters():,} parameters; KB {len(data.kb):,} keys")
    message = low_steps_message(len(data.examples), settings.epochs, settings.batch_size)
    if message:
        logger.warning(message)


# -- predict ----------------------------------------------------------------------------------------------------------
@app.command("predict")
def predict(
    input: Annotated[
        str,
        typer.Argument(help="Questions: JSONL/CSV/TSV rows with --text-col, a .txt file (one per line), or '-'."),
    ],
    legacy_input: LegacyPositionalArg = None,
    model: ModelDirOpt = None,
    output: OutputOpt = "-",
    shard: ShardOpt = None,
    kb: KbOverrideOpt = None,
    top_k: TopKOpt = 5,
    num_beams: NumBeamsOpt = 5,
    no_trie: NoTrieOpt = False,
    renormalize: RenormOpt = False,
    lookahead: LookaheadOpt = False,
    subject_in_question: SubjectInQuestionOpt = False,
    text_col: Annotated[
        str | None,
        typer.Option(
            "--text-col", help="The column/field that holds the question (default: question, text, else the first)."
        ),
    ] = None,
    batch_size: BatchOpt = 32,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Answer every question: the input rows with 'answer' set to 'S ||| P ||| O' (KgCLUE's submission format) and
    'candidates' (the top-k triples with scores, the sum of the key's log-probabilities). The input is streamed:
    each batch of --batch-size questions is written (and flushed) as soon as it is decoded.

    Example: nlptool kg-qa predict test.jsonl --model kgqa-model -o predictions.jsonl
    """
    from nlptool.core.io import chunked, open_writer, read_texts
    from nlptool.core.kgqa import KgqaModel, prediction_record
    from nlptool.core.shard import Shard

    model_dir, input = model_and_input(model, input, legacy_input, command="kg-qa predict", required=True)
    sh = Shard.resolve(shard)
    sh.check(input, output, force)
    opts = _options(num_beams, top_k, no_trie, renormalize, lookahead, subject_in_question, batch_size)
    kg = KgqaModel.load(model_dir, kb_path=kb, device=_device(device))
    n = 0
    with (
        read_texts(input, text_col=text_col, default_cols=("question", "text")) as reader,
        sh.output(output, force=force, fmt="jsonl") as out,
        open_writer(out.path, "jsonl", force=out.force) as writer,
        progress("decoding", unit="questions") as advance,
    ):
        for block in chunked(sh.select(reader), batch_size):
            cands = kg.answer([r.text for r in block], opts)
            for row, cs in zip(block, cands, strict=True):
                writer.write(prediction_record(_question_record(row, reader), cs))
            writer.fh.flush()
            advance(len(block))
            n += len(block)
    if (out.rows if sh.torchrun else n) == 0 and sh.main:
        warn_empty(input)
    info(f"kg-qa predict: {n} questions answered")


def _question_record(row: Any, reader: Any) -> dict:
    """The output row's fields: the input row (a .txt line becomes {"question": line})."""
    return dict(row.data) if getattr(reader, "fmt", None) != "text" else {"question": row.text}


# -- eval -------------------------------------------------------------------------------------------------------------
@app.command("eval")
def evaluate(
    qa: Annotated[str, typer.Argument(help="Gold questions and answers (KgCLUE JSONL), or '-'.", show_default=False)],
    legacy_qa: LegacyPositionalArg = None,
    model: ModelDirOpt = None,
    predictions: Annotated[
        str | None,
        typer.Option("--predictions", help="Score this predictions file (JSONL with 'answer') instead of a model."),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            hidden_alias("--predictions-out"),
            help="Also write the model's predictions here (JSONL; '-': stdout).",
        ),
    ] = None,
    kb: KbOverrideOpt = None,
    num_beams: NumBeamsOpt = 5,
    no_trie: NoTrieOpt = False,
    renormalize: RenormOpt = False,
    lookahead: LookaheadOpt = False,
    subject_in_question: SubjectInQuestionOpt = False,
    batch_size: BatchOpt = 32,
    device: DeviceOpt = "auto",
    metrics_out: MetricsOutOpt = None,
    force: ForceOpt = False,
) -> None:
    """Score answers with KgCLUE's metric: EM and character-LCS F1 of subject, predicate, object and the whole
    triple, and Score = 0.5·EM_O + 0.5·F1_O, as fractions (0–1). A table goes to stderr; --metrics-out FILE (or '-'
    for stdout) writes them as JSON. Nothing goes to stdout otherwise.

    Example: nlptool kg-qa eval dev.jsonl -m kgqa-model --metrics-out -

    Example: nlptool kg-qa eval dev.jsonl --predictions preds.jsonl --metrics-out metrics.json
    """

    from nlptool.core.errors import NlptoolError
    from nlptool.core.io import check_output_path
    from nlptool.core.kgqa import format_answer, kgclue_scores, paired_answers, read_qa

    model_dir, qa = model_and_input(model, qa, legacy_qa, command="kg-qa eval")
    if predictions is not None and model_dir is not None:
        raise typer.BadParameter("give --model or --predictions, not both", param_hint="--predictions")
    if predictions is None and model_dir is None:
        raise typer.BadParameter("give a model folder (--model DIR) or --predictions FILE", param_hint="--model")
    if metrics_out == "-" and output == "-":
        raise NlptoolError("--metrics-out - and -o - both write to stdout; send one of them to a file")
    check_output_path(metrics_out, force)
    check_output_path(output, force)
    gold = read_qa(qa)
    params: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if predictions is not None:
        preds = read_qa(predictions, require_answer=False, require_question=False)
        answers = paired_answers(preds, gold, predictions_path=predictions, gold_path=qa)
    else:
        opts = _options(num_beams, 1, no_trie, renormalize, lookahead, subject_in_question, batch_size)
        answers, extra = _eval_model(model_dir, kb, device, gold, qa, opts, output, force)
        params = opts.params()
    scores = kgclue_scores(answers, [format_answer(*e.answer) for e in gold])  # type: ignore[misc]
    print_table(
        "kg-qa eval (KgCLUE metric)",
        ["", "EM", "F1"],
        [[f, scores[f"EM_{f}"], scores[f"F1_{f}"]] for f in ("S", "P", "O", "All")],
    )
    info(f"Score = 0.5·EM_O + 0.5·F1_O = {scores['Score']:.4f}")
    inputs = [qa, *([predictions] if predictions else [])]
    metrics = {**scores, **extra, "questions": len(gold)}
    write_metrics(metrics_out, metrics, force=force, inputs=inputs, model=model_dir, params=params)


def _eval_model(
    model_dir: Any, kb: str | None, device: str, gold: list, qa: str, opts: Any, output: str | None, force: bool
) -> tuple[list[str], dict[str, Any]]:
    """Answer the gold questions with the model (writing its predictions to ``output`` when given): the top answers
    and the decoding figures for the metrics."""
    import time

    from nlptool.core.io import open_writer
    from nlptool.core.kgqa import KgqaModel, prediction_record, predictions_of

    kg = KgqaModel.load(model_dir, kb_path=kb, device=_device(device))
    _report_missing(kg.kb, gold, qa)
    started = time.perf_counter()
    cands = _answer_all(kg, [e.question for e in gold], opts)
    extra = {
        "decode_seconds": time.perf_counter() - started,
        "not_in_kb": sum(1 for c in cands if c and not c[0].in_kb),
    }
    if output:
        with open_writer(output, "jsonl", force=force) as writer:
            for e, c in zip(gold, cands, strict=True):
                writer.write(prediction_record(e.record, c))
    return predictions_of(cands), extra


# -- ask --------------------------------------------------------------------------------------------------------------
@app.command("ask")
def ask(
    question: Annotated[
        str,
        typer.Argument(help="The question, or '-' to read questions from stdin (one per line).", show_default=False),
    ],
    legacy_question: LegacyPositionalArg = None,
    model: ModelDirOpt = None,
    output: OutputOpt = "-",
    kb: KbOverrideOpt = None,
    top_k: TopKOpt = 3,
    num_beams: NumBeamsOpt = 5,
    no_trie: NoTrieOpt = False,
    renormalize: RenormOpt = False,
    lookahead: LookaheadOpt = False,
    subject_in_question: SubjectInQuestionOpt = False,
    min_score: Annotated[
        float | None,
        typer.Option(
            "--min-score",
            help="Drop candidates scoring below this (a sum of log-probabilities, <= 0); when none is left the "
            "question gets one 'no answer' line (null subject/predicate/object, the best score).",
        ),
    ] = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Answer questions from the shell: per question its top-k triples with scores as JSONL lines {"question",
    "rank", "subject", "predicate", "object", "score", "in_kb", "objects"} (and a table on stderr for one question).

    The score is the key's log-probability under the decoding mode (0 = certain; see the README for the scale).

    Example: nlptool kg-qa ask "守望星光是哪家公司出品的？" --model kgqa-model

    Example: cat questions.txt | nlptool kg-qa ask - -m kgqa-model --min-score -5 > answers.jsonl
    """
    from nlptool.core.errors import NlptoolError
    from nlptool.core.io import check_output_path, chunked, open_writer
    from nlptool.core.kgqa import KgqaModel

    model_dir, question = model_and_input(model, question, legacy_question, command="kg-qa ask", required=True)
    if not question.strip():
        raise NlptoolError("the question is empty")
    check_output_path(output, force)
    import sys

    interactive = question == "-" and sys.stdin.isatty()  # typed questions are answered one by one
    opts = _options(num_beams, top_k, no_trie, renormalize, lookahead, subject_in_question, 1 if interactive else 32)
    kg = KgqaModel.load(model_dir, kb_path=kb, device=_device(device))
    questions = _stdin_lines() if question == "-" else iter([question])
    n = 0
    with open_writer(output, "jsonl", force=force) as writer:
        for block in chunked(questions, opts.batch_size):
            for q, cands in zip(block, kg.answer(block, opts), strict=True):
                records = _ask_records(q, cands, min_score)
                for rec in records:
                    writer.write(rec)
                if question != "-":
                    print_table(
                        "kg-qa ask",
                        ["rank", "subject", "predicate", "object", "score"],
                        [[r["rank"], r["subject"], r["predicate"], r["object"], r["score"]] for r in records],
                    )
            writer.fh.flush()
            n += len(block)
        if not n:
            raise NlptoolError("no questions on stdin (one question per line)")


def _stdin_lines() -> Any:
    """The non-blank lines of stdin, stripped, as they arrive."""
    import sys

    for line in sys.stdin:
        if line.strip():
            yield line.strip()


def _ask_records(question: str, cands: list, min_score: float | None) -> list[dict]:
    kept = [c for c in cands if min_score is None or c.score >= min_score]
    if not kept:  # no answer: the best score tells how far below --min-score it was
        best = max((c.score for c in cands), default=None)
        return [
            {
                "question": question,
                "rank": 1,
                "subject": None,
                "predicate": None,
                "object": None,
                "score": best,
                "in_kb": None,
                "objects": [],
            }
        ]
    return [
        {
            "question": question,
            "rank": rank,
            "subject": c.subject,
            "predicate": c.predicate,
            "object": c.object,
            "score": c.score,
            "in_kb": c.in_kb,
            "objects": c.objects,
        }
        for rank, c in enumerate(kept, 1)
    ]

"""``nlptool kg-qa``: question answering over a knowledge base with Seq2Seq + prefix-tree constrained decoding.

Subcommands: ``build-trie``, ``train``, ``predict``, ``eval``, ``ask``. The technique lives in
:mod:`nlptool.core.kgqa` (keys, codecs, backbones, the trie logits processor, the KgCLUE metric) and
:mod:`nlptool.core.trie` (the sorted-array trie).
"""

from __future__ import annotations

import math
import shutil
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from nlptool.commands._common import (
    DeviceOpt,
    ForceOpt,
    LegacyPositionalArg,
    MetricsOutOpt,
    OutputOpt,
    SaveEveryOpt,
    SeedOpt,
    TrainingProgress,
    hidden_alias,
    info,
    model_and_input,
    print_table,
    progress,
    seed_everything,
    warn,
    write_metrics,
)

app = typer.Typer(
    help="Question answering over a knowledge base: Seq2Seq + prefix-tree (trie) constrained decoding "
    "(Su Jianlin, kexue.fm/archives/8802; GENRE, De Cao et al., ICLR 2021).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


MIN_STEPS = 200  # kg-qa train warns below this many optimiser steps


class Backbone(str, Enum):
    auto = "auto"
    seq2seq = "seq2seq"
    unilm = "unilm"


# -- shared options ---------------------------------------------------------------------------------------------------
ModelDirArg = Annotated[
    str, typer.Argument(help="A model folder written by 'nlptool kg-qa train'.", show_default=False)
]
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


def _decode_params(opts: Any) -> dict:
    return {
        "num_beams": opts.num_beams,
        "top_k": opts.top_k,
        "trie": opts.constrained,
        "renormalize": opts.renormalize,
        "lookahead": opts.lookahead,
        "subject_in_question": opts.subject_in_question,
    }


def _answer_all(model: Any, questions: list[str], opts: Any) -> list:
    with progress("decoding", total=len(questions), unit="questions") as advance:
        return model.answer(questions, opts, on_batch=advance)


def _report_missing(kb: Any, examples: list, path: str) -> int:
    from nlptool.core.kgqa import answers_not_in_kb, format_answer

    missing = answers_not_in_kb(kb, examples)
    if missing:
        shown = "; ".join(f"line {e.line}: {format_answer(*e.answer)}" for e in missing[:3])
        warn(f"{path}: {len(missing)} of {len(examples)} answers are not triples of the KB (e.g. {shown})")
    return len(missing)


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
    from nlptool.core.kgqa import build_trie_from_file, file_sha256

    if output == "-":
        if sys.stdout.isatty():
            raise NlptoolError(
                "refusing to write the binary trie (.npz) to a terminal; redirect stdout (> trie.npz) or give -o FILE"
            )
        if metrics_out == "-":
            raise NlptoolError("-o - and --metrics-out - both write to stdout; send one of them to a file")
    check_output_path(output, force)
    check_output_path(metrics_out, force)
    kb_name = "<stdin>" if kb == "-" else kb
    with replayable(kb) as kb_path:  # stdin: a temporary copy (read twice), always removed
        codec = _codec_for(tokenizer, kb_path, kb_name)
        stats: dict[str, int] = {}
        start = time.perf_counter()
        trie, duplicates, triples = build_trie_from_file(
            kb_path, codec, chunk_size=chunk_size, name=kb_name, stats=stats
        )
        seconds = time.perf_counter() - start
        meta = {"kb_sha256": file_sha256(kb_path), "codec": codec.kind, "values": "kb_line"}
    if stats["collisions"]:
        warn(f"{stats['collisions']} KB keys tokenise identically to another key; the first one is kept in the trie")
    if output == "-":
        with tempfile.TemporaryFile() as tmp:  # np.savez seeks; stdout may be a pipe
            trie.write(tmp, meta)
            tmp.seek(0)
            shutil.copyfileobj(tmp, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        trie.save(output, meta=meta)
    metrics = {
        "triples": triples,
        "keys": len(trie),
        "duplicate_keys": duplicates,
        "collisions": stats["collisions"],
        "bytes": trie.nbytes,
        "bytes_per_key": trie.nbytes / max(len(trie), 1),
        "build_seconds": seconds,
    }
    print_table("kg-qa build-trie", ["", "value"], [[k, v] for k, v in metrics.items()])
    write_metrics(metrics_out, metrics, force=force, inputs=[kb], model=tokenizer)
    info(f"kg-qa build-trie: {len(trie)} keys written to {'stdout' if output == '-' else output}")


def _codec_for(tokenizer: str, kb: str, kb_name: str) -> Any:
    from nlptool.core.errors import NlptoolError
    from nlptool.core.kgqa import CONFIG_FILE, CharCodec, KgqaModel, iter_kb_file

    if tokenizer == "char":
        triples = iter_kb_file(kb, name=kb_name, report_header=False)
        return CharCodec.from_texts(t for _, s, p, o in triples for t in (s, p, o))
    folder = Path(tokenizer)
    if (folder / CONFIG_FILE).is_file():
        import json

        cfg = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        if cfg.get("backbone") == "bart-char":
            return CharCodec.load(folder)
        return KgqaModel.load(folder).codec
    from transformers import AutoTokenizer

    from nlptool.core.kgqa import HFCodec

    try:
        tok = AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as exc:
        raise NlptoolError(f"cannot load tokenizer '{tokenizer}' ({str(exc).splitlines()[0]})") from None
    start = next((t for t in (tok.bos_token_id, tok.cls_token_id, tok.pad_token_id) if t is not None), None)
    end = next((t for t in (tok.eos_token_id, tok.sep_token_id) if t is not None), None)
    if start is None or end is None:
        raise NlptoolError(f"tokenizer '{tokenizer}' has no start (bos/cls/pad) or end (eos/sep) token")
    return HFCodec(tok, start_id=start, end_id=end)


# -- train ------------------------------------------------------------------------------------------------------------
@app.command("train")
def train(
    kb: Annotated[str, typer.Option("--kb", help="KB file: TSV subject<TAB>predicate<TAB>object.", show_default=False)],
    train_file: Annotated[
        str, typer.Option("--train", help="QA JSONL: {'question', 'answer': 'S ||| P ||| O'}.", show_default=False)
    ],
    out: Annotated[str, typer.Option("--out", help="Output model folder.", show_default=False)],
    dev: Annotated[
        str | None, typer.Option("--dev", help="Dev QA JSONL: Score after each epoch; the best model is kept.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="A pretrained seq2seq (T5/BART) or BERT-family masked-LM checkpoint (folder or hub id). Default: a "
            "small character BART trained from scratch (offline).",
        ),
    ] = None,
    backbone: Annotated[
        Backbone, typer.Option("--backbone", help="How to use --model: seq2seq, unilm (BERT-family), or auto.")
    ] = Backbone.auto,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training questions.", min=1)] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Questions per batch.", min=1)] = 64,
    lr: Annotated[
        float | None, typer.Option("--lr", help="Peak learning rate (default 1e-3 from scratch, 5e-5 pretrained).")
    ] = None,
    warmup: Annotated[float, typer.Option("--warmup", help="Warmup fraction of all steps.", min=0.0, max=1.0)] = 0.05,
    d_model: Annotated[int, typer.Option("--d-model", help="Char BART: hidden size.", min=8)] = 128,
    layers: Annotated[int, typer.Option("--layers", help="Char BART: encoder and decoder layers.", min=1)] = 3,
    heads: Annotated[int, typer.Option("--heads", help="Char BART: attention heads.", min=1)] = 4,
    ffn: Annotated[int, typer.Option("--ffn", help="Char BART: feed-forward size.", min=8)] = 512,
    dropout: Annotated[float, typer.Option("--dropout", help="Char BART: dropout.", min=0.0, max=0.9)] = 0.1,
    copy: Annotated[
        bool,
        typer.Option(
            "--copy/--no-copy",
            help="Char BART: pointer-generator output that can copy question characters (the subject is written in "
            "the question).",
        ),
    ] = True,
    max_question_tokens: Annotated[
        int, typer.Option("--max-question-tokens", help="Questions are cut to this many tokens.", min=4)
    ] = 64,
    eval_limit: Annotated[
        int, typer.Option("--eval-limit", help="Dev questions scored at each evaluation (0 = all).", min=0)
    ] = 500,
    eval_beams: Annotated[
        int,
        typer.Option(
            "--eval-beams",
            help="Beam width of the dev evaluations that choose the best checkpoint (default: predict's beam width).",
            min=1,
        ),
    ] = 5,
    eval_renormalize: Annotated[
        bool,
        typer.Option(
            "--eval-renormalize",
            help="Dev evaluations decode with --renormalize (choose the checkpoint for the decoding you will run).",
        ),
    ] = False,
    eval_lookahead: Annotated[
        bool,
        typer.Option("--eval-lookahead", help="Dev evaluations decode with --lookahead (as --eval-renormalize)."),
    ] = False,
    kb_link: Annotated[
        bool,
        typer.Option("--kb-link", help="Record the KB's path and SHA-256 in the model folder instead of a copy."),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue an interrupted run from OUT/training/checkpoint-last (same options and data)."
        ),
    ] = False,
    device: DeviceOpt = "auto",
    save_every: SaveEveryOpt = 0,
    seed: SeedOpt = 0,
    metrics_out: MetricsOutOpt = None,
    force: ForceOpt = False,
) -> None:
    """Train a kg-qa model: question → key 'subject [SEP] predicate [SEP] meaning', decoded under the KB's trie.

    The folder keeps the model, its tokenizer, a copy of the KB (or its path and hash with --kb-link) and the trie,
    so predict/ask/eval need no --kb.

    Example: nlptool kg-qa train --kb kb.tsv --train train.jsonl --dev dev.jsonl --out kgqa-model

    Reference: Su Jianlin, https://kexue.fm/archives/8802 (KgCLUE); De Cao et al., "Autoregressive Entity
    Retrieval", ICLR 2021.
    """
    from nlptool.commands._common import check_out_dir, logger
    from nlptool.core.io import check_output_path
    from nlptool.core.kgqa import DecodeOptions, KgqaModel, fit, format_answer, kgclue_scores, read_kb, read_qa
    from nlptool.core.train import TrainConfig, steps_per_epoch

    out_dir = Path(out)
    check_out_dir(out_dir, force=force, resume=resume)
    check_output_path(metrics_out, force)
    seed_everything(seed)
    dev_name = _device(device)

    knowledge = read_kb(kb)
    examples = read_qa(train_file)
    dev_examples = read_qa(dev) if dev else None
    missing = _report_missing(knowledge, examples, train_file)
    if dev_examples:
        _report_missing(knowledge, dev_examples, dev)  # type: ignore[arg-type]
    kind = None if backbone == Backbone.auto else backbone.value
    kg = KgqaModel.create(
        knowledge,
        [e.question for e in examples],
        model=model,
        backbone=kind,
        d_model=d_model,
        layers=layers,
        heads=heads,
        ffn=ffn,
        dropout=dropout,
        max_question_tokens=max_question_tokens,
        copy=copy,
    )
    if kg.collisions:
        warn(f"{kg.collisions} KB keys tokenise identically to another key; the first one is kept in the trie")
    n_params = sum(p.numel() for p in kg.backbone.model.parameters())
    info(f"kg-qa train: {kg.config['backbone']} model, {n_params:,} parameters; KB {len(knowledge):,} keys")
    dev_eval = dev_examples[:eval_limit] if dev_examples and eval_limit else dev_examples
    per_epoch = steps_per_epoch(len(examples), batch_size)
    if per_epoch * epochs < MIN_STEPS:
        logger.warning(
            "kg-qa train will make only %d optimiser steps (%d epochs × %d batches of --batch-size %d); a model "
            "needs a few hundred to fit its KB: raise --epochs (to %d for %d steps) or lower --batch-size",
            per_epoch * epochs,
            epochs,
            per_epoch,
            batch_size,
            math.ceil(MIN_STEPS / per_epoch),
            MIN_STEPS,
        )
    training_dir = out_dir / "training"
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr if lr is not None else (1e-3 if model is None else 5e-5),
        warmup_ratio=warmup,
        seed=seed,
        device=dev_name,
        group_by_length=True,
        output_dir=str(training_dir),
        log_every=50,
        checkpoint_every=save_every,
        resume=resume,
    )

    eval_options = DecodeOptions(num_beams=eval_beams, renormalize=eval_renormalize, lookahead=eval_lookahead)
    started = time.perf_counter()
    with TrainingProgress("questions") as on_progress:
        result = fit(
            kg,
            examples,
            config,
            dev=dev_eval,
            eval_options=eval_options,
            on_progress=on_progress,
        )
    seconds = time.perf_counter() - started
    for event in result.history:
        if event.get("event") == "eval":
            info(f"step {event['step']}: dev Score {event['metrics'].get('Score', float('nan')):.4f}")
    kg.config["training"] = {"epochs": epochs, "steps": result.steps, "seconds": seconds, "parameters": n_params}
    kg.save(out_dir, kb_path=kb, copy_kb=not kb_link)
    for sub in ("checkpoint-last", "best"):  # resume state and the best-weights copy; train_log.jsonl stays
        shutil.rmtree(training_dir / sub, ignore_errors=True)
    metrics: dict[str, Any] = {
        "train_questions": len(examples),
        "train_answers_not_in_kb": missing,
        "kb_keys": len(knowledge),
        "parameters": n_params,
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "questions_per_s": result.examples_per_s,
        "final_loss": next((e["loss"] for e in reversed(result.history) if e.get("event") == "train"), None),
    }
    if dev_eval:
        scores = kgclue_scores(
            [c[0].answer if c else " |||  ||| " for c in kg.answer([e.question for e in dev_eval], eval_options)],
            [format_answer(*e.answer) for e in dev_eval],  # type: ignore[misc]
        )
        metrics.update({f"dev_{k}": v for k, v in scores.items()}, dev_questions=len(dev_eval))
        print_table("kg-qa train: dev (saved model)", ["", "value"], [[k, v] for k, v in scores.items()])
    params = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": config.lr,
        "warmup": warmup,
        "device": dev_name,
        "backbone": kg.config["backbone"],
        "d_model": d_model,
        "layers": layers,
        "heads": heads,
        "ffn": ffn,
        "dropout": dropout,
        "copy": copy,
        "max_question_tokens": max_question_tokens,
        "eval_beams": eval_beams,
        "eval_renormalize": eval_renormalize,
        "eval_lookahead": eval_lookahead,
    }
    inputs = [kb, train_file, *([dev] if dev else [])]
    write_metrics(
        str(out_dir / "metrics.json"), metrics, force=True, seed=seed, inputs=inputs, model=model, params=params
    )
    write_metrics(metrics_out, metrics, force=force, seed=seed, inputs=inputs, model=model, params=params)
    info(f"kg-qa train: model saved to {out_dir} ({result.steps} steps, {seconds:.0f} s)")


# -- predict ----------------------------------------------------------------------------------------------------------
@app.command("predict")
def predict(
    input: Annotated[str, typer.Argument(help="Questions as JSONL ({'question': ...}), or '-' for stdin.")],
    legacy_input: LegacyPositionalArg = None,
    model: ModelDirOpt = None,
    output: OutputOpt = "-",
    kb: KbOverrideOpt = None,
    top_k: TopKOpt = 5,
    num_beams: NumBeamsOpt = 5,
    no_trie: NoTrieOpt = False,
    renormalize: RenormOpt = False,
    lookahead: LookaheadOpt = False,
    subject_in_question: SubjectInQuestionOpt = False,
    text_col: Annotated[
        str, typer.Option("--text-col", help="The field of each input row that holds the question.")
    ] = "question",
    batch_size: BatchOpt = 32,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Answer every question: the input rows with 'answer' set to 'S ||| P ||| O' (KgCLUE's submission format) and
    'candidates' (the top-k triples with scores, the sum of the key's log-probabilities). The input is streamed:
    each batch of --batch-size questions is written (and flushed) as soon as it is decoded.

    Example: nlptool kg-qa predict test.jsonl --model kgqa-model -o predictions.jsonl
    """
    from nlptool.core.errors import NlptoolError
    from nlptool.core.io import check_output_path, chunked, open_writer
    from nlptool.core.kgqa import KgqaModel

    model_dir, input = model_and_input(model, input, legacy_input, command="kg-qa predict", required=True)
    check_output_path(output, force)
    opts = _options(num_beams, top_k, no_trie, renormalize, lookahead, subject_in_question, batch_size)
    kg = KgqaModel.load(model_dir, kb_path=kb, device=_device(device))
    n = 0
    with open_writer(output, "jsonl", force=force) as writer, progress("decoding", unit="questions") as advance:
        for block in chunked(_questions(input, text_col), batch_size):
            cands = kg.answer([r.question for r in block], opts)
            for row, cs in zip(block, cands, strict=True):
                rec = dict(row.record)
                rec["answer"] = cs[0].answer if cs else " |||  ||| "
                rec["candidates"] = [c.as_dict() for c in cs]
                writer.write(rec)
            writer.fh.flush()
            advance(len(block))
            n += len(block)
        if not n:
            raise NlptoolError(f"QA file {input} has no rows")
    info(f"kg-qa predict: {n} questions answered")


def _questions(path: str, field: str) -> Any:
    """The questions of a JSONL file (or '-'), streamed: QAExample rows (.question, .record) in input order."""
    from nlptool.core.kgqa import iter_qa

    return iter_qa(path, require_answer=False, question_field=field)


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

    from nlptool.core.errors import InputError, NlptoolError
    from nlptool.core.io import check_output_path, open_writer
    from nlptool.core.kgqa import KgqaModel, format_answer, kgclue_scores, parse_answer, read_qa

    model_dir, qa = model_and_input(model, qa, legacy_qa, command="kg-qa eval")
    paths, predictions_out = ([model_dir, qa] if model_dir is not None else [qa]), output
    if predictions is not None and len(paths) != 1:
        raise typer.BadParameter("give --model or --predictions, not both", param_hint="--predictions")
    if predictions is None and len(paths) != 2:
        raise typer.BadParameter("give a model folder (--model DIR) or --predictions FILE", param_hint="--model")
    qa_path = paths[-1]
    if metrics_out == "-" and predictions_out == "-":
        raise NlptoolError("--metrics-out - and -o - both write to stdout; send one of them to a file")
    check_output_path(metrics_out, force)
    check_output_path(predictions_out, force)
    gold = read_qa(qa_path)
    refs = [format_answer(*e.answer) for e in gold]  # type: ignore[misc]
    params: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if predictions is not None:
        preds = read_qa(predictions, require_answer=False, require_question=False)
        if len(preds) != len(gold):
            raise NlptoolError(
                f"{predictions} has {len(preds)} rows but {qa_path} has {len(gold)}; they pair by "
                "position, as in KgCLUE's script"
            )
        answers = []
        for p, g in zip(preds, gold, strict=True):
            if p.answer is None:
                raise InputError("missing", path=predictions, line=p.line, field="answer")
            if "id" in p.record and "id" in g.record and p.record["id"] != g.record["id"]:
                raise InputError(
                    f"id {p.record['id']!r} where {qa_path} line {g.line} has id {g.record['id']!r}; "
                    "rows pair by position",
                    path=predictions,
                    line=p.line,
                    field="id",
                )
            parse_answer(format_answer(*p.answer))
            answers.append(format_answer(*p.answer))
        model_name = None
    else:
        opts = _options(num_beams, 1, no_trie, renormalize, lookahead, subject_in_question, batch_size)
        kg = KgqaModel.load(paths[0], kb_path=kb, device=_device(device))
        _report_missing(kg.kb, gold, qa_path)
        started = time.perf_counter()
        cands = _answer_all(kg, [e.question for e in gold], opts)
        extra["decode_seconds"] = time.perf_counter() - started
        extra["not_in_kb"] = sum(1 for c in cands if c and not c[0].in_kb)
        answers = [c[0].answer if c else " |||  ||| " for c in cands]
        params = _decode_params(opts)
        model_name = paths[0]
        if predictions_out:
            with open_writer(predictions_out, "jsonl", force=force) as writer:
                for e, c in zip(gold, cands, strict=True):
                    writer.write(
                        {
                            **e.record,
                            "answer": c[0].answer if c else " |||  ||| ",
                            "candidates": [x.as_dict() for x in c],
                        }
                    )
    scores = kgclue_scores(answers, refs)
    metrics = {**scores, **extra, "questions": len(gold)}
    print_table(
        "kg-qa eval (KgCLUE metric)",
        ["", "EM", "F1"],
        [[f, scores[f"EM_{f}"], scores[f"F1_{f}"]] for f in ("S", "P", "O", "All")],
    )
    info(f"Score = 0.5·EM_O + 0.5·F1_O = {scores['Score']:.4f}")
    inputs = [qa_path, *([predictions] if predictions else [])]
    write_metrics(metrics_out, metrics, force=force, inputs=inputs, model=model_name, params=params)


# -- ask --------------------------------------------------------------------------------------------------------------
@app.command("ask")
def ask(
    model_dir: ModelDirArg,
    question: Annotated[
        str,
        typer.Argument(help="The question, or '-' to read questions from stdin (one per line).", show_default=False),
    ],
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

    Example: nlptool kg-qa ask kgqa-model "守望星光是哪家公司出品的？"

    Example: cat questions.txt | nlptool kg-qa ask kgqa-model - --min-score -5 > answers.jsonl
    """
    from nlptool.core.errors import NlptoolError
    from nlptool.core.io import check_output_path, chunked, open_writer
    from nlptool.core.kgqa import KgqaModel

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

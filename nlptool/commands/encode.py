"""``nlptool encode``: sentence embeddings from a model folder, hub id or the bundled default."""

from __future__ import annotations

import contextlib
import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from nlptool.commands._common import (
    DeviceOpt,
    ForceOpt,
    HeaderOpt,
    LegacyPositionalArg,
    ModelOpt,
    OutputOpt,
    ShardOpt,
    info,
    model_and_input,
    progress,
    warn_empty,
)
from nlptool.core.device import Device, resolve_device  # noqa: F401 - Device: re-exported for old imports
from nlptool.core.models import model_spec  # noqa: F401 - re-exported for the commands


class TextFormat(str, Enum):
    """Input formats for texts: ``text`` is one text per line."""

    auto = "auto"
    text = "text"
    jsonl = "jsonl"
    csv = "csv"
    tsv = "tsv"


class Pooling(str, Enum):
    cls = "cls"
    mean = "mean"
    first_last_avg = "first-last-avg"
    pooler = "pooler"


PoolingOpt = Annotated[
    Pooling | None, typer.Option("--pooling", help="Pooling (default: what the model was trained with, else mean).")
]
MaxLengthOpt = Annotated[
    int | None, typer.Option("--max-length", help="Max tokens per text (default: the model's setting).", min=1)
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Texts per forward pass.", min=1)]


TextsArg = Annotated[
    str, typer.Argument(help="Texts: a .txt file (one per line), CSV/TSV/JSONL with --text-col, or '-'.")
]
TextColOpt = Annotated[
    str | None,
    typer.Option("--text-col", help="Column/field with the text (default: text, sentence, else the first)."),
]
TextFormatOpt = Annotated[
    TextFormat,
    typer.Option(
        "--format",
        help="Input format; auto: by extension (.txt: lines), else sniffed: JSONL if it starts with '{', a CSV/TSV "
        "table with --text-col, else lines.",
    ),
]
NormalizeOpt = Annotated[
    bool | None,
    typer.Option(
        "--normalize/--no-normalize",
        help="L2-normalise the embeddings. Default: as the model's own pipeline does (all-MiniLM-L6-v2: yes).",
        show_default=False,
    ),
]
ChunkSizeOpt = Annotated[
    int, typer.Option("--chunk-size", help="Texts read, length-sorted and encoded at a time (memory bound).", min=1)
]


def encode(
    input: TextsArg,
    legacy_input: LegacyPositionalArg = None,
    model: ModelOpt = None,
    output: OutputOpt = "-",
    text_col: TextColOpt = None,
    input_format: TextFormatOpt = TextFormat.auto,
    normalize: NormalizeOpt = None,
    batch_size: BatchSizeOpt = 64,
    chunk_size: ChunkSizeOpt = 10000,
    pooling: PoolingOpt = None,
    max_length: MaxLengthOpt = None,
    device: DeviceOpt = "auto",
    header: HeaderOpt = None,
    shard: ShardOpt = None,
    force: ForceOpt = False,
) -> None:
    """Embed texts with a sentence encoder: JSONL rows {"line", "embedding"} on stdout, or .npy/.npz with -o.

    Texts are batched, sorted by length within each chunk (results keep the input order) and streamed, so inputs
    larger than memory work. With -o FILE.npy: a float32 (n, dim) array; FILE.npz: arrays "embeddings" and "lines"
    (1-based input line of each text); other names: JSONL. Under torchrun (or with --shard i/n) each process embeds
    every n-th text and rank 0 merges the parts into the same output as one process (see nlptool merge-shards).

    Example: nlptool encode sentences.txt --model my-model/ -o embeddings.npy

    Reference: CoSENT, Su Jianlin, https://kexue.fm/archives/8847 (models from nlptool train-cosent)
    """
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.io import chunked, iter_texts
    from nlptool.core.shard import Shard

    model, input = model_and_input(model, input, legacy_input, command="encode")
    sh = Shard.resolve(shard)
    sh.check(input, output, force)
    suffix = Path(output).suffix.lower() if output != "-" else ""
    suffix = suffix if suffix in (".npy", ".npz") else ""
    encoder = SentenceEncoder.load(model_spec(model), pooling=pooling.value if pooling else None, max_length=max_length)
    dev = resolve_device(device)
    normalize = encoder.normalizes if normalize is None else normalize
    chunks = chunked(sh.select(iter_texts(input, text_col, input_format.value, header=header)), chunk_size)
    with progress("encode", unit="texts") as advance, sh.output(output, force=force, fmt=suffix[1:] or "jsonl") as out:

        def embed(chunk: list[tuple[int, str]]) -> Any:
            return encoder.encode(
                [t for _, t in chunk], batch_size=batch_size, normalize=normalize, device=dev, progress=advance
            )

        write = _write_array if suffix else _write_jsonl
        total = write(chunks, embed, out.path, out.force, suffix, encoder.dim)
    if (out.rows if sh.torchrun else total) == 0 and sh.main:
        warn_empty(input)
    if output != "-":
        info(f"encode: {total} texts × {encoder.dim} dims from {encoder.name} written to {out.path}")
    if out.rows is not None and output != "-":
        info(f"encode: {out.rows} texts of {sh.count} shards merged into {output}")


def _write_jsonl(chunks: Any, embed: Any, path: str, force: bool, suffix: str, dim: int) -> int:
    """JSONL rows {"line", "embedding"}, flushed per chunk; returns the number of texts."""
    from nlptool.core.io import open_writer

    total = 0
    with open_writer(path, "jsonl", force=force) as writer:
        for chunk in chunks:
            for (line, _), vec in zip(chunk, embed(chunk), strict=True):
                writer.fh.write(f'{{"line": {line}, "embedding": [{", ".join(map(str, vec))}]}}\n')
            writer.fh.flush()
            total += len(chunk)
    return total


def _write_array(chunks: Any, embed: Any, path: str, force: bool, suffix: str, dim: int) -> int:
    """A float32 (n, dim) array (.npy), or arrays "embeddings" and "lines" (.npz), through a spool file on disk (chunks
    are written as they come; the array is saved atomically at the end); returns the number of texts."""
    import numpy as np

    from nlptool.core.io import atomic_output

    spool_fd, spool = _spool_path(path)
    lines_all: list[int] = []
    total = 0
    try:
        with os.fdopen(spool_fd, "wb") as raw:
            for chunk in chunks:
                raw.write(np.ascontiguousarray(embed(chunk), dtype=np.float32).tobytes())
                lines_all += [ln for ln, _ in chunk]
                total += len(chunk)
        shape = (total, dim)
        matrix = np.memmap(spool, dtype=np.float32, mode="r", shape=shape) if total else np.zeros(shape, np.float32)
        with atomic_output(path, force=force, binary=True) as fh:
            if suffix == ".npy":
                np.save(fh, matrix)
            else:
                np.savez(fh, embeddings=matrix, lines=np.asarray(lines_all, dtype=np.int64))
        del matrix
    finally:
        with contextlib.suppress(OSError):
            os.unlink(spool)
    return total


def _spool_path(output: str) -> tuple[int, str]:
    import tempfile

    target = Path(output)
    return tempfile.mkstemp(prefix=f".{target.name}.", suffix=".f32", dir=target.parent)

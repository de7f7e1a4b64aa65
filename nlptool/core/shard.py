"""Sharded prediction: split a predictor's input rows across processes and merge their outputs in input order.

A predictor (``encode``, ``ner predict``, ``zero-shot``, ``kg-qa predict``) runs as n processes, either under
``torchrun --nproc_per_node n`` (rank r of n, from ``RANK``/``WORLD_SIZE``) or as n separate runs with
``--shard i/n``. Every process reads the whole input and keeps the rows of its shard **round-robin**: row k (0-based,
in input order) belongs to shard ``k % n``. Round-robin needs no row count up front (stdin and inputs larger than
memory stream as before), balances the shards to within one row, and makes the input order recoverable from the
parts alone: the merged output is part 0's first row, part 1's first row, ..., part 0's second row, ... (the parts'
row counts must be non-increasing and differ by at most one, which the merge checks).

Each process writes its rows to ``OUTPUT.part-i-of-n`` (atomically); a predictor must write exactly one output row
per input row, in its shard's order. Under torchrun, rank 0 waits for the others (a ``torch.distributed`` barrier on
gloo), merges the parts into ``OUTPUT`` (atomically; an existing ``OUTPUT`` needs ``--force``) and removes them;
``-o -`` puts the parts in a temporary folder and rank 0 writes the merged rows to stdout. With ``--shard i/n`` each
run leaves its part and ``nlptool merge-shards OUTPUT`` (:func:`merge_shards`) merges them. Across machines the
parts must land in one shared folder (``-o -`` under torchrun: one machine only, the parts go to rank 0's temp folder).
``--shard 0/1`` is a single process (it writes OUTPUT itself).

Merging handles JSONL, CSV/TSV (one header), ``.npy`` (rows interleaved, streamed) and ``.npz`` (every array
interleaved along axis 0, e.g. encode's ``embeddings`` and ``lines``).

Adopting it in a command::

    shard = Shard.resolve(shard_opt)               # --shard i/n, torchrun, or a single process
    shard.check(input, output, force)              # before loading models: usage and --force rules
    rows = shard.select(iter_texts(...))           # this process's rows
    with shard.output(output, force=force) as out:  # out.path: where this process writes (OUTPUT or its part)
        ... write to out.path with force=out.force, in the format of OUTPUT (not of the part's name) ...
    # after the block (rank 0 under torchrun): OUTPUT holds the merged rows; out.rows counts them
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from nlptool.core.errors import NlptoolError
from nlptool.core.io import atomic_output, check_output_path, format_from_path

T = TypeVar("T")

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_PART_RE = re.compile(r"\.part-(\d+)-of-(\d+)$")
#: The formats :func:`merge_parts` joins.
MERGE_FORMATS = ("jsonl", "csv", "tsv", "npy", "npz")
#: Rows per block when interleaving .npy parts (bounds the merge's memory).
_BLOCK_ROUNDS = 4096
#: How long rank 0 waits for the other ranks at the barrier (a slow rank is not an error; a dead one ends torchrun).
BARRIER_TIMEOUT_S = 7 * 24 * 3600


def parse_shard(value: str) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with ``0 <= i < n``; ``ValueError`` (with the fix) otherwise."""
    m = _SHARD_RE.match(str(value))
    if not m:
        raise ValueError(f"'{value}' is not i/n; give this process's shard and the number of shards, e.g. 0/2 and 1/2")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1:
        raise ValueError(f"'{value}': the number of shards must be at least 1")
    if index >= count:
        raise ValueError(f"'{value}': shards are numbered 0 to {count - 1}")
    return index, count


def part_path(output: str | os.PathLike, index: int, count: int) -> str:
    """The part file of shard ``index`` of ``count``: ``OUTPUT.part-i-of-n``."""
    return f"{output}.part-{index}-of-{count}"


def _torchrun_world() -> tuple[int, int]:
    """``(rank, world_size)`` from the process group if one is running, else torchrun's environment, else (0, 1)."""
    if "torch" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class Shard:
    """This process's share of a prediction: shard ``index`` of ``count``; ``torchrun``: ranks merge themselves."""

    index: int = 0
    count: int = 1
    torchrun: bool = False

    @classmethod
    def resolve(cls, shard: str | None = None) -> Shard:
        """From ``--shard i/n`` (validated; see :func:`parse_shard`), else torchrun's rank and world size, else a single
        process. ``--shard`` under a multi-process torchrun is refused: the two would split the input twice."""
        rank, world = _torchrun_world()
        if shard is not None:
            index, count = parse_shard(shard)
            if world > 1:
                raise NlptoolError(
                    f"--shard {shard} under torchrun ({world} processes): torchrun already splits the input by rank; "
                    "drop --shard"
                )
            return cls(index, count, torchrun=False)
        if world > 1:
            return cls(rank, world, torchrun=True)
        return cls()

    @property
    def active(self) -> bool:
        """Whether the input is split (more than one shard)."""
        return self.count > 1

    @property
    def main(self) -> bool:
        """Whether this process reports the whole result (and, under torchrun, merges): shard 0."""
        return self.index == 0

    def select(self, rows: Iterable[T]) -> Iterator[T]:
        """This shard's rows of ``rows``, lazily: rows ``index, index + count, index + 2·count, ...``."""
        if not self.active:
            return iter(rows)
        return itertools.islice(rows, self.index, None, self.count)

    def part(self, output: str) -> str:
        return part_path(output, self.index, self.count)

    def check(self, input: str, output: str, force: bool) -> None:
        """Fail early, before any work: ``--shard`` with ``-o -`` (a part needs a file), torchrun with input from
        stdin (the ranks would share one stream), and the ``--force`` rule for the file this process will create
        (its part with ``--shard``, the merged output under torchrun)."""
        if not self.active:
            check_output_path(output, force)
            return
        if not self.torchrun:
            if output == "-":
                raise NlptoolError(
                    f"--shard {self.index}/{self.count} writes a part file, not stdout; give -o FILE (the part is "
                    "FILE.part-i-of-n; 'nlptool merge-shards FILE' joins the parts)"
                )
            check_output_path(self.part(output), force)
            return
        if input == "-":
            raise NlptoolError(
                f"input from stdin under torchrun ({self.count} processes): every rank reads the whole input, and "
                "they cannot share one stream; give the input as a file"
            )
        check_output_path(output, force)

    @contextlib.contextmanager
    def output(self, output: str, *, force: bool = False, fmt: str | None = None) -> Iterator[ShardOutput]:
        """Where this process writes (``out.path``), and the merge after it has written.

        Single process: ``output`` itself. ``--shard i/n``: its part file (``--force`` rules apply to it). Under
        torchrun: its part (a stale one from an interrupted run is replaced), then a barrier; rank 0 merges the parts
        into ``output`` and removes them (``-o -``: parts in a temporary folder, merged rows on stdout). The merge
        runs only when the block succeeds; a rank that fails ends the torchrun job. ``out.rows``: the merged row
        count (rank 0 under torchrun), else ``None``. ``fmt``: what the command writes (``jsonl``, ``csv``, ``tsv``,
        ``npy``, ``npz``) when the extension of ``output`` does not say it (default: by extension, else JSONL).
        """
        if not self.active:
            yield ShardOutput(output, force)
            return
        if not self.torchrun:
            yield ShardOutput(self.part(output), force)
            return
        dist, created = _process_group()
        tmpdir: str | None = None
        try:
            if output == "-":
                box = [tempfile.mkdtemp(prefix="nlptool-shards-") if self.main else None]
                dist.broadcast_object_list(box, src=0)
                tmpdir = box[0]
                base = os.path.join(str(tmpdir), "stdout")
            else:
                base = output
            out = ShardOutput(part_path(base, self.index, self.count), force=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(out.path)  # ours: a stale part of an interrupted run
            yield out
            dist.barrier()
            if self.main:
                parts = [part_path(base, i, self.count) for i in range(self.count)]
                out.rows = merge_parts(parts, output, force=force, fmt=fmt)
                for p in parts:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(p)
        finally:
            if tmpdir is not None and self.main:
                shutil.rmtree(tmpdir, ignore_errors=True)
            if created:
                dist.destroy_process_group()


@dataclass
class ShardOutput:
    """Where one process writes (``path``: the output or a part; ``force``: the ``--force`` to write it with) and,
    after the merge, how many rows the merged output holds."""

    path: str
    force: bool = False
    rows: int | None = None


def _process_group() -> tuple[Any, bool]:
    """``torch.distributed`` with a process group (gloo, started here unless one runs); whether it was started here."""
    from datetime import timedelta

    import torch.distributed as dist

    if dist.is_initialized():
        return dist, False
    dist.init_process_group("gloo", timeout=timedelta(seconds=BARRIER_TIMEOUT_S))
    return dist, True


def _merge_format(output: str) -> str:
    """``npy``, ``npz`` or a table format (``jsonl`` default; stdout: JSONL) for a merged ``output``."""
    suffix = Path(output).suffix.lower() if output != "-" else ""
    if suffix in (".npy", ".npz"):
        return suffix[1:]
    return format_from_path(output, None, default="jsonl") or "jsonl"


# -- merging -----------------------------------------------------------------------------------------------------------
def find_parts(output: str) -> list[str]:
    """The part files ``OUTPUT.part-i-of-n`` of ``output``, ordered by i; an error when none, a mix of n, or a gap."""
    target = Path(output)
    folder = target.parent if str(target.parent) else Path(".")
    found: dict[int, set[int]] = {}
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.startswith(target.name + ".part-"):
                m = _PART_RE.search(entry.name)
                if m and entry.name == f"{target.name}.part-{m.group(1)}-of-{m.group(2)}":
                    found.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    if not found:
        raise NlptoolError(
            f"no part files {output}.part-i-of-n; run the command with --shard i/n -o {output} for each shard first"
        )
    if len(found) > 1:
        counts = ", ".join(f"of-{n}" for n in sorted(found))
        raise NlptoolError(f"part files of {output} from different splits ({counts}); remove the ones of the old split")
    ((count, indices),) = found.items()
    missing = sorted(set(range(count)) - indices)
    if missing:
        names = ", ".join(part_path(output, i, count) for i in missing)
        raise NlptoolError(f"missing part files {names}; run the command with --shard i/{count} for those shards")
    return [part_path(output, i, count) for i in range(count)]


def merge_shards(
    output: str, *, force: bool = False, to: str | None = None, keep_parts: bool = False, fmt: str | None = None
) -> int:
    """Merge ``OUTPUT.part-*-of-n`` (see :func:`find_parts`) into ``to`` (default ``output``; ``-``: stdout, table
    formats only), in input order; remove the parts unless ``keep_parts``. ``fmt``: the parts' format (default: by
    the extension of ``output``, else JSONL). Returns the number of rows."""
    parts = find_parts(output)
    dest = output if to is None else to
    rows = merge_parts(parts, dest, force=force, fmt=fmt or _merge_format(output))
    if not keep_parts:
        for p in parts:
            os.unlink(p)
    return rows


def merge_parts(parts: list[str], output: str, *, force: bool = False, fmt: str | None = None) -> int:
    """Interleave ``parts`` (shard 0, 1, ... of a round-robin split) into ``output`` (``-``: stdout), atomically;
    ``fmt``: ``npy``, ``npz``, ``jsonl``, ``csv`` or ``tsv`` (default: by ``output``'s extension). Returns the rows."""
    fmt = fmt or _merge_format(output)
    if fmt not in MERGE_FORMATS:
        raise NlptoolError(f"cannot merge '{fmt}' parts; formats: {', '.join(MERGE_FORMATS)}")
    if output != "-":
        check_output_path(output, force)
    if fmt in ("npy", "npz"):
        if output == "-":
            raise NlptoolError(f".{fmt} parts cannot go to stdout; give an output file name")
        with atomic_output(output, force=force, binary=True) as fh:
            return _merge_npy(parts, fh) if fmt == "npy" else _merge_npz(parts, fh, output)
    if output == "-":
        rows = _merge_text(parts, sys.stdout, fmt)
        sys.stdout.flush()
        return rows
    with atomic_output(output, force=force) as fh:
        return _merge_text(parts, fh, fmt)


def _check_sizes(parts: list[str], sizes: list[int]) -> None:
    """Round-robin parts have non-increasing sizes that differ by at most one."""
    ok = all(a >= b for a, b in itertools.pairwise(sizes)) and (not sizes or sizes[0] - sizes[-1] <= 1)
    if not ok:
        listing = ", ".join(f"{Path(p).name}: {n}" for p, n in zip(parts, sizes, strict=True))
        raise NlptoolError(
            f"the part files do not fit one round-robin split of one input ({listing} rows); rerun every shard "
            "with the same input and options"
        )


def _text_rows(fh: IO[str], fmt: str) -> Iterator[str]:
    """The rows of a JSONL/CSV/TSV part as the exact text written (CSV rows may span lines inside quotes)."""
    if fmt == "jsonl":
        for line in fh:
            if line.strip():
                yield line if line.endswith("\n") else line + "\n"
        return
    buf: list[str] = []
    quotes = 0
    for line in fh:  # csv.writer doubles quotes inside fields: a row ends where the quotes so far are balanced
        buf.append(line)
        quotes += line.count('"')
        if quotes % 2 == 0:
            text = "".join(buf)
            buf, quotes = [], 0
            yield text if text.endswith("\n") else text + "\n"
    if buf:
        yield "".join(buf)


def _merge_text(parts: list[str], out: IO[str], fmt: str) -> int:
    handles = [open(p, encoding="utf-8", newline="") for p in parts]  # noqa: SIM115 - closed below
    try:
        iters = [_text_rows(h, fmt) for h in handles]
        header: str | None = None
        if fmt in ("csv", "tsv"):  # every non-empty part starts with the same header
            for p, it in zip(parts, iters, strict=True):
                first = next(it, None)
                if first is None:
                    continue
                if header is None:
                    header = first
                    out.write(header)
                elif first != header:
                    raise NlptoolError(f"{p}: its header differs from part 0's; rerun every shard alike")
        sizes = [0] * len(parts)
        live = list(range(len(parts)))
        rows = 0
        while live:
            still = []
            for k in live:
                row = next(iters[k], None)
                if row is None:
                    continue
                out.write(row)
                sizes[k] += 1
                rows += 1
                still.append(k)
            live = still if len(still) == len(live) else _finish_round(still, iters, parts, sizes)
        _check_sizes(parts, sizes)
        return rows
    finally:
        for h in handles:
            h.close()


def _finish_round(still: list[int], iters: list[Iterator[str]], parts: list[str], sizes: list[int]) -> list[int]:
    """A part ran out: the round-robin split is over; any part with more rows does not fit (reported by size)."""
    for k in still:
        sizes[k] += sum(1 for _ in iters[k])
    _check_sizes(parts, sizes)
    return []


def _load_parts(parts: list[str]) -> list[Any]:
    import numpy as np

    try:
        return [np.load(p, mmap_mode="r", allow_pickle=False) for p in parts]
    except (OSError, ValueError) as exc:
        raise NlptoolError(f"cannot read the part files as numpy arrays: {exc}") from None


def _interleave_npy(arrays: list[Any], fh: IO[bytes], parts: list[str], name: str = "") -> int:
    """Write the row-interleaved ``arrays`` as one .npy to ``fh``, a block of rows at a time."""
    import numpy as np

    first = arrays[0]
    for p, a in zip(parts, arrays, strict=True):
        if a.shape[1:] != first.shape[1:] or a.dtype != first.dtype:
            raise NlptoolError(
                f"{p}{name}: shape {a.shape} / {a.dtype} does not match part 0's {first.shape} / {first.dtype}; rerun "
                "every shard with the same model and options"
            )
    sizes = [len(a) for a in arrays]
    _check_sizes(parts, sizes)
    n, total = len(arrays), sum(sizes)
    shape = (total, *first.shape[1:])
    header = {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(fh, header)
    for r0 in range(0, sizes[0], _BLOCK_ROUNDS):
        r1 = min(r0 + _BLOCK_ROUNDS, sizes[0])
        block = np.empty((min(total, r1 * n) - r0 * n, *first.shape[1:]), dtype=first.dtype)
        for k, a in enumerate(arrays):
            block[k::n] = a[r0:r1]
        fh.write(np.ascontiguousarray(block).tobytes())
    return total


def _merge_npy(parts: list[str], fh: IO[bytes]) -> int:
    return _interleave_npy(_load_parts(parts), fh, parts)


def _merge_npz(parts: list[str], fh: IO[bytes], output: str) -> int:
    """Interleave every array of the .npz parts along axis 0 (one array name at a time: .npz members load whole)."""
    import numpy as np

    archives = _load_parts(parts)
    try:
        names = list(archives[0].files)
        for p, z in zip(parts, archives, strict=True):
            if sorted(z.files) != sorted(names):
                raise NlptoolError(f"{p}: arrays {sorted(z.files)} differ from part 0's {sorted(names)}")
        folder = tempfile.mkdtemp(prefix=f".{Path(output).name}.", dir=Path(output).parent)
        try:
            rows = 0
            merged = {}
            for name in names:
                spool = os.path.join(folder, f"{name}.npy")
                with open(spool, "wb") as out:
                    rows = _interleave_npy([z[name] for z in archives], out, parts, f" ({name})")
                merged[name] = np.load(spool, mmap_mode="r")
            np.savez(fh, **merged)
            del merged
            return rows
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        for z in archives:
            z.close()

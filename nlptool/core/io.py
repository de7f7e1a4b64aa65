"""Readers and writers for the tables nlptool reads and writes: CSV, TSV and JSONL, with ``-`` for stdin/stdout.

Reading streams record by record (a 1 GB JSONL is never held in memory as a whole); every record carries the 1-based
physical line it ends on, so errors can name ``file:line: field 'x': ...``. Writing goes to a temporary file in the
target's folder that is renamed over the target only when the command succeeds, so a failed run leaves no partial
output; an existing file is only replaced with ``force=True``.

Formats are chosen by ``fmt`` or by the file's extension (``.jsonl``/``.ndjson``/``.json`` → JSONL, ``.csv`` → CSV,
``.tsv``/``.tab`` → TSV). Standard input without ``fmt`` is sniffed from its first line: ``{`` starts JSONL, a tab
means TSV, anything else CSV.

CSV/TSV headers: with ``header=None`` (auto) the first row is a header unless one of its fields parses as a number
(the STS-B and SentEval files have no header and end in a numeric score). Headerless columns are named ``"0"``,
``"1"``, ... in order.

Decoding is one path for every command (:class:`TextLines`): bytes are read (stdin too, through ``sys.stdin.buffer``)
and decoded as strict UTF-8 line by line, so a bad byte is an :class:`InputError` naming the file (or ``<stdin>``)
and the line it is on, never a traceback nor a silent U+FFFD; a UTF-8 byte-order mark is dropped and CRLF endings
work. Texts to embed, tag or classify are read with :class:`TextReader` / :func:`iter_texts` (a ``.txt`` file, one
text per line, or a column of a CSV/TSV/JSONL table); commands that read their input twice use
:func:`replayable` (stdin copied to a temporary file that is always removed).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nlptool.core.errors import InputError, NlptoolError

FORMATS = ("jsonl", "csv", "tsv")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
}
_DELIMITERS = {"csv": ",", "tsv": "\t"}

# Fields can be long (documents); lift the csv module's 128 KiB default.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def display_name(path: str | os.PathLike) -> str:
    """How a path appears in messages: ``<stdin>`` for ``-``."""
    return "<stdin>" if str(path) == "-" else str(path)


def format_from_path(path: str | os.PathLike, fmt: str | None = None, *, default: str | None = None) -> str | None:
    """The format named by ``fmt`` or by the file extension (``None`` when neither tells and there is no default)."""
    if fmt is not None and fmt != "auto":
        if fmt not in FORMATS:
            raise NlptoolError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
        return fmt
    if str(path) != "-":
        suffixes = Path(str(path)).suffixes
        # data.csv.part or data.jsonl.tmp: look at every suffix from the right
        for suffix in reversed(suffixes):
            if suffix.lower() in _EXTENSIONS:
                return _EXTENSIONS[suffix.lower()]
    return default


def _sniff_format(first_line: str) -> str:
    stripped = first_line.lstrip("\ufeff").lstrip()
    if stripped.startswith("{"):
        return "jsonl"
    if "\t" in first_line:
        return "tsv"
    return "csv"


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


BOM = b"\xef\xbb\xbf"


class TextLines:
    """The lines of a file or stdin, decoded as strict UTF-8, line endings kept; iterate once.

    Args:
        path: a file path or ``-`` for stdin.
        stdin: the stream to read for ``-`` (default ``sys.stdin``): its binary ``buffer`` is read when it has one; a
            binary stream is read as is; a text stream without a buffer (``io.StringIO``) is taken as decoded.
        name: the name errors give (default: the path, ``<stdin>`` for ``-``); for a spooled copy of stdin.

    A UTF-8 byte-order mark at the start is dropped. A byte sequence that is not UTF-8 raises :class:`InputError`
    with the file, the line it is on (counted from the byte offset) and the byte offset. ``line_no`` is the number
    of the last line returned.
    """

    def __init__(self, path: str | os.PathLike, *, stdin: IO[Any] | None = None, name: str | None = None):
        self.path = str(path)
        self.name = name if name is not None else self.path
        self.line_no = 0
        self._text: IO[str] | None = None
        self._bin: IO[bytes] | None = None
        self._owns = False
        if self.path == "-":
            stream: Any = stdin if stdin is not None else sys.stdin
            if isinstance(stream, (io.RawIOBase, io.BufferedIOBase)):
                self._bin = stream
            elif getattr(stream, "buffer", None) is not None:
                self._bin = stream.buffer
            else:
                self._text = stream
        else:
            p = Path(self.path)
            if not p.exists():
                raise NlptoolError(f"input file {self.path} does not exist; check the path")
            if p.is_dir():
                raise NlptoolError(f"input {self.path} is a folder, not a file; give a file")
            try:
                self._bin = open(p, "rb")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                raise NlptoolError(
                    f"cannot read input file {self.path} ({exc.strerror}); check its permissions"
                ) from None
            self._owns = True
        self._it = self._lines()

    def _lines(self) -> Iterator[str]:
        if self._text is not None:
            try:
                for n, line in enumerate(self._text, start=1):
                    self.line_no = n
                    yield line.lstrip("\ufeff") if n == 1 else line
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"not valid UTF-8 text ({exc.reason}); convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)",
                    path=self.name,
                    line=self.line_no + 1,
                ) from None
            return
        assert self._bin is not None
        offset = 0
        for n, raw in enumerate(self._bin, start=1):
            if n == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
                offset = len(BOM)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"not valid UTF-8 text (byte 0x{raw[exc.start]:02x} at byte offset {offset + exc.start}); "
                    "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)",
                    path=self.name,
                    line=n,
                ) from None
            offset += len(raw)
            self.line_no = n
            yield line

    def __iter__(self) -> Iterator[str]:
        return self._it

    def __next__(self) -> str:
        return next(self._it)

    def close(self) -> None:
        if self._owns and self._bin is not None:
            self._bin.close()

    def __enter__(self) -> TextLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_lines(path: str | os.PathLike, *, stdin: IO[Any] | None = None, name: str | None = None) -> TextLines:
    """Open ``path`` (``-``: stdin) for strict UTF-8 line reading; see :class:`TextLines`."""
    return TextLines(path, stdin=stdin, name=name)


def read_text(path: str | os.PathLike, *, stdin: IO[Any] | None = None) -> str:
    """The whole text of a small file (a config, a prior, a labels file) through :class:`TextLines`: strict UTF-8
    with the line of a bad byte in the error, BOM dropped."""
    with TextLines(path, stdin=stdin) as lines:
        return "".join(lines)


@contextlib.contextmanager
def replayable(path: str | os.PathLike, *, stdin: IO[Any] | None = None) -> Iterator[str]:
    """A path that can be read more than once: ``path`` itself, or for ``-`` a temporary copy of stdin.

    The copy holds the raw bytes (decoding, and its errors, happen when it is read: pass ``name="-"`` to the reader
    so that messages say ``<stdin>``) and is removed when the block ends, on errors and interrupts too.
    """
    if str(path) != "-":
        yield str(path)
        return
    stream: Any = stdin if stdin is not None else sys.stdin
    fd, tmp = tempfile.mkstemp(prefix="nlptool-stdin-", suffix=".spool")
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(stream, (io.RawIOBase, io.BufferedIOBase)):
                shutil.copyfileobj(stream, fh, 1 << 20)
            elif getattr(stream, "buffer", None) is not None:
                shutil.copyfileobj(stream.buffer, fh, 1 << 20)
            else:
                while block := stream.read(1 << 20):
                    fh.write(block.encode("utf-8", "surrogateescape"))
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@dataclass
class Record:
    """One input row: its fields and the 1-based physical line it ends on."""

    line: int
    data: dict[str, Any]


class TableReader:
    """Iterate the records of a CSV/TSV/JSONL file or stdin, lazily.

    Args:
        path: a file path or ``-`` for stdin.
        fmt: ``jsonl``, ``csv``, ``tsv`` or ``None``/``"auto"`` (extension, else sniffed).
        header: CSV/TSV only: ``True``, ``False`` or ``None`` for auto-detection (see the module docstring).
        names: CSV/TSV only: column names to use instead of the header / positional names.
        stdin: the stream for ``-`` (see :class:`TextLines`).
        name: the name errors give instead of ``path`` (``-`` for a spooled copy of stdin).

    Use as a context manager (it closes the file) and iterate it for :class:`Record` objects. ``fieldnames`` is
    known after construction for CSV/TSV (``None`` for JSONL).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fmt: str | None = None,
        *,
        header: bool | None = None,
        names: Sequence[str] | None = None,
        stdin: IO[Any] | None = None,
        name: str | None = None,
        _source: TextLines | None = None,
    ):
        self._source = _source if _source is not None else TextLines(path, stdin=stdin, name=name)
        self.path = self._source.name  # what errors name (a spooled copy of stdin reads as '-')
        self.name = display_name(self.path)
        self._fh = self._source._bin
        self._lines: Iterator[str] = iter(self._source)
        first = self._peek_first_line()
        self.fmt = format_from_path(str(path), fmt) or (_sniff_format(first) if first is not None else "jsonl")
        self.fieldnames: list[str] | None = None
        self._csv_rows: Iterator[tuple[int, list[str]]] | None = None
        if self.fmt in _DELIMITERS:
            self._init_csv(header, names)

    # -- plumbing ---------------------------------------------------------------------------------------------------
    def _peek_first_line(self) -> str | None:
        """The first non-blank line (for sniffing), put back with the blank lines before it."""
        seen: list[str] = []
        first = None
        for line in self._lines:
            seen.append(line)
            if line.strip():
                first = line
                break
        self._lines = itertools.chain(seen, self._lines)
        return first

    def _init_csv(self, header: bool | None, names: Sequence[str] | None) -> None:
        delimiter = _DELIMITERS[self.fmt]
        reader = csv.reader(self._lines, delimiter=delimiter)
        name = self.path

        def rows() -> Iterator[tuple[int, list[str]]]:
            try:
                for row in reader:
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue  # blank line
                    if reader.line_num == 1 and row and row[0].startswith("\ufeff"):
                        row[0] = row[0][1:]
                    yield reader.line_num, row
            except csv.Error as exc:
                raise InputError(f"malformed {self.fmt.upper()} ({exc})", path=name, line=reader.line_num) from None

        it = rows()
        try:
            first_line, first = next(it)
        except StopIteration:
            self.fieldnames = list(names) if names else []
            self._csv_rows = iter(())
            return
        is_header = header if header is not None else not any(_is_number(v.strip()) for v in first)
        if is_header:
            cols = [c.strip() for c in first]
            dupes = sorted({c for c in cols if cols.count(c) > 1})
            if dupes:
                raise InputError(
                    f"duplicate column name(s) {', '.join(dupes)} in the header", path=name, line=first_line
                )
            self.fieldnames = list(names) if names else cols
            self._csv_rows = it
        else:
            self.fieldnames = list(names) if names else [str(i) for i in range(len(first))]
            self._csv_rows = itertools.chain([(first_line, first)], it)

    # -- iteration --------------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Record]:
        if self.fmt == "jsonl":
            return self._iter_jsonl()
        return self._iter_csv()

    def _iter_jsonl(self) -> Iterator[Record]:
        for line_no, line in enumerate(self._lines, start=1):
            if line_no == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"invalid JSON ({exc.msg} at column {exc.colno})", path=self.path, line=line_no
                ) from None
            if not isinstance(obj, dict):
                raise InputError(
                    f"expected a JSON object per line, found {type(obj).__name__}", path=self.path, line=line_no
                )
            yield Record(line_no, obj)

    def _iter_csv(self) -> Iterator[Record]:
        assert self._csv_rows is not None and self.fieldnames is not None
        names = self.fieldnames
        for line_no, row in self._csv_rows:
            if len(row) != len(names):
                raise InputError(
                    f"expected {len(names)} fields ({', '.join(names)}), found {len(row)}; "
                    "check the delimiter and quoting",
                    path=self.path,
                    line=line_no,
                )
            yield Record(line_no, dict(zip(names, row, strict=True)))

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> TableReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: str | os.PathLike, fmt: str | None = None, **kwargs: Any) -> TableReader:
    """Open ``path`` for reading records; see :class:`TableReader`."""
    return TableReader(path, fmt, **kwargs)


#: Columns tried, in order, for the text when no column is named (then the first column).
TEXT_COLUMNS = ("text", "sentence", "sentence1", "content", "description", "0")
TEXT_FORMATS = ("text", *FORMATS)


@dataclass(slots=True)
class TextRecord:
    """One text to process: the 1-based line it ends on, the text, and the whole row (``{"text": ...}`` for .txt)."""

    line: int
    text: str
    data: dict[str, Any]


class TextReader:
    """Texts from a plain-text file (one text per line) or a column of a CSV/TSV/JSONL table, or stdin; lazily.

    The one reader of every command that embeds, tags or classifies texts, so they all accept the same inputs.

    Args:
        path: a file or ``-`` for stdin.
        text_col: the column/field holding the text; default the first of ``default_cols`` present, else the first.
        fmt: ``text``, ``jsonl``, ``csv``, ``tsv``; ``None``/``auto``: by extension (``.txt``: text), else (stdin,
            other extensions) sniffed from the first non-blank line: ``{`` → JSONL; otherwise a CSV/TSV table (a
            tab → TSV) when ``text_col`` is given or ``table=True``, else plain text.
        header: CSV/TSV header (see :class:`TableReader`).
        keep_blank: plain text: yield blank lines before the last text as empty texts (output rows stay aligned
            with input lines) instead of skipping them; trailing blank lines are always dropped, so an input of
            blank lines only has no texts.
        table: sniff a table rather than plain text for stdin/unknown extensions (commands with label columns).
        default_cols: the column names tried when ``text_col`` is not given.

    Every row must hold a string in the text column (an :class:`InputError` with file, line and field otherwise).
    ``fieldnames`` (CSV/TSV header, ``["text"]`` for plain text, ``None`` for JSONL) and ``fmt`` are known after
    construction; ``text_col`` once the first row is read.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        text_col: str | None = None,
        fmt: str | None = None,
        header: bool | None = None,
        keep_blank: bool = False,
        table: bool = False,
        default_cols: Sequence[str] = TEXT_COLUMNS,
        stdin: IO[Any] | None = None,
        name: str | None = None,
    ):
        if fmt == "auto":
            fmt = None
        if fmt is not None and fmt not in TEXT_FORMATS:
            raise NlptoolError(f"unknown format '{fmt}'; choose one of {', '.join(TEXT_FORMATS)}")
        self.path = str(path) if name is None else name
        self.text_col = text_col
        self.keep_blank = keep_blank
        self.default_cols = tuple(default_cols)
        self._table: TableReader | None = None
        self._lines: TextLines | None = None
        kind = fmt
        if kind is None and str(path) != "-":
            kind = format_from_path(path) or ("text" if Path(str(path)).suffix.lower() == ".txt" else None)
        source = TextLines(path, stdin=stdin, name=self.path)
        if kind is None:  # sniff the first non-blank line
            seen: list[str] = []
            first = None
            for line in source:
                seen.append(line)
                if line.strip():
                    first = line
                    break
            if first is None:
                kind = "text"
            elif first.lstrip().startswith("{"):
                kind = "jsonl"
            elif text_col is not None or table:
                kind = "tsv" if "\t" in first else "csv"
            else:
                kind = "text"
            source._it = itertools.chain(seen, source._it)
        self.fmt = kind
        if kind == "text":
            self._lines = source
            self.fieldnames: list[str] | None = ["text"]
            if text_col not in (None, "text"):
                source.close()
                raise NlptoolError(
                    f"--text-col {text_col}: {display_name(self.path)} is read as plain text (one text per line); "
                    "give a CSV/TSV/JSONL table or --format"
                )
            self.text_col = "text"
        else:
            self._table = TableReader(path, kind, header=header, stdin=stdin, name=self.path, _source=source)
            self.fieldnames = self._table.fieldnames
            if text_col is not None and self.fieldnames is not None and text_col not in self.fieldnames:
                self._table.close()
                raise InputError(
                    f"no column '{text_col}' (columns: {', '.join(self.fieldnames)}); choose it with --text-col",
                    path=self.path,
                    line=1,
                )

    def __iter__(self) -> Iterator[TextRecord]:
        if self._lines is not None:
            return self._iter_lines(self._lines)
        assert self._table is not None
        return self._iter_table(self._table)

    def texts(self) -> Iterator[tuple[int, str]]:
        """``(line, text)`` only (no row dicts: the fast path for plain text)."""
        if self._lines is None:
            for rec in self:
                yield rec.line, rec.text
            return
        if self.keep_blank:
            for rec in self._iter_lines(self._lines):
                yield rec.line, rec.text
            return
        for n, line in enumerate(self._lines, start=1):
            text = line.rstrip("\r\n")
            if text and not text.isspace():
                yield n, text

    def _iter_lines(self, lines: TextLines) -> Iterator[TextRecord]:
        blanks: list[TextRecord] = []  # kept blank lines wait for a text after them: trailing ones are dropped
        keep_blank = self.keep_blank
        for n, line in enumerate(lines, start=1):  # TextLines yields every physical line
            text = line.rstrip("\r\n")
            if text.isspace() or not text:
                if keep_blank:
                    blanks.append(TextRecord(n, text, {"text": text}))
                continue
            if blanks:
                yield from blanks
                blanks.clear()
            yield TextRecord(n, text, {"text": text})

    def _iter_table(self, reader: TableReader) -> Iterator[TextRecord]:
        for record in reader:
            if self.text_col is None:
                names = self.fieldnames if self.fieldnames is not None else list(record.data)
                self.text_col = next((c for c in self.default_cols if c in names), names[0] if names else None)
            col = self.text_col
            if col is None or col not in record.data or record.data[col] is None:
                present = ", ".join(list(record.data)[:12]) or "none"
                raise InputError(
                    f"missing text (fields present: {present}); choose the column with --text-col",
                    path=self.path,
                    line=record.line,
                    field=col,
                )
            value = record.data[col]
            if not isinstance(value, str):
                raise InputError(
                    f"expected a text, found {type(value).__name__}", path=self.path, line=record.line, field=col
                )
            yield TextRecord(record.line, value, record.data)

    def close(self) -> None:
        if self._lines is not None:
            self._lines.close()
        if self._table is not None:
            self._table.close()

    def __enter__(self) -> TextReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_texts(path: str | os.PathLike, **kwargs: Any) -> TextReader:
    """Open ``path`` for reading texts; see :class:`TextReader`."""
    return TextReader(path, **kwargs)


def iter_texts(
    path: str | os.PathLike,
    text_col: str | None = None,
    fmt: str | None = None,
    **kwargs: Any,
) -> Iterator[tuple[int, str]]:
    """``(line, text)`` for every text of ``path`` (``-``: stdin), lazily; see :class:`TextReader` for the formats.

    The file is opened (and a missing file or unknown column reported) on the first ``next()``, and closed when the
    iteration ends.
    """
    with TextReader(path, text_col=text_col, fmt=fmt, **kwargs) as reader:
        yield from reader.texts()


def chunked(iterable: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Yield lists of up to ``size`` items."""
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    it = iter(iterable)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


# -- field helpers ---------------------------------------------------------------------------------------------------
def get_field(record: Record, field: str, path: str) -> Any:
    """``record.data[field]``, or an :class:`InputError` naming file, line and field (listing the fields present)."""
    try:
        return record.data[field]
    except KeyError:
        present = ", ".join(list(record.data)[:12]) or "none"
        raise InputError(f"missing (fields present: {present})", path=path, line=record.line, field=field) from None


def to_float(value: Any, *, path: str, line: int, field: str) -> float:
    """Parse one number (JSON number or numeric string); bools and empty strings are errors."""
    if isinstance(value, bool) or value is None:
        raise InputError(f"expected a number, found {json.dumps(value)}", path=path, line=line, field=field)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)[:40]
    raise InputError(f"expected a number, found '{shown}'", path=path, line=line, field=field)


def to_float_list(value: Any, *, path: str, line: int, field: str) -> list[float]:
    """Parse a list of numbers: a JSON list, or a string holding a JSON list (as CSV cells do)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise InputError(
                f"expected a list of numbers such as [0.2, 0.8], found '{text[:40]}'", path=path, line=line, field=field
            ) from None
    if not isinstance(value, list):
        raise InputError(f"expected a list of numbers, found {type(value).__name__}", path=path, line=line, field=field)
    if not value:
        raise InputError("expected a non-empty list of numbers, found []", path=path, line=line, field=field)
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(
                f"item {i} is not a number ({json.dumps(v, ensure_ascii=False)[:40]})",
                path=path,
                line=line,
                field=field,
            )
        out.append(float(v))
    return out


def json_safe(value: Any) -> Any:
    """Replace non-finite floats (which JSON cannot hold) by ``None``, recursively; numpy scalars become Python."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return json_safe(value.item())
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    return value


# -- writing ---------------------------------------------------------------------------------------------------------
def check_output_path(path: str | os.PathLike | None, force: bool = False) -> None:
    """Fail early (before any work) if ``path`` exists and ``force`` is off, or its folder is missing."""
    if path is None or str(path) == "-":
        return
    p = Path(str(path))
    if p.is_dir():
        raise NlptoolError(f"output {p} is a folder; give a file name")
    if p.exists() and not force:
        raise NlptoolError(f"output file {p} already exists; pass --force to overwrite it or choose another name")
    if not p.parent.exists():
        raise NlptoolError(f"the folder of output file {p} does not exist; create {p.parent} first")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, force: bool = False, binary: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds.

    On any exception (including KeyboardInterrupt) the temporary file is removed and ``path`` is left untouched.
    """
    check_output_path(path, force)
    target = Path(str(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the output gets the usual permissions
        if binary:
            fh: IO[Any] = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding="utf-8", newline="")
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if target.exists() and not force:  # appeared while we worked
            raise NlptoolError(f"output file {target} appeared while writing; pass --force to overwrite it")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class RecordWriter:
    """Write dict records as JSONL, CSV or TSV.

    CSV/TSV columns come from ``fieldnames`` or the first record's keys; list/dict values are written as JSON text;
    ``None`` as an empty cell. JSONL keeps non-ASCII text as is (``ensure_ascii=False``); non-finite floats become
    ``null``.
    """

    def __init__(self, fh: IO[str], fmt: str = "jsonl", fieldnames: Sequence[str] | None = None):
        if fmt not in FORMATS:
            raise NlptoolError(f"unknown output format '{fmt}'; choose one of {', '.join(FORMATS)}")
        self.fh = fh
        self.fmt = fmt
        self.fieldnames = list(fieldnames) if fieldnames else None
        self._csv: Any = None
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        if self.fmt == "jsonl":
            self.fh.write(json.dumps(json_safe(record), ensure_ascii=False) + "\n")
        else:
            if self._csv is None:
                if self.fieldnames is None:
                    self.fieldnames = list(record)
                self._csv = csv.writer(self.fh, delimiter=_DELIMITERS[self.fmt], lineterminator="\n")
                self._csv.writerow(self.fieldnames)
            self._csv.writerow([_cell(record.get(k)) for k in self.fieldnames])
        self.count += 1

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self.write(r)
        self.fh.flush()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "nan")
    if isinstance(value, (list, dict)):
        return json.dumps(json_safe(value), ensure_ascii=False)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _cell(value.item())
    return str(value)


@contextlib.contextmanager
def open_writer(
    path: str | os.PathLike,
    fmt: str | None = None,
    *,
    force: bool = False,
    fieldnames: Sequence[str] | None = None,
    stdout: IO[str] | None = None,
) -> Iterator[RecordWriter]:
    """A :class:`RecordWriter` to ``path`` (atomically) or stdout for ``-``.

    The format is ``fmt``, else the extension of ``path``, else JSONL.
    """
    out_fmt = format_from_path(path, fmt, default="jsonl")
    assert out_fmt is not None
    if str(path) == "-":
        stream = stdout if stdout is not None else sys.stdout
        writer = RecordWriter(stream, out_fmt, fieldnames)
        yield writer
        stream.flush()
        return
    with atomic_output(path, force=force) as fh:
        yield RecordWriter(fh, out_fmt, fieldnames)


def dumps_metrics(metrics: dict[str, Any]) -> str:
    """Metrics as pretty JSON with sorted keys and raw floats (non-finite → null)."""
    return json.dumps(json_safe(metrics), ensure_ascii=False, sort_keys=True, indent=2) + "\n"


__all__ = [
    "FORMATS",
    "TEXT_COLUMNS",
    "Record",
    "RecordWriter",
    "TableReader",
    "TextLines",
    "TextReader",
    "TextRecord",
    "atomic_output",
    "check_output_path",
    "chunked",
    "display_name",
    "dumps_metrics",
    "format_from_path",
    "get_field",
    "iter_texts",
    "open_lines",
    "read_text",
    "read_texts",
    "replayable",
    "json_safe",
    "open_writer",
    "read_records",
    "to_float",
    "to_float_list",
]

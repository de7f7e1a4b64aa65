"""Expected failures.

Core code raises :class:`NlptoolError` (or a subclass) for anything a user can fix: bad input, a missing model, an
unreachable target. The CLI turns it into one line on stderr, ``Error: <what>, <where>, <how to fix>``, and exit
status 1, with no traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class NlptoolError(Exception):
    """An expected failure whose message names what went wrong, where, and how to fix it."""

    exit_code = 1


class InputError(NlptoolError):
    """Bad input data, located by file, line and field.

    Args:
        message: what is wrong (and how to fix it).
        path: the input file (``-`` or ``<stdin>`` for standard input).
        line: 1-based physical line number in that file, if known.
        field: the field/column name, if known.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None):
        self.message = message
        self.path = path
        self.line = line
        self.field = field
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.path is not None:
            where = "<stdin>" if self.path == "-" else str(self.path)
            if self.line is not None:
                where += f":{self.line}"
        elif self.line is not None:
            where = f"line {self.line}"
        if self.field is not None:
            where = f"{where}: field '{self.field}'" if where else f"field '{self.field}'"
        return f"{where}: {self.message}" if where else self.message


class RowError(NlptoolError):
    """A problem with one row of a batch handed to a core function (0-based ``row`` index into that batch).

    Core functions do not know files; commands map ``row`` to a file line and re-raise as :class:`InputError`.
    """

    def __init__(self, message: str, *, row: int, field: str | None = None):
        self.message = message
        self.row = row
        self.field = field
        super().__init__(f"row {row}: {message}")


class ModelNotFoundError(NlptoolError):
    """A model could not be resolved or loaded."""


def plain(value: object) -> object:
    """``value`` with numpy/torch scalars and arrays turned into Python numbers and lists, for error messages.

    ``f"{np.float64(-1.0)!r}"`` shows ``np.float64(-1.0)`` (numpy >= 2) and a tensor shows ``tensor(...)``; the
    messages users read should show ``-1.0``. Lists and tuples are converted element by element; anything else is
    returned unchanged.
    """
    if type(value).__module__.split(".")[0] in ("numpy", "torch") and hasattr(value, "tolist"):
        return value.tolist()  # type: ignore[union-attr]
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value

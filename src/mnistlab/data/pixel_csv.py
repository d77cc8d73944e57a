"""CSV files of pixel rows (Kaggle's digit-recognizer layout), read in chunks by numpy's C parser.

One image per row: its pixels (integers 0..255, row by row) and, optionally, a `label`
column. A header line is optional: Kaggle's `train.csv` starts with `label,pixel0,...,pixel783`
and its `test.csv` with `pixel0,...,pixel783`. `csv:` datasets (`load_dataset`) and
`mnistlab predict` read these files with the same code.

The rows are parsed `rows` lines at a time into uint8 arrays, so a 1 GB file never sits in
memory as Python objects (numpy's parser refuses anything that is not an integer 0..255 by
itself). A chunk the parser refuses is read again line by line to name the first bad line:
the slow path runs only on failure.

Example:
    >>> table = open_pixel_csv("test.csv", pixels=784)              # doctest: +SKIP
    >>> for chunk in iter_rows(table, rows=1000): ...               # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from mnistlab.errors import DataError

_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")  # what numpy's integer parser accepts


@dataclass(frozen=True)
class PixelCsv:
    """The layout of a pixel-row CSV file, read from its first lines."""

    path: Path
    header: bool
    columns: int
    label_column: int | None
    first_data_line: int  # 1-based line number of the first data row

    @property
    def pixels(self) -> int:
        """Pixel columns per row."""
        return self.columns - (self.label_column is not None)

    @property
    def has_labels(self) -> bool:
        """Whether the rows carry a label."""
        return self.label_column is not None


@dataclass
class PixelRows:
    """A chunk of rows: uint8 pixels [n, pixels], int64 labels [n] (or None), each row's line number."""

    pixels: np.ndarray
    labels: np.ndarray | None
    lines: np.ndarray

    def __len__(self) -> int:
        return len(self.pixels)


def _open(path: Path) -> TextIO:
    """The file as text: a UTF-8 byte order mark dropped, undecodable bytes kept as U+FFFD (then refused as cells)."""
    try:
        return open(path, encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def _first_data_line(f: TextIO, start: int) -> tuple[str, int]:
    """The next non-blank line and its number ("" when there is none)."""
    for lineno, line in enumerate(f, start=start):
        if line.strip():
            return line, lineno
    return "", start


def _label_column(path: Path, names: list[str] | None, ncols: int, lineno: int, pixels: int | None) -> int | None:
    """The label column's index (None: no labels), after checking the column count."""
    if names is not None and "label" in names:
        label: int | None = names.index("label")
    elif pixels is None:
        label = 0  # the `csv:` dataset layout: the label comes first
    elif names is not None or ncols == pixels:
        label = None
    else:
        label = 0  # no header and one column more than the pixels: a label first, as in Kaggle's train.csv
    count = ncols - (label is not None)
    side = round(count**0.5)
    if pixels is None and (count < 1 or side * side != count):
        raise DataError(f"{path} line {lineno} has {ncols} fields: expected a label and a square number "
                        "of pixels (785 for 28x28)")
    if pixels is not None and count != pixels:
        what = "the header has" if names is not None else f"line {lineno} has"
        raise DataError(f"{path}: {what} {ncols} columns; expected {pixels} pixel columns "
                        f"(pixel0..pixel{pixels - 1}), with or without a `label` column")
    return label


def open_pixel_csv(path: str | Path, pixels: int | None = None) -> PixelCsv:
    """Read a pixel-row CSV's layout: header or not, where the label is, how many pixels a row has.

    Args:
        path: the CSV file.
        pixels: pixels per image the caller expects (784 for 28x28): the label is the column a header
            names `label`, or without a header the first of pixels + 1 columns. None: any square
            number of pixels, the label in the `label` column or else the first (the `csv:` dataset layout).

    Raises:
        DataError: a missing, unreadable or empty file, no data rows, a wrong column count.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist (or is not a file); expected a CSV of rows pixel0,...,pixel783")
    with _open(path) as f:
        first, _ = _first_data_line(f, 1)
        if not first:
            raise DataError(f"{path} is empty; it needs one row of pixels per image (pixel0,...,pixel783)")
        cells = [c.strip().strip('"').strip().lower() for c in first.rstrip("\r\n").split(",")]
        header = _is_header(cells)
        row, lineno = _first_data_line(f, 2) if header else (first, 1)
    if not row:
        raise DataError(f"{path} has no data rows, only a header; it needs one row of pixels per image")
    ncols = len(cells) if header else len(row.split(","))
    label = _label_column(path, cells if header else None, ncols, lineno, pixels)
    return PixelCsv(path=path, header=header, columns=ncols, label_column=label, first_data_line=lineno)


def _is_header(cells: list[str]) -> bool:
    """Whether a first line names the columns rather than holding a row.

    A header names its pixel columns (`pixel0,...`, `label,pixel0,...`) or numbers them
    (`label,0,1,2,...`). A first line whose only text is its first cell (`seven,0,0,...`) is a row
    with a bad label: taking it for a header would drop it silently, so it is parsed and reported
    as line 1.
    """
    values = [int(c) if _INTEGER.fullmatch(c) else None for c in cells]
    if all(v is not None for v in values):
        return False
    rest = values[1:]
    if any(v is None for v in rest):
        return True
    return len(rest) > 1 and rest == list(range(rest[0], rest[0] + len(rest)))


def _bad_cell(lineno: int, col: int, cell: str, is_label: bool) -> str | None:
    """Why one cell is refused, or None."""
    if not _INTEGER.fullmatch(cell):
        return f"line {lineno}, field {col} is {cell.strip()[:20]!r}, not an integer"
    value = int(cell)
    if is_label and value < 0:
        return f"line {lineno} has a negative label ({value}); labels are 0..K-1"
    if is_label and value > 255:
        return f"line {lineno} has label {value}; labels must be 0..255"
    if not is_label and not 0 <= value <= 255:
        return f"line {lineno} has a pixel outside 0..255 (field {col} is {value})"
    return None


def _first_bad_line(table: PixelCsv, lines: list[str], first_line: int) -> str:
    """Why the first refused line of a chunk is refused (the slow path, only after the parser failed)."""
    for lineno, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        cells = line.rstrip("\r\n").split(",")
        if len(cells) != table.columns:
            return f"line {lineno} has {len(cells)} fields, expected {table.columns}"
        for col, cell in enumerate(cells, start=1):
            reason = _bad_cell(lineno, col, cell, col - 1 == table.label_column)
            if reason:
                return reason
    return f"lines {first_line}-{first_line + len(lines) - 1} hold unreadable content"


def _parse(table: PixelCsv, lines: list[str], first_line: int) -> PixelRows:
    """One chunk of lines -> PixelRows; a DataError naming the first bad line if any is refused."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": blank lines only
            cells = np.loadtxt(lines, delimiter=",", dtype=np.uint8, ndmin=2)
    except ValueError:
        cells = None
    if cells is None or (len(cells) and cells.shape[1] != table.columns):
        raise DataError(f"{table.path}: {_first_bad_line(table, lines, first_line)}; fix or remove that row")
    if not len(cells):  # blank lines only
        cells = np.zeros((0, table.columns), np.uint8)
    if len(cells) == len(lines):
        numbers = np.arange(first_line, first_line + len(lines))
    else:  # blank lines were skipped: number the rows that remain
        numbers = np.array([first_line + i for i, line in enumerate(lines) if line.strip()], dtype=np.int64)
    if table.label_column is None:
        return PixelRows(cells.reshape(len(cells), table.columns), None, numbers)
    labels = cells[:, table.label_column].astype(np.int64)
    return PixelRows(np.delete(cells, table.label_column, axis=1), labels, numbers)


def iter_rows(table: PixelCsv, rows: int = 4096) -> Iterator[PixelRows]:
    """The file's rows, `rows` lines at a time (blank lines skipped; chunks may then be shorter).

    Raises:
        DataError: naming the first bad line (wrong column count, a cell that is not an integer,
            a pixel outside 0..255, a negative label); the chunks before it were already yielded.
    """
    with _open(table.path) as f:
        start = 1
        if table.header:
            f.readline()
            start = 2
        while True:
            try:
                lines = list(itertools.islice(f, max(1, rows)))
            except OSError as exc:
                raise DataError(f"cannot read {table.path}: {exc.strerror or exc}") from None
            if not lines:
                return
            chunk = _parse(table, lines, start)
            start += len(lines)
            if len(chunk):
                yield chunk


def read_pixel_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A whole labelled pixel CSV (the `csv:` dataset): uint8 pixels [N, P] and int64 labels [N].

    The label is the `label` column a header names, else the first column.
    """
    table = open_pixel_csv(path)
    chunks = list(iter_rows(table))
    pixels = np.concatenate([c.pixels for c in chunks]) if chunks else np.zeros((0, table.pixels), np.uint8)
    labels = np.concatenate([c.labels for c in chunks]) if chunks else np.zeros(0, np.int64)
    return pixels, labels  # type: ignore[return-value]

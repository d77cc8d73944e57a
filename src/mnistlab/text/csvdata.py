"""Labelled text from CSV files (the csv module: quoted commas and newlines work), and its splits.

Any CSV with a header row, one text column and one label column works, e.g. the shipped
`builtin:sentiment` (columns text,label) or IMDB exported to CSV (columns review,sentiment:
`--text-column review --label-column sentiment`).
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from mnistlab.errors import DataError

BUILTIN_PREFIX = "builtin:"
BUILTIN = {"sentiment": "sentiment.csv"}
_MAX_REPORTED = 20  # bad rows listed in one error; the rest are counted


@dataclass
class TextData:
    """The rows of a CSV: texts, label indices and the sorted label names."""

    texts: list[str]
    labels: list[int]
    classes: list[str]
    source: str


def resolve_data_path(data: str) -> Path:
    """`builtin:NAME` -> the file shipped with mnistlab; anything else is a path that must exist."""
    if data.startswith(BUILTIN_PREFIX):
        name = data[len(BUILTIN_PREFIX):]
        if name not in BUILTIN:
            choices = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN)
            raise DataError(f"unknown built-in dataset {data!r}: choose {choices}")
        return Path(str(resources.files("mnistlab.text").joinpath("data", BUILTIN[name])))
    p = Path(data).expanduser()
    if not p.is_file():
        raise DataError(f"text data file {p} does not exist (or pass builtin:sentiment)")
    return p


def read_text_csv(
    data: str,
    text_column: str = "text",
    label_column: str = "label",
    classes: Sequence[str] | None = None,
) -> TextData:
    """Read a labelled CSV; every bad row is reported, with its line number, in one DataError.

    Args:
        data: a CSV path or `builtin:sentiment`.
        text_column, label_column: header names of the two columns used (others are ignored).
        classes: the label names a trained run knows; a label outside them is an error.
            None: the sorted distinct labels of the file.

    Raises:
        DataError: missing file or columns; rows with a wrong column count, an empty text,
            or a missing/unknown label (line numbers are the file's, header = line 1).
    """
    path = resolve_data_path(data)
    # Long reviews (IMDB) exceed the csv module's default 128 KiB field limit.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    texts: list[str] = []
    names: list[str] = []
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark that would
        # otherwise become part of the first column's name.
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path} is empty: expected a header row with {text_column!r} and {label_column!r}")
            header = [h.strip() for h in header]
            missing = [c for c in (text_column, label_column) if c not in header]
            if missing:
                raise DataError(
                    f"{path} has no column {' or '.join(repr(m) for m in missing)}; its columns are "
                    f"{', '.join(header)} (choose with --text-column / --label-column)"
                )
            problems, bad = _read_rows(reader, header, text_column, label_column, classes, texts, names)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except csv.Error as exc:
        raise DataError(f"{path} is not valid CSV near line {reader.line_num}: {exc}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if problems:
        more = f" (and {bad - len(problems)} more)" if bad > len(problems) else ""
        raise DataError(f"{path}: {bad} bad row{'s' if bad != 1 else ''}{more}: " + "; ".join(problems))
    if not texts:
        raise DataError(f"{path} has no data rows")
    classes = list(classes) if classes is not None else sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    return TextData(texts, [index[n] for n in names], classes, str(path))


def _read_rows(
    reader: Any, header: list[str], text_column: str, label_column: str, classes: Sequence[str] | None,
    texts: list[str], names: list[str],
) -> tuple[list[str], int]:
    """Append the good rows' texts and label names; return the first problems (with line numbers) and their count."""
    ti, li = header.index(text_column), header.index(label_column)
    known = set(classes) if classes is not None else None
    problems: list[str] = []
    bad = 0
    line = reader.line_num
    for row in reader:
        start, line = line + 1, reader.line_num  # a quoted field may span lines: report the first
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank lines are not rows
        reason = None
        if len(row) != len(header):
            reason = f"{len(row)} columns, expected {len(header)}"
        elif not row[ti].strip():
            reason = f"missing text ({text_column!r} is empty)"
        elif not row[li].strip():
            reason = f"missing label ({label_column!r} is empty)"
        elif known is not None and row[li].strip() not in known:
            reason = f"unknown label {row[li].strip()!r} (the run knows {', '.join(sorted(known))})"
        if reason:
            bad += 1
            if len(problems) < _MAX_REPORTED:
                problems.append(f"line {start}: {reason}")
            continue
        texts.append(row[ti])
        names.append(row[li].strip())
    return problems, bad


def split_text_indices(
    n: int, test_fraction: float, valid_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Seeded train/valid/test indices: test is `test_fraction` of all rows, valid `valid_fraction` of the rest.

    The permutation depends only on (n, seed), so `evaluate` recreates the exact split.
    """
    import torch

    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g).tolist()
    n_test = int(round(n * test_fraction))
    n_valid = int(round((n - n_test) * valid_fraction))
    test = perm[:n_test]
    valid = perm[n_test:n_test + n_valid]
    train = perm[n_test + n_valid:]
    return train, valid, test

"""mnistlab.data.pixel_csv: the chunked reader of pixel-row CSV files (Kaggle's layout), shared by
`csv:` datasets and `mnistlab predict`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnistlab.data.pixel_csv import iter_rows, open_pixel_csv, read_pixel_csv
from mnistlab.errors import DataError

PIXELS = [f"pixel{i}" for i in range(784)]


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 784))


def write(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_bytes((newline.join(lines) + newline).encode("utf-8"))
    return path


def csv_lines(pixels: np.ndarray, labels: np.ndarray | None = None, header: bool = True,
              label_at: int = 0) -> list[str]:
    table = [list(map(str, r)) for r in pixels]
    names = list(PIXELS)
    if labels is not None:
        names.insert(label_at, "label")
        for r, label in zip(table, labels):
            r.insert(label_at, str(label))
    return ([",".join(names)] if header else []) + [",".join(r) for r in table]


def read_all(path: Path, rows_per_chunk: int = 4) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    chunks = list(iter_rows(open_pixel_csv(path, pixels=784), rows_per_chunk))
    labels = [c.labels for c in chunks]
    return (np.concatenate([c.pixels for c in chunks]),
            None if labels[0] is None else np.concatenate(labels),
            np.concatenate([c.lines for c in chunks]))


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("labelled", [True, False])
def test_layouts_are_recognised(tmp_path: Path, header: bool, labelled: bool) -> None:
    pixels, labels = rows(10), np.arange(10) % 10
    path = write(tmp_path / "d.csv", csv_lines(pixels, labels if labelled else None, header))
    table = open_pixel_csv(path, pixels=784)
    assert table.header is header and table.has_labels is labelled and table.pixels == 784
    got, got_labels, lines = read_all(path)
    assert got.dtype == np.uint8 and (got == pixels).all()
    assert (got_labels == labels).all() if labelled else got_labels is None
    assert lines.tolist() == list(range(1 + header, 11 + header))


def test_label_column_anywhere_bom_crlf_and_blank_lines(tmp_path: Path) -> None:
    pixels, labels = rows(9), np.arange(9)
    lines = csv_lines(pixels, labels, label_at=300)
    lines.insert(5, "")  # a blank line between rows 4 and 5: skipped, the line numbers still true
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(lines) + "\r\n\r\n").encode())
    got, got_labels, numbers = read_all(path, rows_per_chunk=3)
    assert (got == pixels).all() and (got_labels == labels).all()
    assert numbers.tolist() == [2, 3, 4, 5, 7, 8, 9, 10, 11]


@pytest.mark.parametrize(("edit", "match"), [
    (lambda r: r.rsplit(",", 1)[0], "line 12 has 783 fields, expected 784"),
    (lambda r: r + ",7", "line 12 has 785 fields, expected 784"),
    (lambda r: "zz," + r.split(",", 1)[1], "line 12, field 1 is 'zz', not an integer"),
    (lambda r: r.rsplit(",", 1)[0] + ",2.5", "line 12, field 784 is '2.5', not an integer"),
    (lambda r: r.rsplit(",", 1)[0] + ",256", r"line 12 has a pixel outside 0..255 \(field 784 is 256\)"),
    (lambda r: "-1," + r.split(",", 1)[1], r"line 12 has a pixel outside 0..255 \(field 1 is -1\)"),
    (lambda r: r.rsplit(",", 1)[0] + ",", "line 12, field 784 is '', not an integer"),
], ids=["ragged-short", "ragged-long", "text", "decimal", "256", "negative", "empty-cell"])
def test_a_bad_row_is_named_by_its_line_in_any_chunk(tmp_path: Path, edit, match: str) -> None:
    lines = csv_lines(rows(20))
    lines[11] = edit(lines[11])  # line 12 of the file: in the third chunk of 4 rows
    path = write(tmp_path / "bad.csv", lines)
    seen = 0
    with pytest.raises(DataError, match=match) as info:
        for chunk in iter_rows(open_pixel_csv(path, pixels=784), 4):
            seen += len(chunk)
    assert str(path) in str(info.value) and seen == 8  # the two chunks before it came through


@pytest.mark.parametrize(("content", "match"), [
    ("", "is empty"),
    ("\n\n", "is empty"),
    (",".join(PIXELS) + "\n", "no data rows"),
    (",".join(PIXELS[:-1]) + "\n" + ",".join(["0"] * 783) + "\n", "the header has 783 columns; expected 784"),
    (",".join(["0"] * 700) + "\n", "line 1 has 700 columns; expected 784"),
])
def test_files_that_are_not_pixel_rows(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "x.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        open_pixel_csv(path, pixels=784)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        open_pixel_csv(tmp_path / "nope.csv", pixels=784)
    with pytest.raises(DataError, match="not a file"):
        open_pixel_csv(tmp_path, pixels=784)


def test_dataset_layout_reads_kaggle_train_csv(tmp_path: Path) -> None:
    # The csv: dataset layout: the label named by the header (or first), any square number of pixels.
    pixels, labels = rows(6), np.array([3, 1, 4, 1, 5, 9])
    got, got_labels = read_pixel_csv(write(tmp_path / "train.csv", csv_lines(pixels, labels)))
    assert (got == pixels).all() and (got_labels == labels).all() and got.dtype == np.uint8
    small = [",".join(map(str, [7, *range(16)]))] * 3  # 4x4 images, no header
    got, got_labels = read_pixel_csv(write(tmp_path / "small.csv", small))
    assert got.shape == (3, 16) and (got_labels == 7).all()

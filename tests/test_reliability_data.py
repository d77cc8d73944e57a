"""Reliability: bad data, bad mirrors and full disks, each seen through the `mnistlab` command.

Every case must end with exit code 1 (never a traceback), one error line on stderr that
names the file involved and says how to fix it, and no partial file left behind (no *.tmp,
*.part, and nothing half-written under a final name). See docs/reliability.md.
"""

from __future__ import annotations

import errno
import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import NAMES, SMALL_IDX_GZ as GZ, SMALL_IDX_RAW as RAW, make_fake_mnist, write_fake_mnist
from mnistlab.cli import main
from mnistlab.data.idx import idx_bytes
from mnistlab.training.trainer import RUN_LOCK

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`mnistlab ARGV` in-process: (exit code, stdout, stderr); argparse's SystemExit becomes its code."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The one error line: no traceback, exactly one `mnistlab: error:` line."""
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("mnistlab: error:")]
    assert len(lines) == 1, err
    return lines[0]


def leftovers(root: Path) -> list[str]:
    """Temp and partial files anywhere under `root` (a run folder's lock file is meant to stay)."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*")
        if p.is_file() and p.name != RUN_LOCK
        and (p.name.endswith((".tmp", ".part")) or ".tmp" in p.name or p.name.startswith("."))
    )


def train_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "logistic", "--data-dir", str(root), "--epochs", "1", "--out", str(out),
            "-q", "--no-plots", *extra]


# --------------------------------------------------------------------------- damaged IDX files


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bad_magic(path: Path) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[0:4] = b"\x12\x34\x56\x78"
    path.write_bytes(gzip.compress(bytes(raw)))


def _fewer_labels(path: Path) -> None:
    _, labels = make_fake_mnist(600, 0)
    path.write_bytes(gzip.compress(idx_bytes(labels[:599])))


def _label_out_of_range(path: Path) -> None:
    _, labels = make_fake_mnist(600, 0)
    labels = labels.copy()
    labels[17] = 42
    path.write_bytes(gzip.compress(idx_bytes(labels)))


def _not_gzip(path: Path) -> None:
    path.write_bytes(b"<html><body>Sign in to the Wi-Fi</body></html>")


DAMAGE = {
    "truncated-gz": (TRAIN_IMAGES, _truncate, "truncated"),
    "wrong-magic": (TRAIN_IMAGES, _bad_magic, "magic"),
    "count-mismatch": (TRAIN_LABELS, _fewer_labels, "599 labels"),
    "label-out-of-range": (TRAIN_LABELS, _label_out_of_range, "label 42"),
    "gz-name-not-gzip": (TRAIN_IMAGES, _not_gzip, "not gzip"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
@pytest.mark.parametrize("command", ["train", "data-info"])
def test_damaged_idx_file_is_one_clear_error(case, command, tmp_path, capsys):
    root = tmp_path / "data"
    write_fake_mnist(root / "mnist")
    name, damage, reason = DAMAGE[case]
    damage(root / "mnist" / name)
    before = sorted(p.name for p in (root / "mnist").iterdir())
    out = tmp_path / "runs"
    argv = train_args(root, out) if command == "train" else ["data", "info", "--data-dir", str(root)]
    code, _, err = run_cli(capsys, *argv)
    line = error_line(err)
    assert code == 1
    assert name in line and reason in line, line
    assert "download" in line  # the fix
    # nothing written: no run folder half-made, no temp files, the data folder untouched
    assert not out.exists() or not any(out.iterdir())
    assert sorted(p.name for p in (root / "mnist").iterdir()) == before
    assert leftovers(tmp_path) == []


def test_missing_dataset_says_how_to_download(tmp_path, capsys):
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    code, _, err = run_cli(capsys, "data", "info", "--data-dir", str(tmp_path / "data"))
    line = error_line(err)
    assert code == 1 and "mnistlab data download" in line and TRAIN_IMAGES in line


# --------------------------------------------------------------------------- folder and CSV datasets


def test_empty_folder_dataset(tmp_path, capsys):
    empty = tmp_path / "digits"
    empty.mkdir()
    code, _, err = run_cli(capsys, *train_args(tmp_path, tmp_path / "runs", "--dataset", f"folder:{empty}"))
    line = error_line(err)
    assert code == 1 and str(empty) in line and "class folders" in line
    # class folders, but no images in them
    (empty / "0").mkdir()
    (empty / "1").mkdir()
    (empty / "1" / "notes.txt").write_text("not an image")
    code, _, err = run_cli(capsys, *train_args(tmp_path, tmp_path / "runs", "--dataset", f"folder:{empty}"))
    line = error_line(err)
    assert code == 1 and "no images" in line and str(empty) in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_folder_dataset_with_corrupt_image(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "digits"
    for c in "01":
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((28, 28), 50 * i, dtype=np.uint8)).save(root / c / f"{i}.png")
    (root / "1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    code, _, err = run_cli(capsys, *train_args(tmp_path, tmp_path / "runs", "--dataset", f"folder:{root}"))
    line = error_line(err)
    assert code == 1 and "broken.png" in line and ("delete" in line or "replace" in line)


def _png_classes(folder: Path, counts: dict[str, int]) -> None:
    from PIL import Image

    for cls, count in counts.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(np.full((28, 28), 30 + 40 * i, dtype=np.uint8)).save(folder / cls / f"{i}.png")


@pytest.mark.parametrize("layout", ["tiny classes", "empty test folders"])
def test_folder_dataset_without_test_images_is_refused_at_load(layout, tmp_path, capsys):
    root = tmp_path / "digits"
    if layout == "tiny classes":  # 20% of 2 images rounds to 0: nothing to hold out
        _png_classes(root, {"a": 2, "b": 1})
        needed = "at least 3"
    else:  # train/ and test/ layout whose test class folders hold no image
        _png_classes(root / "train", {"a": 3, "b": 3})
        (root / "test" / "a").mkdir(parents=True)
        (root / "test" / "a" / "notes.txt").write_text("not an image")
        needed = "add test images"
    runs = tmp_path / "runs"
    code, _, err = run_cli(capsys, *train_args(tmp_path, runs, "--dataset", f"folder:{root}"))
    line = error_line(err)
    assert code == 1 and str(root) in line and needed in line, line
    assert not runs.exists() or not any(runs.iterdir())  # refused before the run folder is made
    code, _, err = run_cli(capsys, "data", "show", "--dataset", f"folder:{root}", "--split", "test",
                           "--out", str(tmp_path / "grid.png"))
    assert code == 1 and needed in error_line(err) and not (tmp_path / "grid.png").exists()


@pytest.mark.parametrize(
    "row, reason",
    [
        ("3," + ",".join(["0"] * 783), "fields"),  # one pixel short
        ("3," + ",".join(["0"] * 700) + ",x" + ",0" * 83, "not an integer"),
        ("3," + ",".join(["0"] * 783) + ",300", "outside 0..255"),
        ("-1," + ",".join(["0"] * 784), "negative label"),
    ],
    ids=["short-row", "text-field", "pixel-300", "negative-label"],
)
def test_csv_with_malformed_row(row, reason, tmp_path, capsys):
    good = "\n".join(f"{i % 10}," + ",".join(["7"] * 784) for i in range(20))
    path = tmp_path / "digits.csv"
    path.write_text("label," + ",".join(f"p{i}" for i in range(784)) + "\n" + good + "\n" + row + "\n")
    code, _, err = run_cli(capsys, *train_args(tmp_path, tmp_path / "runs", "--dataset", f"csv:{path}"))
    line = error_line(err)
    assert code == 1 and str(path) in line and reason in line, line
    if reason != "outside 0..255" and reason != "negative label":
        assert "line 22" in line  # header + 20 good rows + the bad one


def test_csv_that_is_empty_or_missing(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, _, err = run_cli(capsys, *train_args(tmp_path, tmp_path / "runs", "--dataset", f"csv:{empty}"))
    assert code == 1 and "empty" in error_line(err)
    code, _, err = run_cli(capsys, *train_args(tmp_path, tmp_path / "runs", "--dataset", f"csv:{tmp_path}/nope.csv"))
    assert code == 1 and "nope.csv" in error_line(err)


# --------------------------------------------------------------------------- downloads




def download(capsys, root: Path, *extra: str) -> tuple[int, str]:
    code, _, err = run_cli(capsys, "data", "download", "--dataset", "tiny", "--data-dir", str(root), *extra)
    return code, err


def test_download_works_from_loopback_mirror(tmp_path, server, tiny_spec, monkeypatch, capsys):
    monkeypatch.setenv("MNISTLAB_MIRRORS", server.serve_dataset("ok", GZ))
    code, err = download(capsys, tmp_path)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == sorted(NAMES.values())


def test_mirror_answering_200_with_html(tmp_path, server, tiny_spec, monkeypatch, capsys):
    page = b"<!doctype html><html><body>Please log in to the hotel Wi-Fi</body></html>"
    monkeypatch.setenv("MNISTLAB_MIRRORS", server.serve_dataset("portal", {k: page for k in NAMES}, ctype="text/html"))
    code, err = download(capsys, tmp_path)
    line = error_line(err)
    assert code == 1
    assert TRAIN_IMAGES in line and "HTML page" in line and "MNISTLAB_MIRRORS" in line
    assert list((tmp_path / "tiny").iterdir()) == []  # nothing kept, not even a .part


def test_checksum_mismatch(tmp_path, server, tiny_spec, monkeypatch, capsys):
    other = dict(GZ)
    raw = bytearray(RAW["train_images"])
    raw[-1] ^= 0xFF  # a valid IDX file, one pixel different
    other["train_images"] = gzip.compress(bytes(raw))
    monkeypatch.setenv("MNISTLAB_MIRRORS", server.serve_dataset("bitrot", other))
    code, err = download(capsys, tmp_path)
    line = error_line(err)
    assert code == 1 and TRAIN_IMAGES in line and "bad checksum" in line
    assert not (tmp_path / "tiny" / TRAIN_IMAGES).exists()
    assert leftovers(tmp_path) == []


def _gzip_bomb(head: bytes, zeros: int) -> bytes:
    """A gzip of `head` and then `zeros` zero bytes, built 1 MB at a time (64 MB -> ~65 KB)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [deflate.compress(head)] + [deflate.compress(block) for _ in range(zeros >> 20)]
    return b"".join(parts) + deflate.flush()


@pytest.mark.parametrize(
    "head, reason",
    [(b"", "bad magic"),  # all zeros
     (idx_bytes(np.zeros((1, 28, 28), np.uint8))[:4] + np.array([10**6, 28, 28], ">u4").tobytes(),
      "more than the 23536"),  # a header that claims 784 MB
     (idx_bytes(np.zeros((1, 28, 28), np.uint8))[:4] + np.array([30, 28, 28], ">u4").tobytes(),
      "trailing bytes")],  # the right header, then 64 MB more than it declares
    ids=["zeros", "huge header", "trailing zeros"],
)
def test_gzip_bomb_from_a_mirror_is_refused_in_bounded_memory(head, reason, tmp_path, server, tiny_spec,
                                                              monkeypatch, capsys):
    import tracemalloc

    bomb = _gzip_bomb(head, 64 << 20)
    assert len(bomb) < 100_000  # small enough to pass the download cap: the decompression cap must act
    monkeypatch.setenv("MNISTLAB_MIRRORS", server.serve_dataset("bomb", {**GZ, "train_images": bomb}))
    tracemalloc.start()
    try:
        code, err = download(capsys, tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    line = error_line(err)
    assert code == 1 and TRAIN_IMAGES in line and reason in line, line
    assert peak < 24 << 20, f"peak {peak >> 20} MB for a file that decompresses to 64 MB"
    assert not (tmp_path / "tiny" / TRAIN_IMAGES).exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("mode", ["", "nolength"], ids=["content-length", "no content-length"])
def test_download_bigger_than_the_file_can_be_is_cut_off(mode, tmp_path, server, tiny_spec, monkeypatch, capsys):
    # Random bytes do not compress: 1 MB of gzip, where the whole file decompresses to 23 KB.
    big = gzip.compress(np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes())
    monkeypatch.setenv("MNISTLAB_MIRRORS", server.serve_dataset("big", {**GZ, "train_images": big}, mode=mode))
    code, err = download(capsys, tmp_path)
    line = error_line(err)
    assert code == 1 and TRAIN_IMAGES in line and "more than the 89095" in line, line
    assert not (tmp_path / "tiny" / TRAIN_IMAGES).exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "name, integrity",
    [("fashion-mnist", "bad checksum"),  # the catalog has its sha256: noise is caught
     ("kmnist", "all files pass; no checksum in the catalog: shape and format checked only")],
)
def test_data_info_never_claims_a_checksum_it_did_not_check(name, integrity, tmp_path, monkeypatch, capsys):
    import dataclasses

    from mnistlab.data import DATASETS

    # The real catalog entry with smaller counts, so the noise files stay small.
    monkeypatch.setitem(DATASETS, name, dataclasses.replace(DATASETS[name], num_train=30, num_test=10))
    rng = np.random.default_rng(0)
    folder = tmp_path / name
    folder.mkdir()
    for key, count in (("train", 30), ("test", 10)):
        prefix = "train" if key == "train" else "t10k"
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
            idx_bytes(rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes((np.arange(count) % 10).astype(np.uint8)))
    code, out, err = run_cli(capsys, "data", "info", "--dataset", name, "--data-dir", str(tmp_path))
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("integrity"))
    assert integrity in line and "verify (sha256)" not in line, line


def test_data_dir_that_cannot_be_created(tmp_path, capsys):
    # Tests run as root, where chmod does not stop writes: a path under a regular file can never be a folder.
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, err = download(capsys, blocker / "data", "--dataset", "mnist")
    line = error_line(err)
    assert code == 1 and str(blocker) in line and "--data-dir" in line


class _FullDisk:
    """A stand-in for `open` that writes the first `room` bytes, then fails like a full disk."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, path, mode="r", *args, **kwargs):
        fh = open(path, mode, *args, **kwargs)  # noqa: SIM115
        if "w" not in mode:
            return fh
        room, real_write = self, fh.write

        def write(data):
            if len(data) > room.room:
                real_write(data[: room.room])
                room.room = 0
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            room.room -= len(data)
            return real_write(data)

        fh.write = write
        return fh


def test_disk_full_during_download(tmp_path, server, tiny_spec, monkeypatch, capsys):
    import mnistlab.data.fetch as fetch_module  # where each mirror's file is streamed to disk

    monkeypatch.setattr(fetch_module, "open", _FullDisk(room=100), raising=False)
    monkeypatch.setenv("MNISTLAB_MIRRORS", server.serve_dataset("ok", GZ))
    code, err = download(capsys, tmp_path)
    line = error_line(err)
    assert code == 1 and TRAIN_IMAGES in line and "No space left on device" in line
    assert "space" in line.split("No space left on device", 1)[1]  # says to free space / choose another place
    assert list((tmp_path / "tiny").iterdir()) == []  # the half-written .part is gone


# --------------------------------------------------------------------------- full disk while checkpointing


def test_disk_full_while_checkpointing_keeps_previous_checkpoint(tmp_path, monkeypatch, capsys):
    """ENOSPC while writing the epoch-2 checkpoint: exit 1 naming the file, last.pt still epoch 1."""
    from mnistlab.training import checkpoint as ckpt_module

    root = tmp_path / "data"
    write_fake_mnist(root / "mnist")
    real_fdopen, opened = os.fdopen, []

    def fdopen(fd, mode="r", *args, **kwargs):
        fh = real_fdopen(fd, mode, *args, **kwargs)
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if ".last.pt." in name:
            opened.append(name)
            if len(opened) == 3:  # epoch 0, epoch 1, then epoch 2: the disk is full
                real_write = fh.write

                def write(data):
                    real_write(bytes(data[:100]))
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                fh.write = write
        return fh

    monkeypatch.setattr(ckpt_module.os, "fdopen", fdopen)
    out = tmp_path / "runs"
    code, _, err = run_cli(capsys, *train_args(root, out, "--epochs", "3", "--name", "full"))
    monkeypatch.undo()
    line = error_line(err)
    run = out / "full"
    assert code == 1
    assert "No space left on device" in line and "last.pt" in line and "space" in line.split("device", 1)[1]
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 1
    assert torch.load(run / "checkpoints" / "best.pt", weights_only=True)["epoch"] == 1
    assert leftovers(tmp_path) == []
    import json

    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    # and once there is room again, --resume finishes the run
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "-q", "--no-plots")
    assert code == 0, err
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 3


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask(umask, tmp_path, server, tiny_spec, monkeypatch, capsys):
    """Run files, checkpoints and downloads get 0666 & ~umask, like any file: a shared folder stays readable."""
    root = tmp_path / "data"
    write_fake_mnist(root / "mnist")
    monkeypatch.setenv("MNISTLAB_MIRRORS", server.serve_dataset("ok", GZ))
    previous = os.umask(umask)
    try:
        code, _, err = run_cli(capsys, *train_args(root, tmp_path / "runs", "--name", "shared"))
        assert code == 0, err
        code, err = download(capsys, root)
        assert code == 0, err
    finally:
        os.umask(previous)
    run = tmp_path / "runs" / "shared"
    written = [run / "config.yaml", run / "metrics.csv", run / "summary.json", run / "environment.json",
               run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt",
               *(root / "tiny" / name for name in NAMES.values())]
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in written}
    assert modes == {name: oct(0o666 & ~umask) for name in modes}

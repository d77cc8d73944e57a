"""Downloads against a real local HTTP server: success, bad mirrors, checksums, cleanup."""

from __future__ import annotations

import gzip
import socket
import time
from pathlib import Path

import pytest

import mnistlab.data.download as download_module
from conftest import NAMES, SMALL_IDX_GZ as GZ, SMALL_IDX_RAW as RAW, Server
from mnistlab.data import DATASETS, DatasetSpec, download_dataset, load_dataset, verify_dataset
from mnistlab.errors import DataError, UsageError





def dead_url() -> str:
    """A base URL on a port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_success_and_verify(tmp_path: Path, server: Server, tiny_spec: DatasetSpec) -> None:
    good = server.serve_dataset("good")
    folder = download_dataset("tiny", tmp_path, mirrors=[good], progress=False)
    assert folder == tmp_path / "tiny"
    assert leftovers(folder) == sorted(NAMES.values())
    for key, name in NAMES.items():
        assert (folder / name).read_bytes() == GZ[key]  # kept as .gz, byte for byte
    assert verify_dataset("tiny", tmp_path) == {key: "ok" for key in NAMES}
    data = load_dataset("tiny", str(tmp_path))
    assert data.train_images.shape == (30, 1, 28, 28) and len(data.test_labels) == 10


def test_present_files_are_not_downloaded_again(tmp_path: Path, server: Server, tiny_spec: DatasetSpec) -> None:
    good = server.serve_dataset("good")
    download_dataset("tiny", tmp_path, mirrors=[good], progress=False)
    n = len(server.hits)
    download_dataset("tiny", tmp_path, mirrors=[good], progress=False)
    assert len(server.hits) == n


def test_bad_present_file_is_replaced(tmp_path: Path, server: Server, tiny_spec: DatasetSpec) -> None:
    good = server.serve_dataset("good")
    download_dataset("tiny", tmp_path, mirrors=[good], progress=False)
    labels = tmp_path / "tiny" / NAMES["test_labels"]
    labels.write_bytes(gzip.compress(RAW["test_labels"][:-1] + b"\x03"))  # one label changed
    assert verify_dataset("tiny", tmp_path)["test_labels"] == "bad checksum"
    download_dataset("tiny", tmp_path, mirrors=[good], progress=False)
    assert verify_dataset("tiny", tmp_path)["test_labels"] == "ok"


def test_checksum_mismatch_fails_and_leaves_nothing(tmp_path: Path, server: Server, tiny_spec: DatasetSpec) -> None:
    wrong = dict(GZ, train_images=gzip.compress(RAW["train_images"][:-1] + b"\x01"))
    bad = server.serve_dataset("bad", wrong)
    with pytest.raises(DataError) as info:
        download_dataset("tiny", tmp_path, mirrors=[bad], progress=False)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "bad checksum" in message and bad in message
    assert "\n" not in message
    assert leftovers(tmp_path / "tiny") == []


def test_dead_mirror_then_good_mirror(tmp_path: Path, server: Server, tiny_spec: DatasetSpec) -> None:
    good = server.serve_dataset("good")
    download_dataset("tiny", tmp_path, mirrors=[dead_url(), good], progress=False)
    assert verify_dataset("tiny", tmp_path) == {key: "ok" for key in NAMES}
    assert leftovers(tmp_path / "tiny") == sorted(NAMES.values())


def test_timeout_then_good_mirror(tmp_path: Path, server: Server, tiny_spec: DatasetSpec) -> None:
    slow = server.serve_dataset("slow", mode="stall")
    good = server.serve_dataset("good")
    started = time.perf_counter()
    download_dataset("tiny", tmp_path, mirrors=[slow, good], timeout=0.2, progress=False)
    assert time.perf_counter() - started < 4 * 1.0  # gave up on each stalled request early
    assert verify_dataset("tiny", tmp_path) == {key: "ok" for key in NAMES}
    assert leftovers(tmp_path / "tiny") == sorted(NAMES.values())


def test_html_page_with_200_then_good_mirror(tmp_path: Path, server: Server, tiny_spec: DatasetSpec) -> None:
    page = b"<!DOCTYPE html><html><body>Please log in to the Wi-Fi</body></html>"
    for name in NAMES.values():
        server.routes[f"/portal/{name}"] = (200, "text/html; charset=utf-8", page, "")
    good = server.serve_dataset("good")
    download_dataset("tiny", tmp_path, mirrors=[f"{server.url}/portal/", good], progress=False)
    assert verify_dataset("tiny", tmp_path) == {key: "ok" for key in NAMES}
    assert leftovers(tmp_path / "tiny") == sorted(NAMES.values())
    assert any(hit.startswith("/portal/") for hit in server.hits)


def test_every_mirror_failing_lists_what_each_said(tmp_path: Path, server: Server, tiny_spec: DatasetSpec) -> None:
    page = b"<html>captive portal</html>"
    server.routes[f"/portal/{NAMES['train_images']}"] = (200, "text/html", page, "")
    dead = dead_url()
    mirrors = [dead, f"{server.url}/missing/", f"{server.url}/portal/"]
    with pytest.raises(DataError) as info:
        download_dataset("tiny", tmp_path, mirrors=mirrors, progress=False)
    message = str(info.value)
    assert "cannot connect" in message  # the dead port
    assert "HTTP 404" in message  # the 404 mirror
    assert "HTML page" in message  # the 200-with-HTML mirror
    assert all(m in message for m in mirrors)
    assert leftovers(tmp_path / "tiny") == []


def test_transfer_cut_half_way_leaves_nothing(tmp_path: Path, server: Server, tiny_spec: DatasetSpec) -> None:
    cut = server.serve_dataset("cut", mode="cut")
    with pytest.raises(DataError, match="cut short"):
        download_dataset("tiny", tmp_path, mirrors=[cut], progress=False)
    assert leftovers(tmp_path / "tiny") == []


def test_truncated_gzip_body_with_matching_length_is_rejected(tmp_path: Path, server: Server,
                                                               tiny_spec: DatasetSpec) -> None:
    half = {key: body[: len(body) // 2] for key, body in GZ.items()}
    bad = server.serve_dataset("half", half)
    with pytest.raises(DataError, match="truncated"):
        download_dataset("tiny", tmp_path, mirrors=[bad], progress=False)
    assert leftovers(tmp_path / "tiny") == []


def test_keyboard_interrupt_leaves_no_temp_file(tmp_path: Path, server: Server, tiny_spec: DatasetSpec,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    good = server.serve_dataset("good")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # Interrupt after the body is on disk, while it is being verified.
    monkeypatch.setattr(download_module, "check_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download_dataset("tiny", tmp_path, mirrors=[good], progress=False)
    assert leftovers(tmp_path / "tiny") == []


def test_mirrors_from_environment(tmp_path: Path, server: Server, tiny_spec: DatasetSpec,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    good = server.serve_dataset("env")
    monkeypatch.setenv("MNISTLAB_MIRRORS", f"{dead_url()}, {good}")
    download_dataset("tiny", tmp_path, progress=False)
    assert verify_dataset("tiny", tmp_path) == {key: "ok" for key in NAMES}
    assert any(hit.startswith("/env/") for hit in server.hits)


def test_progress_bar_goes_to_stderr(tmp_path: Path, server: Server, tiny_spec: DatasetSpec,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    good = server.serve_dataset("good")
    download_dataset("tiny", tmp_path, mirrors=[good], progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "train-images-idx3-ubyte.gz" in err


def test_load_with_download_fetches_missing_files(tmp_path: Path, server: Server, tiny_spec: DatasetSpec,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    good = server.serve_dataset("good")
    monkeypatch.setenv("MNISTLAB_MIRRORS", good)
    with pytest.raises(DataError, match="mnistlab data download --dataset tiny"):
        load_dataset("tiny", str(tmp_path))
    data = load_dataset("tiny", str(tmp_path), download=True)
    assert len(data.train_labels) == 30


def test_no_checksum_known_checks_structure_and_counts(tmp_path: Path, server: Server, tiny_spec: DatasetSpec,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    spec = DatasetSpec(
        name="nosum", files={key: (NAMES[key], None) for key in NAMES}, mirrors=(), classes=tiny_spec.classes,
        mean=0.5, std=0.29, num_train=30, num_test=10,
    )
    monkeypatch.setitem(DATASETS, "nosum", spec)
    good = server.serve_dataset("good")
    download_dataset("nosum", tmp_path, mirrors=[good], progress=False)
    assert verify_dataset("nosum", tmp_path) == {key: "ok" for key in NAMES}
    # Swapped train/test labels: valid IDX, wrong count.
    (tmp_path / "nosum" / NAMES["train_labels"]).write_bytes(GZ["test_labels"])
    assert verify_dataset("nosum", tmp_path)["train_labels"] == "corrupt: 10 items, expected 30"


def test_verify_reports_missing_and_corrupt(tmp_path: Path, tiny_spec: DatasetSpec) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / NAMES["train_images"]).write_bytes(GZ["train_images"][:50])
    (folder / NAMES["train_labels"]).write_bytes(GZ["train_labels"])
    status = verify_dataset("tiny", tmp_path)
    assert status["train_images"].startswith("corrupt: ")
    assert status["train_labels"] == "ok"
    assert status["test_images"] == status["test_labels"] == "missing"


def test_unknown_dataset_suggests_names(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="fashion-mnist"):
        download_dataset("fashion_mnist", tmp_path, progress=False)
    with pytest.raises(UsageError, match="did you mean mnist"):
        verify_dataset("mnsit", tmp_path)

"""cifar10 / cifar100 from their binary archives: download from the loopback mirrors, md5, safe
extraction, SHA256SUMS, class names from the meta files, fine and coarse labels, and the archives
that must be refused (corrupt, malicious) leaving nothing behind."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from conftest import Server, cifar_members, tar_gz

from mnistlab.cli import main
from mnistlab.data import download_dataset, load_dataset, verify_dataset
from mnistlab.data.archive import MANIFEST
from mnistlab.data.catalog import ARCHIVES, dataset_shape
from mnistlab.errors import DataError, UsageError


def _serve(server: Server, spec, body: bytes, prefix: str = "m") -> str:
    server.routes[f"/{prefix}/{spec.archive}"] = (200, "application/x-gzip", body, "")
    return f"{server.url}/{prefix}/"


def _leftovers(folder: Path) -> list[str]:
    """Everything in the dataset folder that is not a finished file (temporary archives, staging folders)."""
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith("."))


def test_catalog_has_the_official_binary_archives() -> None:
    assert ARCHIVES["cifar10"].archive == "cifar-10-binary.tar.gz"
    assert ARCHIVES["cifar10"].md5 == "c32a1d4ab5d03f1284b67883e8d87530"
    assert ARCHIVES["cifar100"].archive == "cifar-100-binary.tar.gz"
    assert ARCHIVES["cifar100"].md5 == "03b5dce01913d631647c71ecec9e9cb8"
    assert all("python" not in spec.archive for spec in ARCHIVES.values())  # never the pickles
    assert ARCHIVES["cifar10"].num_train == 50000 and ARCHIVES["cifar100"].num_train == 50000
    assert dataset_shape("cifar10") == (3, 32, 10) and dataset_shape("cifar100") == (3, 32, 100)


def test_download_extract_and_load(tmp_path: Path, server: Server, tiny_cifar) -> None:
    spec, archive, arrays = tiny_cifar
    bad = _serve(server, spec, b"\x1f\x8b" + b"not the archive", "bad")
    good = _serve(server, spec, archive, "good")
    folder = download_dataset("tinycifar", tmp_path, mirrors=[bad, good], progress=False)
    assert server.hits == [f"/bad/{spec.archive}", f"/good/{spec.archive}"]  # mirrors in order
    # Only the catalog's files are kept (no readme, no archive), and their sha256 is recorded.
    kept = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert kept == sorted([MANIFEST, *spec.members, *spec.meta_members])
    sums = dict(line.split("  ")[::-1] for line in (folder / MANIFEST).read_text().splitlines())
    for name in spec.members:
        assert sums[name] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    assert set(verify_dataset("tinycifar", tmp_path).values()) == {"ok"}
    data = load_dataset("tinycifar", str(tmp_path))
    assert data.train_images.shape == (40, 3, 32, 32) and data.test_images.shape == (10, 3, 32, 32)
    np.testing.assert_array_equal(data.train_images.numpy(), arrays["train_images"])
    np.testing.assert_array_equal(data.test_labels.numpy(), arrays["test_labels"])
    assert data.classes == [f"class{i}" for i in range(10)]  # from batches.meta.txt
    # Per-channel statistics of these training images.
    expected = arrays["train_images"].astype(np.float64).transpose(1, 0, 2, 3).reshape(3, -1) / 255
    np.testing.assert_allclose(data.mean, expected.mean(1), atol=1e-9)
    np.testing.assert_allclose(data.std, expected.std(1), atol=1e-9)
    # A second download finds the files verified and fetches nothing.
    download_dataset("tinycifar", tmp_path, mirrors=[good], progress=False)
    assert len(server.hits) == 2


def test_cifar100_fine_and_coarse_labels(tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    base = dataclasses.replace(ARCHIVES["cifar100"], name="tiny100", train_files=(("train.bin", 30),),
                               test_files=(("test.bin", 10),))
    members, arrays = cifar_members(base, seed=3)
    archive = tar_gz(members)
    spec = dataclasses.replace(base, md5=hashlib.md5(archive).hexdigest())
    monkeypatch.setitem(ARCHIVES, "tiny100", spec)
    monkeypatch.setenv("MNISTLAB_MIRRORS", _serve(server, spec, archive))
    fine = load_dataset("tiny100", str(tmp_path), download=True)
    coarse = load_dataset("tiny100", str(tmp_path), labels="coarse")
    assert len(fine.classes) == 100 and len(coarse.classes) == 20
    np.testing.assert_array_equal(fine.train_labels.numpy(), arrays["train_labels"])  # byte 1 of each record
    records = np.frombuffer((tmp_path / "tiny100" / spec.folder / "train.bin").read_bytes(), np.uint8).reshape(30, -1)
    np.testing.assert_array_equal(coarse.train_labels.numpy(), records[:, 0])  # byte 0: the coarse label
    np.testing.assert_array_equal(coarse.train_images.numpy(), fine.train_images.numpy())
    with pytest.raises(UsageError, match="cifar100"):
        load_dataset("cifar10", str(tmp_path), labels="coarse")


def test_md5_mismatch_on_every_mirror_is_one_error_and_leaves_nothing(tmp_path: Path, server: Server,
                                                                      tiny_cifar) -> None:
    spec, archive, _ = tiny_cifar
    corrupt = archive[:-40] + bytes(40)  # damaged in transit: same size, other md5
    url = _serve(server, spec, corrupt)
    with pytest.raises(DataError, match="md5") as err:
        download_dataset("tinycifar", tmp_path, mirrors=[url], progress=False)
    assert spec.archive in str(err.value) and "MNISTLAB_MIRRORS" in str(err.value)
    assert list((tmp_path / "tinycifar").iterdir()) == []


def _refused(tmp_path: Path, server: Server, tiny_cifar, members, match: str) -> DataError:
    """Serve an archive of `members` whose md5 the catalog has (as if the official one were tampered
    with at its source): the download must refuse it, leaving the folder empty."""
    spec, _, _ = tiny_cifar
    body = tar_gz(members)
    ARCHIVES["tinycifar"] = dataclasses.replace(spec, md5=hashlib.md5(body).hexdigest())
    with pytest.raises(DataError, match=match) as err:
        download_dataset("tinycifar", tmp_path, mirrors=[_serve(server, spec, body)], progress=False)
    assert sorted(p.name for p in (tmp_path / "tinycifar").iterdir()) == []
    assert not (tmp_path / "evil").exists() and not (tmp_path / "tinycifar" / "evil").exists()
    return err.value


@pytest.mark.parametrize("name", ["../evil", "cifar-10-batches-bin/../../evil", "/tmp/evil-absolute"])
def test_member_outside_the_folder_refuses_the_archive(tmp_path: Path, server: Server, tiny_cifar, name: str) -> None:
    members, _ = cifar_members(tiny_cifar[0])
    err = _refused(tmp_path, server, tiny_cifar, [(name, b"pwned", "file"), *members], "outside the folder")
    assert repr(name) in str(err)
    assert not Path("/tmp/evil-absolute").exists()


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_links_refuse_the_archive(tmp_path: Path, server: Server, tiny_cifar, kind: str) -> None:
    spec = tiny_cifar[0]
    members, _ = cifar_members(spec)
    # A record file replaced by a link to a file outside: following it would overwrite that file.
    link = (f"{spec.folder}/data_batch_1.bin", b"/etc/passwd" if kind == "symlink" else b"../x", kind)
    err = _refused(tmp_path, server, tiny_cifar, [link, *members[2:]], "a link")
    assert "data_batch_1.bin" in str(err)


def test_record_file_of_the_wrong_size_is_refused(tmp_path: Path, server: Server, tiny_cifar) -> None:
    spec = tiny_cifar[0]
    members, _ = cifar_members(spec)
    members = [(n, d[:-100] if n.endswith("data_batch_2.bin") else d, k) for n, d, k in members]
    _refused(tmp_path, server, tiny_cifar, members, "data_batch_2.bin .* holds 61,360 bytes")


def test_archive_lacking_a_file_is_refused(tmp_path: Path, server: Server, tiny_cifar) -> None:
    members, _ = cifar_members(tiny_cifar[0])
    _refused(tmp_path, server, tiny_cifar, [m for m in members if not m[0].endswith("test_batch.bin")],
             "lacks .*test_batch.bin")


def test_truncated_archive_is_refused(tmp_path: Path, server: Server, tiny_cifar) -> None:
    spec, archive, _ = tiny_cifar
    body = archive[: len(archive) // 2]
    ARCHIVES["tinycifar"] = dataclasses.replace(spec, md5=hashlib.md5(body).hexdigest())
    with pytest.raises(DataError, match="not a complete tar.gz"):
        download_dataset("tinycifar", tmp_path, mirrors=[_serve(server, spec, body)], progress=False)
    assert list((tmp_path / "tinycifar").iterdir()) == []


def test_archive_put_in_the_folder_by_hand_is_checked_and_kept(tmp_path: Path, tiny_cifar) -> None:
    spec, archive, _ = tiny_cifar
    folder = tmp_path / "tinycifar"
    folder.mkdir()
    (folder / spec.archive).write_bytes(archive)
    download_dataset("tinycifar", tmp_path, mirrors=["http://127.0.0.1:9/unused/"], progress=False)
    assert (folder / spec.archive).read_bytes() == archive  # the user's copy stays
    assert set(verify_dataset("tinycifar", tmp_path).values()) == {"ok"}
    (folder / spec.archive).write_bytes(archive + b"junk")  # not the official archive: not used
    for name in spec.members:
        (folder / name).unlink()
    with pytest.raises(DataError, match="could not download"):
        download_dataset("tinycifar", tmp_path, mirrors=["http://127.0.0.1:9/unused/"], progress=False, timeout=2)


def test_changed_file_after_extraction_warns_and_verify_says_so(tmp_path: Path, server: Server, tiny_cifar) -> None:
    from mnistlab.data import DataWarning

    spec, archive, _ = tiny_cifar
    download_dataset("tinycifar", tmp_path, mirrors=[_serve(server, spec, archive)], progress=False)
    path = tmp_path / "tinycifar" / spec.folder / "test_batch.bin"
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF  # a pixel, not a label: still loads
    path.write_bytes(bytes(data))
    assert verify_dataset("tinycifar", tmp_path)[f"{spec.folder}/test_batch.bin"] == "bad checksum"
    with pytest.warns(DataWarning, match="test_batch.bin .* differ from the files extracted"):
        load_dataset("tinycifar", str(tmp_path))


def test_missing_files_say_how_to_get_them(tmp_path: Path, tiny_cifar, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "info", "--dataset", "tinycifar", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "mnistlab data download --dataset tinycifar" in err and tiny_cifar[0].archive in err


def test_files_extracted_by_hand_load_and_info_says_unverified(tmp_path: Path, tiny_cifar,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    spec, _, arrays = tiny_cifar
    members, _ = cifar_members(spec)
    for name, data, kind in members:  # `tar xzf` by hand: no SHA256SUMS
        if kind == "dir":
            (tmp_path / "tinycifar" / name).mkdir(parents=True)
        else:
            (tmp_path / "tinycifar" / name).write_bytes(data)
    # Training's download=True must not try the network for files that are already there.
    data = load_dataset("tinycifar", str(tmp_path), download=True)
    np.testing.assert_array_equal(data.train_images.numpy(), arrays["train_images"])
    assert main(["data", "info", "--dataset", "tinycifar", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no SHA256SUMS" in out and "images    3x32x32 uint8, 10 classes" in out and "memory    train" in out


def test_shape_flags_are_for_folders(tmp_path: Path, server: Server, tiny_cifar) -> None:
    spec, archive, _ = tiny_cifar
    download_dataset("tinycifar", tmp_path, mirrors=[_serve(server, spec, archive)], progress=False)
    with pytest.raises(UsageError, match="--channels and --image-size choose the shape of folder:PATH"):
        load_dataset("tinycifar", str(tmp_path), channels=1)
    assert load_dataset("tinycifar", str(tmp_path), channels=3, image_size=32).image_size == 32  # its own shape

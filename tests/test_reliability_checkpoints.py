"""Reliability: untrusted checkpoints, configs, run names and images are refused without harm.

A checkpoint that would run code when unpickled is refused (the code never runs) by every
command that reads checkpoints; a checkpoint for another model is a clear mismatch error;
YAML is read with the safe loader; run names cannot leave the runs folder; `predict`
refuses decompression bombs and formats outside PNG/JPEG/BMP/GIF. See docs/reliability.md.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import png_header_only, write_fake_mnist
from mnistlab.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(data root, a finished logistic run folder) shared by the tests here (copy before changing it)."""
    base = tmp_path_factory.mktemp("ckpt")
    root = base / "data"
    write_fake_mnist(root / "mnist")
    assert main(["train", "--model", "logistic", "--epochs", "1", "--data-dir", str(root), "--out",
                 str(base / "runs"), "--name", "good", "-q", "--no-plots"]) == 0
    return root, base / "runs" / "good"


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(trained[1], dst)
    return dst


@pytest.fixture
def digit_png(tmp_path) -> Path:
    img = np.zeros((28, 28), dtype=np.uint8)
    img[6:22, 12:16] = 255
    path = tmp_path / "one.png"
    Image.fromarray(img).save(path)
    return path


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(run: Path, marker: Path, how: str) -> None:
    payload = {"kind": "mnistlab-checkpoint", "format_version": 1, "state_dict": Evil(marker)}
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        path.unlink()
        if how == "torch.save":
            torch.save(payload, path)
        else:
            path.write_bytes(pickle.dumps(payload, protocol=2))


@pytest.mark.parametrize("how", ["torch.save", "raw-pickle"])
@pytest.mark.parametrize("command", ["evaluate", "predict", "export", "resume", "serve"])
def test_malicious_checkpoint_is_refused_without_running_it(command, how, run_copy, trained, digit_png,
                                                           tmp_path, capsys):
    marker = tmp_path / "MARKER"
    _plant(run_copy, marker, how)
    if command == "serve":
        from mnistlab.errors import CheckpointError
        from mnistlab.serve import build_app

        with pytest.raises(CheckpointError, match="refused|unsafe|cannot read"):
            build_app(str(run_copy))
    else:
        argv = {
            "evaluate": ["evaluate", str(run_copy), "--data-dir", str(trained[0]), "--no-plots"],
            "predict": ["predict", str(run_copy), str(digit_png)],
            "export": ["export", str(run_copy), "--format", "torchscript", "--out", str(tmp_path / "m.pt")],
            "resume": ["train", "--resume", str(run_copy), "-q", "--no-plots"],
        }[command]
        code, _, err = run_cli(capsys, *argv)
        assert code == 1
        assert ".pt" in err and ("refused" in err or "unsafe" in err or "cannot read" in err), err
    assert not marker.exists(), "the pickle's code ran"
    # the direct checkpoint path is refused too
    code, _, err = run_cli(capsys, "predict", str(run_copy / "checkpoints" / "best.pt"), str(digit_png))
    assert code == 1 and not marker.exists()


def test_truncated_checkpoint_is_a_clear_error(run_copy, digit_png, capsys):
    best = run_copy / "checkpoints" / "best.pt"
    data = best.read_bytes()
    best.unlink()  # best.pt is a hard link to last.pt: break the link before changing it
    best.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "predict", str(run_copy), str(digit_png))
    assert code == 1 and "best.pt" in err and "truncated" in err


def test_checkpoint_of_another_model_is_a_clear_mismatch(run_copy, trained, capsys):
    ckpt = torch.load(run_copy / "checkpoints" / "best.pt", weights_only=True)
    ckpt["model"] = {"name": "mlp", "options": {}}  # says mlp, holds logistic weights
    (run_copy / "checkpoints" / "best.pt").unlink()
    torch.save(ckpt, run_copy / "checkpoints" / "best.pt")
    code, _, err = run_cli(capsys, "evaluate", str(run_copy), "--data-dir", str(trained[0]), "--no-plots")
    assert code == 1 and "does not match model" in err and "best" in err


def test_resume_with_other_model_options_is_a_clear_mismatch(run_copy, capsys):
    cfg = yaml.safe_load((run_copy / "config.yaml").read_text())
    cfg["model"], cfg["model_options"] = "mlp", {"hidden_size": 7}
    (run_copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run_copy / "summary.json").write_text('{"status": "interrupted"}')
    code, _, err = run_cli(capsys, "train", "--resume", str(run_copy), "--epochs", "2", "-q", "--no-plots")
    assert code == 1 and "does not match model" in err and "last.pt" in err


def test_yaml_config_with_python_object_is_refused(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\nepochs: 1\n')
    code, _, err = run_cli(capsys, "train", "--config", str(cfg), "--out", str(tmp_path / "runs"))
    assert code == 2 and "evil.yaml" in err and "not valid YAML" in err
    assert not marker.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["../evil", "/abs/evil", "a/b", "..", ".hidden", "a\x00b", "x" * 300])
def test_run_name_cannot_leave_the_runs_folder(name, trained, tmp_path, capsys):
    out = tmp_path / "inner" / "runs"
    code, _, err = run_cli(capsys, "train", "--model", "logistic", "--epochs", "0.05", "--data-dir", str(trained[0]),
                           "--out", str(out), "--name", name, "-q", "--no-plots")
    assert code == 2 and ("bad run name" in err or "NUL" in err)
    assert sorted(p.name for p in tmp_path.rglob("*")) in ([], ["inner", "runs"], ["inner"])
    assert not Path("/abs/evil").exists()


@pytest.mark.parametrize("size", [(30000, 30000), (5000, 5000)])
def test_predict_refuses_decompression_bombs(size, trained, tmp_path, digit_png, capsys):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(*size))
    code, out, err = run_cli(capsys, "predict", str(trained[1]), str(bomb), str(digit_png))
    assert code == 1 and "bomb.png" in err and "too large" in err
    assert "one.png" in out  # the good image is still predicted


@pytest.mark.parametrize("fmt", ["TIFF", "WEBP", "PPM"])
def test_predict_refuses_formats_outside_its_list(fmt, trained, tmp_path, capsys):
    path = tmp_path / f"digit.{fmt.lower()}"
    try:
        Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(path, format=fmt)
    except (KeyError, OSError):
        pytest.skip(f"this Pillow cannot write {fmt}")
    renamed = path.with_suffix(".png")  # a misleading name must not help
    path.rename(renamed)
    code, _, err = run_cli(capsys, "predict", str(trained[1]), str(renamed))
    assert code == 1 and "digit.png" in err and "not supported" in err

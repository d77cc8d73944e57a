"""Smoke test of the benchmark suite (benchmarks/run.py): it runs end to end in quick mode on
made-up data and prints one table of the documented shape. No timing assertions: figures
from a test run on a shared machine mean nothing; the suite's job is to produce them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ["benchmark", "measurement", "device", "median", "unit", "runs", "ratio", "target", "met"]


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--device", "cpu", "--json", str(out), *args],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = "| " + " | ".join(COLUMNS) + " |"
    assert header in proc.stdout
    return json.loads(out.read_text())


def _check_rows(rows: list[dict]) -> None:
    for row in rows:
        assert list(row) == COLUMNS
        assert row["device"] == "cpu"
        assert int(row["runs"]) >= 1
        assert row["median"] != "n/a"
        assert row["met"] == ""  # quick mode never claims a target


def test_quick_subset_table_shape(tmp_path: Path) -> None:
    result = _run(tmp_path, "--only", "limit")
    rows = result["rows"]
    _check_rows(rows)
    assert {r["benchmark"] for r in rows} == {"5 limit"}
    assert any(r["measurement"].startswith("matmul 2048x2048 bf16") for r in rows)
    assert result["machine"]["cores"] >= 1 and result["machine"]["torch"]


def test_quick_predict_csv_rows(tmp_path: Path) -> None:
    pytest.importorskip("pandas", reason="benchmark 6's reference side needs pandas (.ci/run installs it)")
    rows = _run(tmp_path, "--only", "predict")["rows"]
    _check_rows(rows)
    assert [r["benchmark"] for r in rows] == ["6 predict csv"] * 4
    ours, reference = rows[0], rows[1]
    assert ours["measurement"].startswith("2,000 CSV rows end to end (parse + predict + write): mnistlab")
    assert "pandas read_csv + plain PyTorch" in reference["measurement"] and reference["unit"] == "img/s"
    # Both sides wrote a submission from the same checkpoint: the same labels on every row.
    assert ours["ratio"].endswith("labels differ on 0 rows"), ours["ratio"]
    assert "--out submission.csv` wall" in rows[3]["measurement"]


def test_unknown_benchmark_is_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--only", "nope"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "unknown benchmark" in proc.stderr


@pytest.mark.slow
def test_quick_full_suite_table_shape(tmp_path: Path) -> None:
    pytest.importorskip("pandas", reason="benchmark 6's reference side needs pandas (.ci/run installs it)")
    rows = _run(tmp_path)["rows"]
    _check_rows(rows)
    benches = [r["benchmark"] for r in rows]
    assert sorted(set(benches)) == ["1 pipeline", "2 time to 99%", "3 throughput", "4 latency", "5 limit",
                                    "6 predict csv"]
    # pipeline, per batch size (2): 3 pipelines x (data only, data + training), plus the
    # engine with torch's nn.Dropout (data + training only)
    assert benches.count("1 pipeline") == 14
    assert sum("torch dropout" in r["measurement"] for r in rows) == 2
    # throughput: 3 models x 2 batches x (training, inference) + 3 dataset sizes
    assert benches.count("3 throughput") == 15
    assert any("--help" in r["measurement"] and "torch not imported" in r["measurement"] for r in rows)


def test_cuda_without_a_gpu_is_a_usage_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--device", "cuda"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "Traceback" not in proc.stderr


def test_tutorial_dataset_replica_gives_torchvision_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    # The pipeline's baseline must feed the notebook the same tensors ToTensor + Normalize do:
    # float32 [1, 28, 28] holding (x / 255 - mean) / std, and the label as an int.
    import torch

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from bench_pipeline import TorchvisionMNIST

    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([4, 0, 9])
    item, label = TorchvisionMNIST(images, labels, 0.1307, 0.3081)[2]
    assert item.dtype == torch.float32 and item.shape == (1, 28, 28) and label == 9 and isinstance(label, int)
    expected = (images[2].float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(item[0], expected, atol=1e-6)


def _script(tmp_path: Path, name: str, *args: str) -> tuple[str, list[dict]]:
    out = tmp_path / "records.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), "--quick", "--json", str(out), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_best_recipe_quick_scores_each_run_four_ways(tmp_path: Path) -> None:
    stdout, records = _script(tmp_path, "best_recipe.py", "--candidates",
                              '{"ema": {"ema": 0.9}, "no aug": {"ema": 0.9, "augment": false}, "plain": {}}')
    ways = [(r["candidate"], r["weights"], r["tta"]) for r in records]
    assert ways == [("ema", "raw", False), ("ema", "raw", True), ("ema", "average", False), ("ema", "average", True),
                    ("no aug", "raw", False), ("no aug", "raw", True), ("no aug", "average", False),
                    ("no aug", "average", True), ("plain", "raw", False), ("plain", "raw", True)]
    assert all(0 <= r["accuracy"] <= 1 and r["epochs"] == 1 for r in records)
    assert "| candidate | weights | TTA | seeds | mean test acc | worst seed | median train s |" in stdout


def test_lr_find_vs_recipe_quick_counts_the_wins(tmp_path: Path) -> None:
    stdout, records = _script(tmp_path, "lr_find_vs_recipe.py", "--models", "logistic")
    assert [r["model"] for r in records] == ["logistic"] and records[0]["recipe_lr"] == 0.1
    assert records[0]["suggested_lr"] > 0
    assert "beat the recipe's lr in " in stdout and " of 1 short runs" in stdout

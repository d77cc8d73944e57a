"""Smoke test of the benchmark suite (benchmarks/run.py): it runs end to end in quick mode on
made-up data and prints one table of the documented shape. No timing assertions: figures
from a test run on a shared machine mean nothing; the suite's job is to produce them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ["benchmark", "measurement", "device", "median", "unit", "runs", "ratio", "target", "met"]


HEADER = "| " + " | ".join(COLUMNS) + " |"
FRAMEWORKS = ("mnistlab", "plain PyTorch", "PyTorch Lightning", "Keras")


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--device", "cpu", "--json", str(out), *args],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert HEADER in proc.stdout
    # Every report gives the run's own ceiling beside its figures, measured at its start and end.
    assert "Ceiling of this run (torch.mm 2048x2048, fp32 / bf16): cpu: fp32 " in proc.stdout
    result = json.loads(out.read_text())
    for when in ("start", "end"):
        assert set(result["machine"]["ceiling"][when]["cpu"]) == {"fp32", "bf16"}
    return result


def _check_rows(rows: list[dict]) -> None:
    for row in rows:
        assert list(row) == COLUMNS
        assert row["device"] == "cpu"
        assert int(row["runs"]) >= 1
        assert row["median"] != "n/a"
        assert row["met"] == ""  # quick mode never claims a target


def test_quick_subset_table_shape(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nprose stays\n\n<!-- peers:start (old) -->\nold peers table\n<!-- peers:end -->\n")
    result = _run(tmp_path, "--only", "limit", "--update-doc", "all", "--doc", str(doc))
    rows = result["rows"]
    _check_rows(rows)
    assert {r["benchmark"] for r in rows} == {"5 limit"}
    assert any(r["measurement"].startswith("matmul 2048x2048 bf16") for r in rows)
    assert result["machine"]["cores"] >= 1 and result["machine"]["torch"]
    # --update-doc all: the sections this run covers (limit -> results) and the targets, each
    # with the run's command and ceiling; the prose and the sections it did not cover stay.
    text = doc.read_text()
    assert "prose stays" in text and "old peers table" in text
    results = text.split("<!-- results:start")[1].split("<!-- results:end -->")[0]
    targets = text.split("<!-- targets:start")[1].split("<!-- targets:end -->")[0]
    for section in (results, targets):
        assert "--update-doc all" in section and "Ceiling of this run" in section and HEADER in section
    assert results.count("| 5 limit |") == len(rows)
    assert targets.count("| 5 limit |") == 1 and "x bf16 floor" in targets  # the only row with a target


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


@pytest.mark.slow
def test_quick_peers_every_framework_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The peers (their own venv, built on first use) against mnistlab: both jobs, every framework,
    # each with its training seconds and test accuracy, then job 2 against this run's ceiling.
    import torch

    rows = _run(tmp_path, "--only", "peers")["rows"]
    _check_rows(rows)
    assert {r["benchmark"] for r in rows} == {"7 peers"} and len(rows) == 22
    for job in ("job 1 DNN b32", "job 2 time to 99%"):
        for fw in FRAMEWORKS:
            mine = [r for r in rows if r["measurement"].startswith(job) and f": {fw}" in r["measurement"]]
            training = [r for r in mine if r["measurement"].endswith("training s")]
            accuracy = [r for r in mine if r["measurement"].endswith("test accuracy")]
            assert len(training) == 1 and len(accuracy) == 1, (job, fw)
            assert float(training[0]["median"]) > 0 and 0 <= float(accuracy[0]["median"]) <= 100
            if fw != "mnistlab":
                assert "x mnistlab; whole fit()" in training[0]["ratio"]
    floors = [r for r in rows if r["measurement"].startswith("job 3 time to 99% / bf16 floor")]
    assert len(floors) == 4 and all(r["unit"] == "x floor" and "GFLOP: bf16 floor" in r["ratio"] for r in floors)
    assert sum(r["measurement"].startswith("job 3 ceiling: matmul") for r in rows) == 2
    # The peers trained on the torch build mnistlab runs on, and pip's own output says so.
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import peers_env

    assert any(torch.__version__ in r["measurement"] for r in rows if "plain PyTorch" in r["measurement"])
    log = peers_env.venv_dir() / peers_env.PIP_LOG
    if log.is_file():
        assert torch.__version__ in peers_env.installed_torch(log)


def _peers_env_error(tmp_path: Path, venv: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MNISTLAB_PEERS_VENV": str(venv)}
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--only", "peers",
                           "--device", "cpu"], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_peers_venv_never_replaces_a_folder_that_is_not_a_venv(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "keep.txt").write_text("precious")
    proc = _peers_env_error(tmp_path, folder)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "is not a virtual environment; refusing to replace it" in proc.stderr
    assert (folder / "keep.txt").read_text() == "precious"


def test_peers_venv_with_another_torch_build_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A built venv (stamp in place) whose torch is not the one mnistlab runs: side by side would not
    # be the same build, so the run stops with one line saying so.
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import peers_env

    venv = tmp_path / "peers"
    python = peers_env.python_of(venv)
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\necho '\"0.0.1+other\"'\n")
    python.chmod(0o755)
    (venv / "pyvenv.cfg").write_text("home = /nowhere\n")
    (venv / peers_env.STAMP).write_text(peers_env._stamp_text())
    proc = _peers_env_error(tmp_path, venv)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "has torch 0.0.1+other but mnistlab runs torch" in proc.stderr and "same build" in proc.stderr


def _gpu_sh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=1500)


@pytest.mark.slow
def test_gpu_sh_dry_run_runs_every_step_on_cpu(tmp_path: Path, fake_mnist_root: Path) -> None:
    # The GPU script's own code path with tiny settings on the CPU: install (this venv, already set
    # up), data check, one run of the suite + `fast` seeds + peers, the tables in the folder.
    out = tmp_path / "gpu tables"
    env = {**os.environ, "GPU_VENV": sys.prefix, "MNISTLAB_DATA": str(fake_mnist_root)}
    proc = _gpu_sh("--dry-run", str(out), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already imports this checkout's mnistlab" in proc.stderr and "data: 600 training" in proc.stderr
    assert HEADER in (out / "tables.md").read_text() and "Ceiling of this run" in (out / "tables.md").read_text()
    assert "running peers" in (out / "run.log").read_text()
    rows = json.loads((out / "tables.json").read_text())["rows"]
    _check_rows(rows)
    assert sorted({r["benchmark"] for r in rows}) == ["1 pipeline", "2 time to 99%", "3 throughput", "4 latency",
                                                       "5 limit", "7 peers"]
    for fw in FRAMEWORKS:
        assert any(r["measurement"].startswith("job 2 time to 99%: " + fw) for r in rows), fw


def test_gpu_sh_usage_errors(tmp_path: Path) -> None:
    for args, message in ((["--bogus"], "unknown option --bogus"),
                          (["--dry-run", "--update-doc"], "drop --update-doc"),
                          (["--dry-run", str(tmp_path / "a"), str(tmp_path / "b")], "one output folder only")):
        proc = _gpu_sh(*args)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "a").exists()


def test_only_all_and_bad_reps(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import run

    _, names = run.parse_args(["--quick", "--only", "all"])
    assert names == [*run.BENCHMARKS, *run.OPTIONAL] and "peers" in names
    _, names = run.parse_args(["--quick", "--only", "peers,limit", "--only", "peers"])
    assert names == ["peers", "limit"]  # each once, in the order given
    with pytest.raises(SystemExit) as exit_info:
        run.parse_args(["--quick", "--reps", "0"])
    assert exit_info.value.code == 2 and "--reps must be at least 1" in capsys.readouterr().err


def test_missing_data_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--only", "limit", "--device", "cpu",
                           "--reps", "1", "--data-dir", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("run.py: mnist is missing train-images-idx3-ubyte.gz")


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
def test_best_recipe_quick_scores_each_run_every_way_it_has(tmp_path: Path) -> None:
    stdout, records = _script(tmp_path, "best_recipe.py", "--jobs", "2", "--out", str(tmp_path / "runs"),
                              "--runs", "best:0,before:0,all-data:0,no-augment:0,ema:0")
    ways = [(r["candidate"], r["weights"], r["tta"]) for r in records]
    assert ways == [("best", "raw", False), ("best", "raw", True), ("before", "raw", False), ("before", "raw", True),
                    ("all-data", "raw", False), ("all-data", "raw", True), ("no-augment", "raw", False),
                    ("no-augment", "raw", True), ("ema", "raw", False), ("ema", "raw", True), ("ema", "average", False),
                    ("ema", "average", True)]
    assert all(0 <= r["accuracy"] <= 1 and r["epochs"] == 1 and r["threads"] == max(1, (os.cpu_count() or 1) // 2)
               for r in records)
    folders = {r["candidate"]: yaml.safe_load((Path(r["run"]) / "config.yaml").read_text()) for r in records}
    assert (folders["best"]["rotate"], folders["best"]["monitor"], folders["best"]["ema"]) == (10.0, "valid_accuracy", 0)
    assert (folders["before"]["rotate"], folders["before"]["monitor"], folders["before"]["ema"]) == (0, "valid_loss", 0)
    # all-data holds nothing out and brings its own 11 epochs, yet --quick's 1 epoch wins (checked above).
    assert [folders[c]["valid_fraction"] for c in ("best", "before", "all-data")] == [0.1, 0.1, 0.0]
    assert (folders["all-data"]["rotate"], folders["all-data"]["monitor"]) == (10.0, "valid_accuracy")
    assert (folders["no-augment"]["augment"], folders["no-augment"]["rotate"]) == (False, 0.0)
    assert (folders["ema"]["ema"], folders["ema"]["rotate"]) == (0.999, 10.0)
    assert "| candidate | weights | TTA | seeds | mean test acc | worst seed | median train s |" in stdout
    assert "bad --runs item" in subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "best_recipe.py"), "--quick", "--runs", "nope:0"],
        capture_output=True, text=True, cwd=REPO, timeout=300).stderr


def test_lr_find_vs_recipe_quick_counts_the_wins(tmp_path: Path) -> None:
    stdout, records = _script(tmp_path, "lr_find_vs_recipe.py", "--models", "logistic")
    assert [r["model"] for r in records] == ["logistic"] and records[0]["recipe_lr"] == 0.1
    assert records[0]["suggested_lr"] > 0
    assert "beat the recipe's lr in " in stdout and " of 1 short runs" in stdout

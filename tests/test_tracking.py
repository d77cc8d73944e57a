"""`--mlflow [URI]`: everything a run logs, read back with MlflowClient, from a local store and from a real
`mlflow server` on 127.0.0.1 (SQLite backend in a temporary folder); nesting of sweeps' and studies' runs;
FINISHED / FAILED / KILLED; and a tracking server that dies in the middle of a run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

import mnistlab  # noqa: E402
from mnistlab.cli import main  # noqa: E402
from mnistlab.errors import UsageError  # noqa: E402

SRC = str(Path(__file__).parents[1] / "src")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _runs(client: MlflowClient, **filters: str) -> list:
    experiment = client.get_experiment_by_name("mnistlab")
    found = client.search_runs([experiment.experiment_id]) if experiment else []
    return [r for r in found if all(r.data.tags.get(k) == v for k, v in filters.items())]


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for a in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, a.path) if a.is_dir else {a.path}
    return out


def test_mlflow_missing_is_a_usage_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          fake_mnist_root: Path) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import fails as if not installed
    with pytest.raises(UsageError, match=r"pip install 'mnistlab\[mlflow\]'"):
        mnistlab.train(mnistlab.TrainConfig(model="logistic", epochs=1, data_dir=str(fake_mnist_root),
                                            out=str(tmp_path), mlflow="default"))
    assert not list(tmp_path.glob("logistic*"))  # refused before any run folder


def test_mlflow_checkpoints_needs_mlflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--model", "logistic", "--mlflow-checkpoints", "--out", str(tmp_path)]) == 2
    assert "--mlflow-checkpoints needs --mlflow" in capsys.readouterr().err


@pytest.mark.slow  # MLflow creates its SQLite store (database migrations): tens of seconds
def test_a_run_in_the_local_store_then_resumed(tmp_path: Path, fake_mnist_root: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    common = ["--data-dir", str(fake_mnist_root), "--out", str(tmp_path / "runs"), "-q"]
    assert main(["train", "--model", "mlp", "--epochs", "2", "--lr", "0.1", "--set", "hidden_size=16", "--mlflow",
                 *common]) == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")  # the default: ./mlruns
    [run] = _runs(client)
    folder = tmp_path / "runs" / "mlp"
    assert run.info.status == "FINISHED" and run.info.run_name == "mlp"
    assert run.data.tags["model"] == "mlp" and run.data.tags["dataset"] == "mnist"
    assert run.data.tags["mnistlab_version"] == mnistlab.__version__
    assert run.data.tags["run_folder"] == str(folder.resolve()) and run.data.tags["stop_reason"] == "completed 2 epochs"
    params = run.data.params
    assert params["lr"] == "0.1" and params["epochs"] == "2.0" and params["model_options.hidden_size"] == "16"
    summary = json.loads((folder / "summary.json").read_text())
    assert run.data.metrics["test_accuracy"] == summary["accuracy"]
    history = client.get_metric_history(run.info.run_id, "valid_loss")
    rows = mnistlab.load_run(folder).history
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["valid_loss"]) for r in rows]
    for column in ("train_loss", "train_accuracy", "valid_accuracy", "lr", "train_seconds", "epoch_seconds"):
        assert len(client.get_metric_history(run.info.run_id, column)) == 2
    files = _artifacts(client, run.info.run_id)
    assert {"config.yaml", "summary.json", "metrics.csv", "report.md", "plots/curves.png"} <= files
    assert not any(f.startswith("checkpoints/") for f in files)

    # --resume continues the same MLflow run (its id is in the checkpoint), steps going on from 3.
    assert main(["train", "--resume", str(folder), "--epochs", "3", *common]) == 0
    [again] = _runs(client)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "valid_loss")] == [1, 2, 3]
    assert "warning" not in capsys.readouterr().err

    # mnistlab.fit takes it as a keyword too (a TrainConfig setting), for a model object of one's own.
    import torch

    images, labels = torch.randint(0, 256, (200, 1, 28, 28), dtype=torch.uint8), torch.arange(200) % 10
    fitted = mnistlab.fit(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), (images, labels),
                          epochs=1, out=str(tmp_path / "runs"), progress="quiet", plots=False, mlflow="default")
    [own] = _runs(client, run_folder=str(fitted.path.resolve()))
    assert own.info.status == "FINISHED" and "test_accuracy" in own.data.metrics


def test_a_tracking_server_that_is_down_costs_one_warning(tmp_path: Path, fake_mnist_root: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["train", "--model", "logistic", "--epochs", "3", "--data-dir", str(fake_mnist_root),
                 "--out", str(tmp_path), "-q", "--no-plots", "--mlflow", f"http://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("MLflow tracking at") == 1 and "training goes on" in err
    assert json.loads((tmp_path / "logistic" / "summary.json").read_text())["status"] == "completed"


def test_a_tracking_server_that_refuses_writes_costs_one_warning(tmp_path: Path, fake_mnist_root: Path, server,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # Reads work (the experiment exists); every write (a POST) is refused with 501.
    server.routes["/api/2.0/mlflow/experiments/get-by-name?experiment_name=mnistlab"] = (
        200, "application/json", b'{"experiment": {"experiment_id": "1", "name": "mnistlab"}}', "")
    code = main(["train", "--model", "logistic", "--epochs", "2", "--data-dir", str(fake_mnist_root),
                 "--out", str(tmp_path), "-q", "--no-plots", "--mlflow", server.url])
    err = capsys.readouterr().err
    assert code == 0 and err.count("MLflow tracking at") == 1 and "creating the run" in err
    assert any("get-by-name" in hit for hit in server.hits)
    assert json.loads((tmp_path / "logistic" / "summary.json").read_text())["status"] == "completed"


# ----------------------------------------------------------------------------- a real tracking server

class MlflowServer:
    """`mlflow server` on a free 127.0.0.1 port with an SQLite backend in `folder`; killed with its workers."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        self.db = f"sqlite:///{folder / 'mlflow.db'}"
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.db, "--artifacts-destination",
               str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.log = (folder / "server.log").open("w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # its own group: kill() reaches its workers
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert self.proc.poll() is None and time.time() < deadline, (folder / "server.log").read_text()
            time.sleep(0.3)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    s = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    yield s
    s.kill()


def _mnistlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mnistlab", *args], env=_env(), text=True, capture_output=True,
                          timeout=600)


@pytest.mark.slow
def test_train_and_text_train_log_everything_to_a_server(mlflow_server: MlflowServer, tmp_path: Path,
                                                         fake_mnist_root: Path) -> None:
    done = _mnistlab("train", "--model", "logistic", "--epochs", "2", "--data-dir", str(fake_mnist_root),
                     "--out", str(tmp_path), "--name", "served", "-q", "--mlflow", mlflow_server.url,
                     "--mlflow-checkpoints")
    assert done.returncode == 0, done.stderr
    client = MlflowClient(mlflow_server.url)
    [run] = _runs(client, run_folder=str((tmp_path / "served").resolve()))
    assert run.info.status == "FINISHED" and run.data.params["model"] == "logistic"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
    assert {"test_accuracy", "test_f1_macro", "test_auc_macro"} <= set(run.data.metrics)
    files = _artifacts(client, run.info.run_id)
    assert {"config.yaml", "summary.json", "metrics.csv", "report.html", "checkpoints/best.pt",
            "checkpoints/last.pt", "plots/confusion_matrix.png"} <= files

    done = _mnistlab("text", "train", "--data", "builtin:sentiment", "--model", "gru", "--epochs", "1",
                     "--hidden", "8", "--out", str(tmp_path), "--name", "text", "-q",
                     "--mlflow", mlflow_server.url)
    assert done.returncode == 0, done.stderr
    [text] = _runs(client, run_folder=str((tmp_path / "text").resolve()))
    assert text.info.status == "FINISHED" and text.data.tags["model"] == "gru"
    assert text.data.params["task"] == "text" and text.data.params["hidden"] == "8"
    assert {"vocab.json", "labels.json", "summary.json"} <= _artifacts(client, text.info.run_id)


@pytest.mark.slow
def test_failed_and_interrupted_runs_end_failed_and_killed(mlflow_server: MlflowServer, tmp_path: Path,
                                                           fake_mnist_root: Path) -> None:
    done = _mnistlab("train", "--model", "dnn", "--set", "batchnorm=false", "--set", "dropout=false", "--lr", "1000",
                     "--optimizer", "sgd", "--epochs", "2", "--data-dir", str(fake_mnist_root), "--out", str(tmp_path),
                     "--name", "boom", "-q", "--no-plots", "--mlflow", mlflow_server.url)
    assert done.returncode == 1 and "diverged" in done.stderr
    client = MlflowClient(mlflow_server.url)
    [boom] = _runs(client, run_folder=str((tmp_path / "boom").resolve()))
    assert boom.info.status == "FAILED" and boom.data.tags["stop_reason"].startswith("diverged")
    assert "summary.json" in _artifacts(client, boom.info.run_id)

    proc = subprocess.Popen([sys.executable, "-m", "mnistlab", "train", "--model", "logistic", "--epochs", "200",
                             "--data-dir", str(fake_mnist_root), "--out", str(tmp_path), "--name", "stopped",
                             "--jsonl", "--no-plots", "--mlflow", mlflow_server.url], env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in proc.stdout:
        if json.loads(line).get("event") == "epoch":
            break
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    [stopped] = _runs(client, run_folder=str((tmp_path / "stopped").resolve()))
    assert stopped.info.status == "KILLED" and stopped.data.tags["status"] == "interrupted"


@pytest.mark.slow
def test_a_sweeps_runs_and_a_studys_trials_nest_under_one_parent(mlflow_server: MlflowServer, tmp_path: Path,
                                                                 fake_mnist_root: Path) -> None:
    client = MlflowClient(mlflow_server.url)
    done = _mnistlab("sweep", "--model", "logistic", "--grid", "lr=0.1,0.5", "--epochs", "1", "--workers", "2",
                     "--data-dir", str(fake_mnist_root), "--out", str(tmp_path), "--name", "sw", "--no-plots",
                     "--mlflow", mlflow_server.url)
    assert done.returncode == 0, done.stderr
    [parent] = [r for r in _runs(client, kind="sweep") if r.info.run_name == "sw"]
    children = _runs(client, **{"mlflow.parentRunId": parent.info.run_id})
    assert parent.info.status == "FINISHED" and parent.data.params["grid.lr"] == "0.1;0.5"
    assert sorted(r.info.run_name for r in children) == ["lr=0.1", "lr=0.5"]
    assert {r.info.status for r in children} == {"FINISHED"}

    done = _mnistlab("tune", "--model", "logistic", "--trials", "3", "--param", "lr=log:1e-2:1", "--epochs", "2",
                     "--study", "st", "--data-dir", str(fake_mnist_root), "--out", str(tmp_path), "--no-plots",
                     "--workers", "2", "--mlflow", mlflow_server.url)
    assert done.returncode == 0, done.stderr
    [study] = _runs(client, kind="study", study="st")
    trials = _runs(client, **{"mlflow.parentRunId": study.info.run_id})
    assert study.info.status == "FINISHED" and study.data.params["param.lr"] == "log:1e-2:1"
    assert sorted(r.data.tags["trial"] for r in trials) == ["0", "1", "2"]
    assert {r.data.tags["optuna_state"] for r in trials} <= {"COMPLETE", "PRUNED"}
    best = json.loads((tmp_path / "st" / "best.json").read_text())
    assert client.get_metric_history(study.info.run_id, "best_valid_loss")[-1].value == pytest.approx(best["value"])
    one = next(r for r in trials if r.data.tags["trial"] == str(best["trial"]))
    local = client.download_artifacts(one.info.run_id, "summary.json", str(tmp_path / "dl"))
    assert json.loads(Path(local).read_text())["trial"]["number"] == best["trial"]


@pytest.mark.slow
def test_a_server_killed_in_the_middle_of_a_run_loses_nothing_local(tmp_path: Path, fake_mnist_root: Path) -> None:
    server = MlflowServer(tmp_path / "server")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "mnistlab", "train", "--model", "logistic", "--epochs", "200",
                                 "--data-dir", str(fake_mnist_root), "--out", str(tmp_path), "--name", "cut",
                                 "--jsonl", "--mlflow", server.url], env=_env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        epochs = 0
        for line in proc.stdout:
            if json.loads(line).get("event") == "epoch":
                epochs += 1
                if epochs == 2:
                    server.kill()
                    break
        out, err = proc.communicate(timeout=300)
    finally:
        server.kill()
    assert proc.returncode == 0, err
    # --jsonl: the one warning is an event on stdout; the run went on to its last epoch.
    warnings = [e for e in map(json.loads, out.splitlines()) if e.get("event") == "warning"]
    assert len(warnings) == 1 and "MLflow tracking at" in warnings[0]["message"] and "Traceback" not in err
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == 200
    assert (tmp_path / "cut" / "report.md").is_file()
    # What reached the server before it died is there (read from its database directly).
    [run] = _runs(MlflowClient(server.db))
    assert run.info.status == "RUNNING"
    assert 1 <= len(MlflowClient(server.db).get_metric_history(run.info.run_id, "valid_loss")) < 200

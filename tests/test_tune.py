"""`mnistlab tune`: search spaces checked before any trial, trials as run folders, records, resume, pruning,
lost trials (killed, interrupted) and several processes on one study (SQLite here; PostgreSQL in
test_tune_postgres.py)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from mnistlab.cli import main  # noqa: E402
from mnistlab.errors import UsageError  # noqa: E402
from mnistlab.tune.space import check_space, parse_param, value_text  # noqa: E402

SRC = str(Path(__file__).parents[1] / "src")


def argv(root: Path, out: Path, *extra: str, trials: int = 3, study: str = "t", epochs: str = "2") -> list[str]:
    return ["tune", "--model", "logistic", "--trials", str(trials), "--param", "lr=log:1e-3:1", "--epochs", epochs,
            "--data-dir", str(root), "--out", str(out), "--no-plots", "--study", study, *extra]


def read_trials(folder: Path) -> list[dict[str, str]]:
    with (folder / "trials.csv").open() as fh:
        return list(csv.DictReader(fh))


def study_of(folder: Path) -> optuna.Study:
    return optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'study.db'}")


# ----------------------------------------------------------------------------- the search space

def test_param_kinds() -> None:
    lr = parse_param("lr=log:1e-4:1e-1")
    assert (lr.name, lr.kind, lr.low, lr.high, lr.log) == ("lr", "float", 1e-4, 1e-1, True)
    bs = parse_param("batch-size=int:32:256:log")
    assert (bs.name, bs.kind, bs.log, bs.step) == ("batch_size", "int", True, None)
    stepped = parse_param("batch_size=int:32:250:32")
    assert stepped.step == 32 and stepped.ends() == [32, 224]  # the largest value the steps reach
    drop = parse_param("set.dropout-ratio=float:0:0.5")
    assert (drop.name, drop.key) == ("set.dropout_ratio", "dropout_ratio")
    dims = parse_param("set.hidden_dims=cat:784,128;784,256,128")
    assert dims.choices == ("784,128", "784,256,128")
    assert parse_param("optimizer=cat:adam, sgd ,adamw").choices == ("adam", "sgd", "adamw")


def test_values_keep_their_type_through_yaml() -> None:
    for value in (1e-5, 0.001, 3e20, 0.5, 64):
        assert yaml.safe_load(value_text(value)) == value


@pytest.mark.parametrize("spec, message", [
    ("foo=float:0:1", "unknown setting 'foo'"),
    ("lr=float:1:0.1", "above HIGH"),
    ("lr=log:0:1", "log range must be above 0"),
    ("batch_size=int:0:64:log", "log range must be above 0"),
    ("lr=log:1e-4:2000", "bad lr 2000.0"),  # a value the field rejects, at the end of the range
    ("batch_size=float:16:64", "in --param batch_size: expected a whole number"),  # its ends are whole
    ("optimizer=cat:adam,foo", "bad optimizer 'foo'"),
    ("set.nosuch=float:0:1", "has no option 'nosuch'"),
    ("set.lr=float:0:1", "is a train setting"),
    ("out=cat:a,b", "not a search setting"),
    ("lr=uniform:0:1", "unknown kind"),
    ("lr", "NAME=KIND:ARGS"),
    ("optimizer=cat:adam,adam", "different"),
    ("batch_size=int:16:64:1.5", "not a whole number"),
    ("lr=float:0:nan", "finite"),
])
def test_bad_params_are_usage_errors_before_any_trial(spec: str, message: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["tune", "--model", "logistic", "--trials", "2", "--param", spec, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())  # no study, no folder


def test_trials_and_params_are_required(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", "--model", "logistic", "--param", "lr=log:1e-3:1", "--out", str(tmp_path)]) == 2
    assert "tune needs --trials N" in capsys.readouterr().err
    assert main(["tune", "--model", "logistic", "--trials", "2", "--out", str(tmp_path)]) == 2
    assert "tune needs at least one --param" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_values_that_only_clash_together_are_refused() -> None:
    specs = [parse_param("model=cat:dnn,logistic"), parse_param("set.dropout_ratio=float:0:0.5")]
    with pytest.raises(UsageError, match="model=logistic.*do not go together.*no option 'dropout_ratio'"):
        check_space({"model": "dnn"}, specs)


@pytest.mark.parametrize("extra, message", [
    (["--trials", "0"], "bad --trials 0"),
    (["--trials", "-1"], "bad --trials -1"),
    (["--workers", "0"], "bad --workers 0"),
    (["--name", "x"], "tune has no --name"),
    (["--valid-fraction", "0"], "needs a validation split"),
    (["--storage", "nonsense"], "bad --storage"),
])
def test_bad_tune_flags_are_usage_errors(extra: list[str], message: str, tmp_path: Path, fake_mnist_root: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv(fake_mnist_root, tmp_path, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


# ----------------------------------------------------------------------------- a study

def test_each_trial_is_a_run_folder_and_the_records_follow(tmp_path: Path, fake_mnist_root: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv(fake_mnist_root, tmp_path, "--sampler", "random", "--sampler-seed", "3")) == 0
    out, err = capsys.readouterr()
    folder = tmp_path / "t"
    rows = read_trials(folder)
    assert [r["trial"] for r in rows] == ["0", "1", "2"] and {r["state"] for r in rows} == {"COMPLETE"}
    for row in rows:
        run = folder / f"trial-{int(row['trial']):04d}"
        assert row["run_folder"] == str(run.resolve())
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and (run / "checkpoints" / "best.pt").is_file()
        assert summary["trial"] == {"study": "t", "number": int(row["trial"]), "state": "COMPLETE",
                                    "value": float(row["value"]), "params": {"lr": float(row["lr"])}}
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["lr"] == float(row["lr"]) and config["epochs"] == 2.0
        # The value is the run's valid loss at its best epoch (the checkpoint it keeps).
        assert float(row["value"]) == pytest.approx(summary["best_valid_loss"])
        assert "train.log" in os.listdir(run) and "test accuracy" not in out.split("best trial")[0]
    best = json.loads((folder / "best.json").read_text())
    low = min(rows, key=lambda r: float(r["value"]))
    assert best["trial"] == int(low["trial"]) and best["value"] == float(low["value"])
    assert best["params"] == {"lr": float(low["lr"])} and best["run_folder"] == low["run_folder"]
    assert f"best trial {low['trial']}: valid_loss" in out and f"run folder: {low['run_folder']}" in out
    assert "3 queued" in err

    # compare reads the trials like any runs
    assert main(["compare", str(folder / "trial-*")]) == 0
    assert capsys.readouterr().out.count("trial-000") == 3

    # The same command again: nothing to do. With --trials 4: one more trial, numbered 3.
    assert main(argv(fake_mnist_root, tmp_path)) == 0
    assert "3 of 3 trials done, 0 queued" in capsys.readouterr().err
    assert main(argv(fake_mnist_root, tmp_path, trials=4)) == 0
    assert [r["trial"] for r in read_trials(folder)] == ["0", "1", "2", "3"]
    assert sorted(p.name for p in folder.glob("trial-*")) == [f"trial-000{i}" for i in range(4)]

    # Other fixed settings than the study started with: refused, naming the change.
    capsys.readouterr()
    assert main(argv(fake_mnist_root, tmp_path, epochs="3", trials=5)) == 1
    err = capsys.readouterr().err
    assert "started with other settings (epochs 2.0 -> 3.0)" in err and len(read_trials(folder)) == 4

    # --show prints the table from the storage alone; --plot draws Optuna's plots.
    assert main(["tune", "--study", "t", "--out", str(tmp_path), "--show", "--plot", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["trial", "state", "value", "lr"] and out.count("COMPLETE") == 4
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["tune", "--study", "nosuch", "--out", str(tmp_path), "--show"]) == 1
    assert "there is no study 'nosuch'" in capsys.readouterr().err


def test_a_pruned_trial_stops_at_once_and_keeps_its_checkpoint(tmp_path: Path, fake_mnist_root: Path) -> None:
    import mnistlab
    from mnistlab.tune.trial import ReportToTrial

    # A pruner that prunes everything above a valid loss of 0: the first report prunes.
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    trial = study.ask()
    reporter = ReportToTrial(trial, "valid_loss")
    run = mnistlab.train(mnistlab.TrainConfig(model="logistic", epochs=5, data_dir=str(fake_mnist_root),
                                              out=str(tmp_path), progress="quiet", plots=False),
                         callbacks=[reporter])
    assert run.summary["stop_reason"] == "pruned at epoch 1" and run.summary["epochs_run"] == 1
    assert reporter.pruned_at == 1 and (run.path / "checkpoints" / "last.pt").is_file()
    assert list(study.trials[0].intermediate_values) == [1]
    assert trial.user_attrs["run_folder"] == str(run.path.resolve())


def test_a_diverging_trial_fails_and_the_search_goes_on(tmp_path: Path, fake_mnist_root: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    cmd = ["tune", "--model", "dnn", "--set", "batchnorm=false", "--set", "dropout=false", "--optimizer", "sgd",
           "--trials", "2", "--param", "lr=cat:1000,0.01", "--sampler", "random", "--epochs", "1", "--data-dir",
           str(fake_mnist_root), "--out", str(tmp_path), "--no-plots", "--study", "d", "--sampler-seed", "0"]
    assert main(cmd) == 0
    rows = {r["lr"]: r for r in read_trials(tmp_path / "d")}
    assert rows["1000"]["state"] == "FAIL" and "diverged" in rows["1000"]["stop_reason"]
    assert rows["0.01"]["state"] == "COMPLETE"
    # A failure of its own counts as one of the trials: nothing is queued again.
    assert main(cmd) == 0 and "2 of 2 trials done, 0 queued" in capsys.readouterr().err


# ----------------------------------------------------------------------------- lost trials, several processes

def _spawn(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "mnistlab", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_training(folder: Path, proc: subprocess.Popen[str], timeout: float = 120) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        started = [p for p in folder.glob("trial-*") if (p / "metrics.csv").is_file()]
        if started:
            return started[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("no trial started training")


@pytest.mark.slow
def test_a_killed_process_leaves_its_trial_failed_and_retried(tmp_path: Path, fake_mnist_root: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    args = argv(fake_mnist_root, tmp_path, trials=2, epochs="40")
    proc = _spawn(args)
    victim = _wait_for_training(tmp_path / "t", proc)
    proc.kill()
    proc.communicate()  # reaped: its pid is gone
    assert json.loads((victim / "summary.json").read_text())["status"] == "running"

    assert main(args) == 0  # the same command continues the study
    rows = read_trials(tmp_path / "t")
    lost = [r for r in rows if r["state"] == "FAIL"]
    assert len(lost) == 1 and lost[0]["run_folder"] == str(victim.resolve())
    assert lost[0]["stop_reason"] == f"lost: the process running trial {lost[0]['trial']} died"
    assert [r["state"] for r in rows].count("COMPLETE") == 2  # exactly --trials, the lost one run again
    retry = study_of(tmp_path / "t").trials[-1]
    assert retry.system_attrs["retry_of"] == int(lost[0]["trial"]) and retry.params == {"lr": float(lost[0]["lr"])}
    summary = json.loads((victim / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["stop_reason"].startswith("lost: the process")


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_rerun_finishes(tmp_path: Path, fake_mnist_root: Path) -> None:
    args = argv(fake_mnist_root, tmp_path, trials=2, epochs="40")
    proc = _spawn(args)
    victim = _wait_for_training(tmp_path / "t", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "tune interrupted; 0 of 2 trials done. Rerun the same command" in err
    rows = read_trials(tmp_path / "t")
    assert rows[0]["state"] == "FAIL" and rows[0]["stop_reason"] == "lost: interrupted during trial 0"
    assert rows[-1]["state"] == "WAITING" and rows[-1]["stop_reason"] == "queued (retry of trial 0)"
    assert json.loads((victim / "summary.json").read_text())["status"] == "interrupted"
    proc = _spawn(args)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    states = [r["state"] for r in read_trials(tmp_path / "t")]
    assert states.count("COMPLETE") == 2 and "WAITING" not in states and "RUNNING" not in states


@pytest.mark.slow
def test_workers_share_one_study_and_run_exactly_the_trials(tmp_path: Path, fake_mnist_root: Path) -> None:
    proc = _spawn(argv(fake_mnist_root, tmp_path, "--workers", "2", trials=6))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "2 workers, 1 threads each" in err or "2 workers" in err
    rows = read_trials(tmp_path / "t")
    assert [int(r["trial"]) for r in rows] == list(range(6)) and {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    assert len({r["run_folder"] for r in rows}) == 6
    pids = {t.user_attrs["pid"] for t in study_of(tmp_path / "t").trials}
    assert len(pids) == 2  # both workers took trials
    assert "best trial" in out


# ----------------------------------------------------------------------------- the storage's bookkeeping

def test_a_lock_left_by_a_dead_process_is_broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mnistlab.tune import study as st

    storage = st.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], st.LOCK_PREFIX + "x")  # held, never freed
    monkeypatch.setattr(st, "LOCK_STALE_SECONDS", 0.5)
    start = time.time()
    with st.study_lock(storage, "x"):
        assert time.time() - start >= 0.5
        with pytest.raises(optuna.exceptions.DuplicatedStudyError):  # while held, nobody else gets it
            storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], st.LOCK_PREFIX + "x")
    assert [s.study_name for s in storage.get_all_studies()] == []  # freed


def test_a_trial_without_heartbeat_elsewhere_is_lost_and_retried_once(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from mnistlab.tune import study as st

    monkeypatch.setattr(st, "GRACE_SECONDS", 1)
    storage = st.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, study_name="h")
    st.top_up(study, 1)
    trial = st.take_ticket(storage, study)
    trial.suggest_float("lr", 0.1, 1.0)
    trial_id = storage.get_trial_id_from_study_id_trial_number(st.study_id(storage, study), trial.number)
    storage.set_trial_user_attr(trial_id, "host", "another-machine")  # not ours: only its heartbeat tells
    st.fail_lost(storage, study)
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING  # its heartbeat is fresh
    time.sleep(2.5)
    st.fail_lost(storage, study)
    first, retry = study.trials
    assert first.state == optuna.trial.TrialState.FAIL and not st.counts(first)
    assert retry.state == optuna.trial.TrialState.WAITING and retry.params == first.params
    assert st.top_up(study, 1) == 0  # the retry is the study's one trial
    # The retry lost in turn is not queued a third time: the next start tops the study up instead.
    again = st.take_ticket(storage, study)
    st.mark_lost(storage, study, again, "lost: test")
    assert len(study.trials) == 2 and st.top_up(study, 1) == 1

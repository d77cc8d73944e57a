"""Several `mnistlab tune` processes on one study in a real PostgreSQL server (the Debian package), as on
several machines: together they run exactly --trials trials, each number once, none lost, even when one
of them is killed in the middle of a trial.

The server is started by the test: initdb into a temporary folder, a free port on 127.0.0.1, stopped at
the end (as the `postgres` user when the tests run as root, since initdb refuses root).
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg")

SRC = str(Path(__file__).parents[1] / "src")
pytestmark = pytest.mark.slow


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run installs it)")
    folder = Path(tempfile.mkdtemp(prefix="mnistlab-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, cwd=folder, timeout=120)

    pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "tester", "-E", "UTF8")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60", "-o",
       f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        yield f"postgresql://tester@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, cwd=folder, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def _tune(url: str, study: str, root: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "mnistlab", "tune", "--model", "logistic", "--trials", "6",
           "--param", "lr=log:1e-3:1", "--param", "batch_size=int:16:64", "--study", study, "--storage", url,
           "--data-dir", str(root), "--out", str(out), "--threads", "1", *extra]
    return subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _check_complete(trials: list[optuna.trial.FrozenTrial], plots: bool) -> None:
    """Exactly 6 trials counted, numbered once each, every one with a complete run folder."""
    done = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(done) == 6
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if not t.state.is_finished()]  # nothing left running or queued
    for t in done:
        run = Path(t.user_attrs["run_folder"])
        assert run.name == f"trial-{t.number:04d}"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["trial"]["number"] == t.number
        assert summary["trial"]["state"] == t.state.name and summary["trial"]["params"] == t.params
        for name in ("config.yaml", "metrics.csv", "environment.json", "checkpoints/last.pt", "checkpoints/best.pt",
                     *(["report.md", "plots/curves.png"] if plots else [])):
            assert (run / name).is_file(), f"{run}/{name}"


def test_two_processes_share_one_study(postgres_url: str, tmp_path: Path, fake_mnist_root: Path) -> None:
    procs = [_tune(postgres_url, "shared", fake_mnist_root, tmp_path, "--epochs", "2") for _ in range(2)]
    results = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
        assert "best trial" in out
    study = optuna.load_study(study_name="shared", storage=postgres_url.replace("postgresql://",
                                                                               "postgresql+psycopg://"))
    _check_complete(study.trials, plots=True)
    assert len(study.trials) == 6  # not one trial more: no overshoot
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2  # both processes worked
    rows = (tmp_path / "shared" / "trials.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("trial,state,value,")
    best = json.loads((tmp_path / "shared" / "best.json").read_text())
    assert best["value"] == study.best_value and best["trial"] == study.best_trial.number


def test_a_process_killed_mid_trial_loses_nothing(postgres_url: str, tmp_path: Path, fake_mnist_root: Path) -> None:
    storage = postgres_url.replace("postgresql://", "postgresql+psycopg://")
    survivor = _tune(postgres_url, "killed", fake_mnist_root, tmp_path, "--epochs", "30", "--no-plots")
    victim = _tune(postgres_url, "killed", fake_mnist_root, tmp_path, "--epochs", "30", "--no-plots")
    deadline = time.time() + 300
    while True:  # wait until the victim is training a trial
        assert time.time() < deadline and victim.poll() is None and survivor.poll() is None
        try:
            study = optuna.load_study(study_name="killed", storage=storage)
            running = [t for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
                       if t.user_attrs.get("pid") == victim.pid and "run_folder" in t.user_attrs]
        except KeyError:
            running = []
        if running:
            break
        time.sleep(0.2)
    victim.kill()
    victim.communicate()
    out, err = survivor.communicate(timeout=900)
    assert survivor.returncode == 0, err
    trials = optuna.load_study(study_name="killed", storage=storage).trials
    lost = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert [t.number for t in lost] == [running[0].number]
    assert lost[0].user_attrs["lost"] == f"lost: the process running trial {lost[0].number} died"
    retry = [t for t in trials if t.system_attrs.get("retry_of") == lost[0].number]
    assert len(retry) == 1 and retry[0].params == lost[0].params and retry[0].user_attrs["pid"] == survivor.pid
    _check_complete(trials, plots=False)

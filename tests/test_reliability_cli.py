"""Reliability: random command-line input to `mnistlab train` never produces a traceback.

Every outcome must be a usage error (exit 2), a clear mnistlab error (exit 1, one
`mnistlab: error:` line, e.g. a diverged loss or a missing folder) or a working run (exit 0).
Runs in-process on the tiny fake MNIST with a tiny number of epochs. See docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_fake_mnist
from mnistlab.cli import main

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

# Numbers as a user might type them: ints, floats, extremes, and words argparse must reject.
NUMBER_TEXT = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=64).map(repr),
    st.sampled_from(["0", "-0", "1e400", "-1e400", "nan", "inf", "1e-320", "0x10", "1_000", "", " ", "1,5", "one"]),
)
NAME_TEXT = st.one_of(
    st.text(min_size=0, max_size=20),
    st.sampled_from(["", "..", "../x", "/tmp/x", "sgd ", "SGD", "cuda", "cuda:0", "cpu", "folder:", "csv:",
                     "folder:/nonexistent", "csv:/dev/null", "folder:/tmp/a\x00b", "csv:a\x00b", "mnist\x00", "fashion_mnist", "-h"]),
)
NUMERIC_FLAGS = ["--epochs", "--batch-size", "--lr", "--momentum", "--weight-decay", "--label-smoothing",
                 "--valid-fraction", "--patience", "--seed", "--clip-grad", "--pct-start", "--gamma", "--step-size",
                 "--threads", "--eval-batch-size"]
NAME_FLAGS = ["--model", "--optimizer", "--scheduler", "--init", "--device", "--name", "--dataset"]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("fuzz")
    write_fake_mnist(base / "data" / "mnist", n_train=200, n_test=50)
    return base / "data", base / "runs"


def invoke(argv: list[str]) -> tuple[int, str]:
    """Run `mnistlab ARGV` in-process; (exit code, stderr). Restores torch's thread count."""
    threads = torch.get_num_threads()
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        torch.set_num_threads(threads)
    return code, err.getvalue()


def check(code: int, err: str) -> None:
    assert "Traceback" not in err and "internal error" not in err, err
    assert code in (0, 1, 2), (code, err)
    if code == 1:
        assert err.count("mnistlab: error:") == 1, err
    if code == 2:
        assert "error:" in err, err


def base_args(env: tuple[Path, Path]) -> list[str]:
    root, out = env
    return ["train", "--model", "logistic", "--data-dir", str(root), "--out", str(out), "-q", "--no-plots",
            "--eval-batch-size", "512"]


def tame(flag: str, value: str) -> bool:
    """False for values that are valid but would make a run slow (huge epochs/threads, tiny batches)."""
    try:
        number = float(value)
    except ValueError:
        return True
    if flag == "--epochs":
        return not (0.3 < number <= 100_000)
    if flag == "--threads":
        return not (4 < number <= 1024)
    if flag in ("--batch-size", "--eval-batch-size"):
        return not (0 < number < 8)
    return True


@SETTINGS
@given(flag=st.sampled_from(NUMERIC_FLAGS), value=NUMBER_TEXT)
def test_any_value_for_one_numeric_flag(env, flag, value):
    if not tame(flag, value):
        value = {"--epochs": "0.2", "--threads": "2", "--batch-size": "8", "--eval-batch-size": "8"}[flag]
    argv = base_args(env) + ([] if flag == "--epochs" else ["--epochs", "0.1"]) + [flag, value]
    if flag in ("--gamma", "--step-size"):
        argv += ["--scheduler", "step"]
    if flag == "--pct-start":
        argv += ["--scheduler", "onecycle"]
    check(*invoke(argv))


@SETTINGS
@given(values=st.fixed_dictionaries({}, optional={f: NUMBER_TEXT for f in NUMERIC_FLAGS}))
def test_random_combinations_of_numeric_flags(env, values):
    argv = base_args(env) + ["--epochs", "0.1"]
    for flag, value in values.items():
        argv += [flag, value if tame(flag, value) else "2" if flag == "--threads" else "8" if "batch" in flag
                 else "0.1"]
    check(*invoke(argv))


@SETTINGS
@given(flag=st.sampled_from(NAME_FLAGS), value=NAME_TEXT)
def test_any_string_for_a_name_flag(env, flag, value):
    argv = base_args(env) + ["--epochs", "0.1", f"{flag}={value}"]
    check(*invoke(argv))


@SETTINGS
@given(key=st.one_of(st.sampled_from(["hidden_size", "activation"]), st.text(max_size=12)), value=NAME_TEXT)
def test_any_set_option(env, key, value):
    if key == "hidden_size":
        try:
            if abs(int(value)) > 256:
                value = "16"
        except ValueError:
            pass
    argv = base_args(env) + ["--epochs", "0.1", "--model", "mlp", "--set", f"{key}={value}"]
    check(*invoke(argv))


@pytest.mark.parametrize("flag", ["--data-dir", "--out", "--resume", "--name", "--dataset", "--config"])
@pytest.mark.parametrize("value", ["a\x00b", "", "/nonexistent/dir", "/dev/null"])
def test_path_flags_with_odd_values(env, flag, value):
    if flag == "--out" and value == "":
        value = str(env[1])  # an empty --out is the current folder: fine, but not in the repository
    argv = base_args(env) + ["--epochs", "0.1", flag, value]
    check(*invoke(argv))


@pytest.mark.parametrize(
    "line, field",
    [("betas: 0.9", "betas"), ("set: [x]", "set"), ("model: [dnn]", "model"), ("model_options: 3", "model_options"),
     ("name: 5", "name")],
)
def test_malformed_config_value_is_one_usage_error(env, tmp_path, line, field):
    """Through `python -m mnistlab`: exit 2, one stderr line naming the field and the file, no run folder."""
    import os
    import subprocess
    import sys

    config = tmp_path / "bad.yaml"
    config.write_text(line + "\n")
    out = tmp_path / "runs"
    argv = ["train", "--config", str(config), "--data-dir", str(env[0]), "--out", str(out), "--epochs", "0.1", "-q"]
    proc = subprocess.run([sys.executable, "-m", "mnistlab", *argv], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "internal error" not in lines[0] and f"bad {field} " in lines[0] and str(config) in lines[0], lines[0]
    assert not out.exists()

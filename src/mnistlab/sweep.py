"""Grid sweeps: the cartesian product of `--grid key=v1,v2` as separate runs in one sweep folder.

    runs/<sweep>/
        <run>/             one run folder per grid point, named from its values (lr=0.1,batch_size=32)
        <run>.yaml         the settings that run was started with (`mnistlab train --config` reruns it)
        <run>.log          the output of a run that failed
        comparison.md, comparison.csv, test_accuracy.png

Each run is a `python -m mnistlab train --config <run>.yaml --out runs/<sweep> --name <run> --quiet`
subprocess, N at a time, each with its share of the CPU threads. Running the same sweep
command again, in the same folder, skips the runs that completed, resumes the interrupted ones
from their last checkpoint (`train --resume`) and starts the others. A run folder is matched on
its resolved config: a rerun whose settings differ from those a run was trained with is refused,
naming the changes, before anything starts. A lock file (`.sweep.lock`, held by the sweep and its
training processes) keeps a second sweep out of a folder in use.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mnistlab.errors import MnistlabError, UsageError

# Settings that describe where and how a run is written, not what it trains: the sweep owns them.
_NOT_GRIDDABLE = {"out", "name", "resume", "progress", "model_options"}
# Settings a finished run may differ in and still be this sweep's result: where and how it is
# written (MLflow tracking included), and the threads the sweep shares out among its workers.
_OUTPUT_ONLY = {"out", "name", "resume", "progress", "plots", "tensorboard", "threads", "mlflow", "mlflow_checkpoints"}
LOCK_FILE = ".sweep.lock"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,-]")


@dataclass
class SweepRun:
    """One grid point: its run name, the grid values and the (unresolved) config dict it runs."""

    name: str
    values: dict[str, str]
    config: dict[str, Any]
    resolved: dict[str, Any] = field(default_factory=dict)  # what the run trains with: config, resolved
    status: str = "pending"  # pending, skipped, completed, failed
    resume: bool = False  # an interrupted attempt is continued from its last checkpoint
    seconds: float = 0.0
    message: str = ""


@dataclass
class SweepResult:
    """What a sweep did: its folder, the runs in grid order and the comparison rows."""

    path: Path
    runs: list[SweepRun]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[SweepRun]:
        return [r for r in self.runs if r.status == "failed"]


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """`["lr=0.1,0.5", "batch_size=32,64"]` -> `[("lr", ["0.1", "0.5"]), ("batch_size", ["32", "64"])]`.

    Values are split on commas; a value list containing `;` is split on `;` instead, so values
    that hold commas themselves stay whole: `hidden_dims=784,128;784,256`. Dashes in keys
    become underscores, as in flags.
    """
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not raw.strip():
            raise UsageError(f"--grid expects key=v1,v2,..., got {item!r}")
        values = [v.strip() for v in raw.split(";" if ";" in raw else ",")]
        if any(v == "" for v in values):
            raise UsageError(f"--grid {item!r} has an empty value")
        if len(set(values)) != len(values):
            raise UsageError(f"--grid {item!r} repeats a value")
        if key in _NOT_GRIDDABLE:
            raise UsageError(f"--grid {key}: the sweep sets {key} itself; it cannot be a grid key")
        if any(key == k for k, _ in grid):
            raise UsageError(f"--grid {key} is given twice; put all its values in one --grid")
        grid.append((key, values))
    if not grid:
        raise UsageError("sweep needs at least one --grid key=v1,v2,...")
    return grid


def run_name(values: dict[str, str]) -> str:
    """The run folder name of a grid point: `init=kaiming,batchnorm=false` (unsafe characters -> _)."""
    name = ",".join(f"{k}={v}" for k, v in values.items())
    name = _UNSAFE.sub("_", name).replace("..", "_")
    return name[:120] if name[0].isalnum() else "r" + name[:119]


def plan_sweep(base: dict[str, Any], grid: list[tuple[str, list[str]]]) -> list[SweepRun]:
    """Every combination of the grid as a SweepRun, each config resolved and validated now.

    Grid keys that are TrainConfig fields set that field; any other key is a model option
    (like `--set`). Raises UsageError on the first bad combination, before anything runs.
    """
    from mnistlab.config import TrainConfig, coerce_value, field_names, resolve_config
    from mnistlab.runs import check_run_name

    fields = set(field_names())
    keys = [k for k, _ in grid]
    runs: list[SweepRun] = []
    names: set[str] = set()
    for combo in itertools.product(*(values for _, values in grid)):
        values = dict(zip(keys, combo))
        config = {**base, "model_options": dict(base.get("model_options") or {})}
        for key, value in values.items():
            if key in fields:
                # Typed by the field's declared type, as a config file's values are (1e-3 -> 0.001).
                config[key] = coerce_value(key, value, f"--grid {key}")
            else:
                config["model_options"][key] = value  # typed by the model's signature in resolve_config
        name = check_run_name(run_name(values))
        if name in names:
            raise UsageError(f"two grid points share the run name {name!r}; make the values distinct")
        names.add(name)
        where = f"grid point {name}"
        try:
            cfg = TrainConfig.from_dict(config, where)
            resolved = resolve_config(cfg, load_code=True).to_dict()  # a model file: named by the sweep's command
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
        except TypeError as exc:
            raise UsageError(f"{where}: {exc}") from None
        runs.append(SweepRun(name=name, values=values, config=cfg.to_dict(), resolved=resolved))
    return runs


def default_workers() -> int:
    """What the cores allow: half of them (each worker gets at least 2 threads where there are 2+)."""
    return max(1, (os.cpu_count() or 2) // 2)


def worker_threads(workers: int, jobs: int) -> int:
    """Torch threads per worker when `workers` processes share the cores for `jobs` runs."""
    return max(1, (os.cpu_count() or 1) // max(1, min(workers, jobs)))


def _is_completed(folder: Path) -> bool:
    import json

    try:
        return json.loads((folder / "summary.json").read_text(encoding="utf-8")).get("status") == "completed"
    except (OSError, ValueError):
        return False


def config_changes(run_dir: Path, resolved: dict[str, Any]) -> list[str]:
    """How the settings `resolved` differ from those the run in `run_dir` was trained with.

    Both sides are resolved configs (recipes and defaults filled in), so `--lr 0.1` and a recipe's
    lr 0.1 match; the output-only settings (out, name, progress, plots, threads, ...) are left
    out. Returns `["epochs 1 -> 2", "hidden_dims 784,128 -> 784,256", ...]`; [] when they match.
    """
    from mnistlab.compare import short_value
    from mnistlab.config import TrainConfig, as_recorded, load_config_file, resolve_config
    from mnistlab.models.usercode import is_file_model

    source = run_dir / "config.yaml"
    try:
        cfg = TrainConfig.from_dict(as_recorded(load_config_file(source)), str(source))
        if is_file_model(cfg.model) and cfg.model != resolved["model"]:
            return [f"model {cfg.model} -> {resolved['model']}"]  # another file: never imported from a run folder
        saved = resolve_config(cfg, load_code=True).to_dict()  # only the file the sweep itself names
        code = _code_change(run_dir, cfg.model)
    except (MnistlabError, TypeError) as exc:
        return [f"its {source} cannot be read as a train config ({exc})"]
    # Model options first (as `--set` names them), then the settings; each side's pair of dicts.
    pairs = [(saved["model_options"], resolved["model_options"], set()), (saved, resolved, {"model_options"})]
    return code + [
        f"{key} {short_value(old.get(key))} -> {short_value(new.get(key))}"
        for old, new, skip in pairs
        for key in dict.fromkeys([*old, *new])
        if key not in _OUTPUT_ONLY | skip and old.get(key) != new.get(key)
    ]


def _code_change(run_dir: Path, model: str) -> list[str]:
    """["model code sha256 A -> B"] when the run's model file was edited since it trained, else []."""
    from mnistlab.models.usercode import is_file_model, parse_spec, sha256_of
    from mnistlab.runs import load_run

    if not is_file_model(model):
        return []
    recorded = (load_run(run_dir).config.get("model_code") or {}).get("sha256")
    now = sha256_of(parse_spec(model)[0])
    return [f"model code sha256 {str(recorded)[:12]} -> {now[:12]}"] if recorded and recorded != now else []


def _triage(folder: Path, runs: list[SweepRun], log: Callable[[str], None]) -> list[SweepRun]:
    """Sort the grid points by what their run folders hold: the runs still to train, in grid order.

    Completed runs are skipped, runs with a last checkpoint resumed, folders without one (killed
    before their first checkpoint) redone. A run trained with other settings than the sweep's now
    stops the sweep before anything changes: its results are not these settings' results, and
    redoing it would throw away a finished or resumable run.
    """
    changed: list[tuple[str, list[str]]] = []
    for r in runs:
        run_dir = folder / r.name
        if (run_dir / "checkpoints" / "last.pt").is_file() or _is_completed(run_dir):
            diff = config_changes(run_dir, r.resolved)
            if diff:
                changed.append((r.name, diff))
    if changed:
        name, diff = changed[0]
        more = f"; and {len(changed) - 1} more run(s)" if len(changed) > 1 else ""
        raise MnistlabError(
            f"sweep folder {folder} holds runs trained with other settings ({name}: {', '.join(diff)}{more}); "
            "nothing was started. Rerun with the settings they were trained with, give this sweep a new --name, "
            "or delete those run folders to train them again"
        )
    pending: list[SweepRun] = []
    for r in runs:
        run_dir = folder / r.name
        if _is_completed(run_dir):
            r.status = "skipped"
            stray = folder / f"{r.name}.log"
            if stray.is_file():  # interrupted just as it finished: tidy its log away as a finished run's
                shutil.move(str(stray), str(run_dir / "train.log"))
            log(f"  skipped {r.name} (already completed)")
            continue
        if (run_dir / "checkpoints" / "last.pt").is_file():
            r.resume = True
            log(f"  resuming {r.name} (interrupted; continues from its last checkpoint)")
        elif run_dir.exists():
            # No checkpoint: killed before its first one, so there is nothing to continue.
            shutil.rmtree(run_dir)
            log(f"  redoing {r.name} (previous attempt stopped before its first checkpoint)")
        pending.append(r)
    return pending


@contextmanager
def sweep_lock(folder: Path) -> Iterator[int | None]:
    """Hold `folder/.sweep.lock` (an flock) for the sweep; its fd is handed to the training processes.

    The lock belongs to the open file, so it lasts while the sweep or any training process it
    started is alive: a sweep killed with its runs still training keeps a second one out too.
    Yields the fd (None where the platform has no fcntl: no lock there).
    """
    from mnistlab.locks import folder_lock

    path = folder / LOCK_FILE
    busy = f"another sweep is working in {folder} (it holds {path}); wait until it finishes, or give this sweep another --name"
    with folder_lock(path, busy) as fd:
        yield fd


def run_sweep(
    base: dict[str, Any],
    grid: list[tuple[str, list[str]]],
    *,
    sweep_name: str | None = None,
    out: str | Path = "runs",
    workers: int | None = None,
    threads: int | None = None,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Train every grid point as its own run under `out/<sweep_name>/`, `workers` at a time.

    Args:
        base: TrainConfig fields common to all runs (unresolved: recipes still apply per run).
        grid: from parse_grid.
        sweep_name: the sweep folder's name (default `<model>-sweep`). An existing folder is
            reused: completed runs are skipped, interrupted ones resumed from their last
            checkpoint, the others (re)started.
        workers: parallel training processes (default: default_workers()).
        threads: torch threads per worker (default: the cores shared out between the workers).
        log: where progress lines go.

    Returns:
        A SweepResult; `failed` lists runs that failed (their logs are `<sweep>/<run>.log`).

    Raises:
        UsageError: a bad grid or setting in any combination (before anything is launched).
        MnistlabError: another sweep works in the folder, or a run there was trained with other
            settings (before anything is launched).
    """
    from mnistlab.models.usercode import short_name
    from mnistlab.runs import check_run_name

    runs = plan_sweep(base, grid)
    model = short_name(str(base.get("model") or "fast"))
    name = check_run_name(sweep_name or f"{model}-sweep")
    workers = max(1, int(workers or default_workers()))
    if workers > 64:
        raise UsageError(f"bad workers {workers}: at most 64")
    if threads is None:
        threads = worker_threads(workers, len(runs))
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)  # reused on purpose: that is what makes a sweep resumable
    log(f"sweep {name}: {len(runs)} runs, {workers} at a time, {threads} threads each -> {folder}")
    with sweep_lock(folder) as lock_fd:
        pending = _triage(folder, runs, log)
        _train_all(folder, pending, workers, threads, lock_fd, log)
        result = SweepResult(folder, runs)
        result.rows = write_comparison(result)
    return result


def _command(folder: Path, r: SweepRun, threads: int) -> list[str]:
    """The `python -m mnistlab train` command of one grid point: a fresh run, or the resumed one."""
    from mnistlab.runs import write_yaml

    from mnistlab.models.usercode import is_file_model

    train = [sys.executable, "-m", "mnistlab", "train"]
    # A model file named on the sweep's command line is named on its runs' too: code runs only so.
    model = str(r.config.get("model", ""))
    code = ["--model", model] if is_file_model(model) else []
    if r.resume:
        # Its own config.yaml holds the settings (checked against the sweep's in _triage).
        return [*train, "--resume", str(folder / r.name), "--quiet", *code]
    cfg_file = folder / f"{r.name}.yaml"
    write_yaml(cfg_file, {k: v for k, v in r.config.items() if k not in ("out", "name", "resume")})
    return [*train, "--config", str(cfg_file), "--out", str(folder), "--name", r.name, "--quiet",
            "--threads", str(threads), *code]


def _train_all(
    folder: Path, pending: list[SweepRun], workers: int, threads: int, lock_fd: int | None,
    log: Callable[[str], None],
) -> None:
    """Run the pending grid points, `workers` at a time, recording each one's status."""
    pending = list(pending)
    running: list[tuple[SweepRun, subprocess.Popen, Any, float]] = []
    total, done = len(pending), 0
    try:
        while pending or running:
            while pending and len(running) < workers:
                r = pending.pop(0)
                cmd = _command(folder, r, threads)
                # A resumed run's log goes on after its interrupted attempt's.
                logf = (folder / f"{r.name}.log").open("a" if r.resume else "w", encoding="utf-8")
                # Child processes print one result line each; their output goes to the log so
                # parallel runs do not interleave on the terminal. They inherit the sweep's lock.
                proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        pass_fds=() if lock_fd is None else (lock_fd,))
                running.append((r, proc, logf, time.perf_counter()))
                log(f"  started {r.name}")
            time.sleep(0.1)
            still: list[tuple[SweepRun, subprocess.Popen, Any, float]] = []
            for r, proc, logf, t0 in running:
                rc = proc.poll()
                if rc is None:
                    still.append((r, proc, logf, t0))
                    continue
                logf.close()
                done += 1
                r.seconds = time.perf_counter() - t0
                _record(folder, r, rc, f"[{done}/{total}]", log)
            running = still
    except KeyboardInterrupt:
        for _, proc, logf, _ in running:
            proc.terminate()
        for _, proc, logf, _ in running:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            logf.close()
        raise KeyboardInterrupt(
            f"sweep interrupted; rerun the same command to finish it (completed runs are kept and "
            f"interrupted ones resume from their last checkpoint, in {folder})"
        ) from None


def _record(folder: Path, r: SweepRun, rc: int, progress: str, log: Callable[[str], None]) -> None:
    """A finished training process: completed (its log moves into the run folder) or failed."""
    log_path = folder / f"{r.name}.log"
    if rc == 0 and _is_completed(folder / r.name):
        r.status = "completed"
        # The run folder holds everything; its log is kept with it, not beside it.
        shutil.move(str(log_path), str(folder / r.name / "train.log"))
        log(f"  {progress} completed {r.name} in {r.seconds:.0f} s")
    else:
        r.status = "failed"
        r.message = _last_line(log_path)
        log(f"  {progress} FAILED {r.name} (exit {rc}): {r.message} (log: {log_path})")


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"


def write_comparison(result: SweepResult) -> list[dict[str, Any]]:
    """comparison.md, comparison.csv and the test_accuracy.png bar chart of a sweep, in grid order."""
    from mnistlab.compare import format_rows, key_options, missing_row, run_row
    from mnistlab.runs import _atomic_text

    rows: list[dict[str, Any]] = []
    for r in result.runs:
        run_dir = result.path / r.name
        if (run_dir / "config.yaml").is_file():
            row = run_row(run_dir)
            if r.status == "failed":
                row["status"] = "failed"
        else:
            # Failed before its folder existed (e.g. the data could not be read).
            row = missing_row(r.name, "failed", r.config.get("model"), _safe_options(key_options, r.config))
        rows.append(row)
    _atomic_text(result.path / "comparison.csv", format_rows(rows, "csv"))
    grid_keys = ", ".join(dict.fromkeys(k for r in result.runs for k in r.values))
    md = [f"# Sweep {result.path.name}", "", f"Grid over: {grid_keys}. {len(rows)} runs.", "",
          format_rows(rows, "markdown")]
    if any(row.get("test_accuracy") is not None for row in rows):
        md += ["![test accuracy per run](test_accuracy.png)", ""]
    failed = [r for r in result.runs if r.status == "failed"]
    if failed:
        md += ["Failed runs (see their logs in this folder):", ""]
        md += [f"- {r.name}: {r.message or 'failed'} (`{r.name}.log`)" for r in failed]
        md.append("")
    _atomic_text(result.path / "comparison.md", "\n".join(md))
    try:
        from mnistlab.plots import plot_bars

        names = [row["name"] for row in rows]
        values = [row.get("test_accuracy") for row in rows]
        plot_bars(names, values, result.path / "test_accuracy.png", title=f"{result.path.name}: test accuracy",
                  ylabel="test accuracy")
    except Exception as exc:  # noqa: BLE001 - a chart must never hide the sweep's results
        print(f"warning: could not draw {result.path / 'test_accuracy.png'}: {exc}", file=sys.stderr)
    return rows


def _safe_options(fn: Callable[[dict[str, Any]], str], config: dict[str, Any]) -> str:
    try:
        return fn(config)
    except Exception:  # noqa: BLE001
        return ""


def base_config_from_args(args: Any) -> dict[str, Any]:
    """The sweep's common settings from its train flags, as an unresolved TrainConfig dict."""
    from mnistlab.cli.common import config_from_args

    cfg = config_from_args(args)
    return dataclasses.asdict(cfg) | {"model_options": dict(cfg.model_options)}

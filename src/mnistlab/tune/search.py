"""`mnistlab tune`: a study's settings, its creation (or the check that a rerun matches it), the trial loop
of one process, and `--workers K` processes on one machine.

Every process runs the same loop: under the study lock, mark lost trials and take a ticket; train it;
rewrite trials.csv and best.json. `--workers K` starts K such processes (`mnistlab tune --worker
SETTINGS`) with the cores shared out as `mnistlab sweep` shares them; other machines run the same
command with the same --storage.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mnistlab.errors import MnistlabError, UsageError
from mnistlab.signals import sigterm_as_interrupt
from mnistlab.tune import records
from mnistlab.tune import study as st
from mnistlab.tune.space import NOT_TUNABLE, ParamSpec, check_space, parse_param

METRICS = ("valid_loss", "valid_accuracy", "train_loss", "train_accuracy")
SAMPLERS = ("tpe", "random", "qmc", "gp")
PRUNERS = ("median", "hyperband", "asha", "none")
POLL_SECONDS = 2.0  # how often an idle process looks for retries of trials lost elsewhere
META_KEY = "mnistlab"
MLFLOW_KEY = "mlflow_parent_runs"


@dataclass
class TuneSettings:
    """Everything a tune process needs (JSON-able: `--workers` hands it to its processes)."""

    study: str
    storage: str  # an Optuna RDB URL
    out: str  # runs root: the study folder is out/<study>/
    trials: int
    params: list[str]  # the --param specs as given
    base: dict[str, Any]  # the fixed train settings (an unresolved TrainConfig dict)
    metric: str = "valid_loss"
    direction: str = "minimize"
    sampler: str = "tpe"
    sampler_seed: int | None = None
    pruner: str = "median"
    workers: int = 1
    threads: int | None = None
    progress: str = "bar"
    mlflow: str | None = None
    mlflow_checkpoints: bool = False
    specs: list[ParamSpec] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.specs = [parse_param(p) for p in self.params]

    @property
    def folder(self) -> Path:
        return Path(self.out) / self.study

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if k != "specs"})

    @classmethod
    def from_json(cls, text: str) -> TuneSettings:
        return cls(**json.loads(text))


def default_direction(metric: str) -> str:
    return "minimize" if metric.endswith("loss") else "maximize"


def make_sampler(name: str, seed: int | None) -> Any:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":  # constant_liar: parallel processes do not all try the same next point
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, scramble=True)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
    raise UsageError(f"bad --sampler {name!r}: choose one of {', '.join(SAMPLERS)}")


def make_pruner(name: str) -> Any:
    import optuna

    pruners = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
               "asha": optuna.pruners.SuccessiveHalvingPruner, "none": optuna.pruners.NopPruner}
    if name not in pruners:
        raise UsageError(f"bad --pruner {name!r}: choose one of {', '.join(PRUNERS)}")
    return pruners[name]()


def check_settings(s: TuneSettings) -> None:
    """Every usage error of a search, before the storage is touched or any trial runs."""
    from mnistlab.config import TrainConfig, resolve_config

    st.require_optuna()
    if s.metric not in METRICS:
        raise UsageError(f"bad --metric {s.metric!r}: choose one of {', '.join(METRICS)}")
    if isinstance(s.trials, bool) or not isinstance(s.trials, int) or s.trials < 1:
        raise UsageError(f"bad --trials {s.trials!r}: expected a whole number >= 1")
    if not 1 <= s.workers <= 64:
        raise UsageError(f"bad --workers {s.workers}: expected a whole number from 1 to 64")
    if not s.specs:
        raise UsageError("tune needs at least one --param NAME=KIND:ARGS, e.g. --param lr=log:1e-4:1e-1")
    check_space(s.base, s.specs)
    resolved = resolve_config(TrainConfig.from_dict(s.base, "the command line"))
    tuned = {p.key for p in s.specs}
    if s.metric.startswith("valid") and not resolved.valid_fraction and "valid_fraction" not in tuned:
        raise UsageError(f"--metric {s.metric} needs a validation split: --valid-fraction is 0")
    make_sampler(s.sampler, s.sampler_seed)
    make_pruner(s.pruner)


def study_meta(s: TuneSettings) -> dict[str, Any]:
    """What a rerun must match: the metric, direction, search space and fixed settings (resolved; the
    output and hardware settings, and the tuned ones, left out)."""
    from mnistlab.config import TrainConfig, resolve_config

    resolved = resolve_config(TrainConfig.from_dict(s.base, "the command line")).to_dict()
    fields = {p.key for p in s.specs if not p.name.startswith("set.")}
    options = {p.key for p in s.specs if p.name.startswith("set.")}
    config = {k: v for k, v in resolved.items() if k not in NOT_TUNABLE | fields}
    config["set"] = {k: v for k, v in resolved["model_options"].items() if k not in options}
    return {"metric": s.metric, "direction": s.direction, "params": sorted(p.canonical() for p in s.specs),
            "config": config}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = [f"{k} {old.get(k)} -> {new.get(k)}" for k in ("metric", "direction") if old.get(k) != new.get(k)]
    if old.get("params") != new.get("params"):
        out.append("the --param search space")
    before, now = old.get("config", {}), new.get("config", {})
    pairs = [(before.get("set", {}), now.get("set", {}), set()), (before, now, {"set"})]
    out += [f"{k} {a.get(k)} -> {b.get(k)}" for a, b, skip in pairs for k in dict.fromkeys([*a, *b])
            if k not in skip and a.get(k) != b.get(k)]
    return out


def open_study(s: TuneSettings, storage: Any) -> Any:
    """Create the study, or load it and refuse a rerun whose settings differ from those it started with."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=s.study, direction=s.direction, load_if_exists=True,
                                sampler=make_sampler(s.sampler, s.sampler_seed), pruner=make_pruner(s.pruner))
    meta, saved = study_meta(s), study.user_attrs.get(META_KEY)
    if saved is None:
        study.set_user_attr(META_KEY, meta)
    elif json.loads(json.dumps(saved)) != json.loads(json.dumps(meta)):
        changes = _differences(saved, meta)
        raise MnistlabError(
            f"study {s.study} in {st.shown_url(s.storage)} was started with other settings "
            f"({', '.join(changes) or 'its settings'}); nothing was run. Rerun with the settings it was "
            "started with, or give this search a new --study name")
    return study


def load_study(s: TuneSettings, storage: Any) -> Any:
    """The existing study, with this process's sampler and pruner."""
    import optuna

    try:
        return optuna.load_study(study_name=s.study, storage=storage,
                                 sampler=make_sampler(s.sampler, s.sampler_seed), pruner=make_pruner(s.pruner))
    except KeyError:
        raise MnistlabError(f"there is no study {s.study!r} in {st.shown_url(s.storage)}") from None


def _parent_run(s: TuneSettings, study: Any, tracking: Any) -> str | None:
    """The study's MLflow run (trials nest under it), created once per tracking URI. Under the lock."""
    from mnistlab.tracking import base_tags

    known = dict(study.user_attrs.get(MLFLOW_KEY) or {})
    run_id = known.get(tracking.uri)
    if run_id and tracking.reopen(run_id) is not None:
        return str(run_id)
    tags = {**base_tags(str(s.base.get("model") or "fast"), str(s.base.get("dataset") or "mnist")),
            "kind": "study", "study": s.study, "storage": st.shown_url(s.storage)}
    run_id = tracking.start_run(s.study, tags)
    if run_id:
        params = {"metric": s.metric, "direction": s.direction, "trials": str(s.trials), "sampler": s.sampler,
                  "pruner": s.pruner, **{f"param.{p.name}": p.text.partition("=")[2] for p in s.specs}}
        tracking.log_params(run_id, params)
        study.set_user_attr(MLFLOW_KEY, {**known, tracking.uri: run_id})
    return run_id


def _tracking(s: TuneSettings, log: Callable[[str], None]) -> Any:
    if not s.mlflow:
        return None
    from mnistlab.tracking import Tracking

    return Tracking(s.mlflow, lambda message: log(f"warning: {message}"))


def _context(s: TuneSettings, storage: Any, study: Any, tracking: Any) -> Any:
    from mnistlab.tune.trial import TrialContext

    parent = (study.user_attrs.get(MLFLOW_KEY) or {}).get(tracking.uri) if tracking else None
    base = {k: v for k, v in s.base.items() if k not in ("out", "name", "resume", "progress")}
    return TrialContext(s.study, s.folder, storage, study, s.specs, base, s.metric, s.threads, tracking,
                        s.mlflow_checkpoints, parent)


def _trial_line(o: Any, metric: str) -> str:
    params = ", ".join(f"{k}={records._cell(v)}" for k, v in o.params.items())
    value = f"{metric} {o.value:.6g}" if o.value is not None else o.stop_reason
    pruned = f" ({o.stop_reason})" if o.state == "PRUNED" else ""
    return (f"  trial {o.number} {o.state}{pruned}: {value}  [{params}]  {o.epochs} epochs, {o.seconds:.0f} s"
            f" -> {o.run_folder or '(no run folder)'}")


def search(s: TuneSettings, log: Callable[[str], None], emit: Callable[[dict[str, Any]], None]) -> int:
    """This process's trials: take tickets until none is left and no trial runs elsewhere; returns how many it ran."""
    from optuna.trial import TrialState

    from mnistlab.tune.trial import run_trial

    storage = st.open_storage(s.storage)
    study = load_study(s, storage)
    tracking = _tracking(s, log)
    ctx = _context(s, storage, study, tracking)
    ran = 0
    while True:
        with st.study_lock(storage, s.study):
            st.fail_lost(storage, study)
            trial = st.take_ticket(storage, study)
        if trial is None:
            if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                time.sleep(POLL_SECONDS)  # another process may still lose its trial: stay to run the retry
                continue
            return ran
        outcome = run_trial(ctx, trial)
        ran += 1
        best = records.write_records(study, s.folder, s.metric)
        log(_trial_line(outcome, s.metric))
        emit({"event": "trial", **{k: v for k, v in dataclasses.asdict(outcome).items() if k != "attrs"}})
        if tracking and ctx.parent_run_id and best:
            tracking.log_metrics(ctx.parent_run_id, {f"best_{s.metric}": float(best["value"])}, step=outcome.number)


def run_workers(s: TuneSettings, threads: int) -> list[int]:
    """`s.workers` tune processes on this machine; their exit codes. Ctrl-C reaches each of them once."""
    procs = []
    for i in range(s.workers):
        seed = None if s.sampler_seed is None else s.sampler_seed + i
        child = dataclasses.replace(s, workers=1, threads=threads, sampler_seed=seed)
        # The settings go through stdin, not argv: `ps` would show the storage URL's password.
        # Their own session: a Ctrl-C at the terminal reaches only this process, which passes it on once.
        proc = subprocess.Popen([sys.executable, "-m", "mnistlab", "tune", "--worker"], stdin=subprocess.PIPE,
                                text=True, start_new_session=True)
        assert proc.stdin is not None
        proc.stdin.write(child.to_json())
        proc.stdin.close()
        procs.append(proc)
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(0.2)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        raise
    return [p.returncode for p in procs]


def start(s: TuneSettings, log: Callable[[str], None]) -> tuple[Any, Any, Any, str | None]:
    """Open (or create and check) the study and top it up to `--trials`: (storage, study, tracking, parent run)."""
    check_settings(s)
    s.folder.mkdir(parents=True, exist_ok=True)
    storage = st.open_storage(s.storage)
    tracking = _tracking(s, log)
    with st.study_lock(storage, s.study):
        study = open_study(s, storage)
        st.fail_lost(storage, study)
        added = st.top_up(study, s.trials)
        parent = _parent_run(s, study, tracking) if tracking else None
    done = sum(t.state.is_finished() and st.counts(t) for t in study.get_trials(deepcopy=False))
    log(f"study {s.study}: {done} of {s.trials} trials done, {added} queued now -> {s.folder} "
        f"(storage {st.shown_url(s.storage)})")
    return storage, study, tracking, parent


def end_parent(study: Any, tracking: Any, parent: str | None, status: str) -> None:
    """End the study's MLflow run (FINISHED, KILLED or FAILED) unless trials still run or wait elsewhere:
    then the last process to stop ends it."""
    from optuna.trial import TrialState

    if not tracking or not parent:
        return
    left = (TrialState.RUNNING,) if status != "FINISHED" else (TrialState.RUNNING, TrialState.WAITING)
    if not study.get_trials(deepcopy=False, states=left):
        tracking.end(parent, status)


def run_tune(s: TuneSettings, log: Callable[[str], None], emit: Callable[[dict[str, Any]], None]) -> dict | None:
    """The whole command: start, run the trials (here or in `--workers` processes), write the records.

    Returns best.json's record (None when no trial completed). Raises KeyboardInterrupt (Ctrl-C,
    Terminated for SIGTERM) after recording the interrupted trials as lost (they run again on a rerun).
    """
    from mnistlab.sweep import worker_threads

    storage, study, tracking, parent = start(s, log)
    threads = s.threads or worker_threads(s.workers, s.trials)
    if s.workers > 1:
        log(f"  {s.workers} workers, {threads} threads each")
    status, codes = "FAILED", [0]
    try:
        with sigterm_as_interrupt():  # SIGTERM (e.g. from `timeout`) stops the search as Ctrl-C does
            if s.workers > 1:
                codes = run_workers(s, threads)
            else:
                search(dataclasses.replace(s, threads=threads), log, emit)
        status = "FINISHED" if not any(codes) else "FAILED"
    except KeyboardInterrupt as exc:
        status = "KILLED"
        done = sum(t.state.is_finished() and st.counts(t) for t in study.get_trials(deepcopy=False))
        raise type(exc)(f"tune interrupted; {done} of {s.trials} trials done. Rerun the same command to "
                        f"continue the study (the interrupted trials run again)") from None
    finally:
        best = records.write_records(study, s.folder, s.metric)
        end_parent(study, tracking, parent, status)
    failed = [c for c in codes if c != 0]
    if failed:
        raise MnistlabError(f"{len(failed)} of {s.workers} tune workers failed (exit {failed[0]}); "
                            "see their messages above. Rerun the same command to continue the study")
    return best


def show(s: TuneSettings, plot: str | None, *, table: bool = True) -> dict[str, Any] | None:
    """`--show`: print the study's trials table (from its storage) and return its best record; `plot`: FILE.png."""
    st.require_optuna()
    path = s.storage[len("sqlite:///"):] if s.storage.startswith("sqlite:///") else None
    if path and not Path(path).is_file():
        raise MnistlabError(f"there is no study {s.study!r}: {path} does not exist (give its --storage URL)")
    storage = st.open_storage(s.storage)
    study = load_study(s, storage)
    metric = (study.user_attrs.get(META_KEY) or {}).get("metric", s.metric)
    if table:
        sys.stdout.write(records.to_table(records.trial_rows(study)))
    if plot:
        print(f"wrote {records.plot_study(study, plot)}", file=sys.stderr)
    return records.best_record(study, metric)

"""One trial of a study: a normal run folder trained with the trial's parameters, reporting its metric to
Optuna after every epoch (and stopped there when the pruner says so), then told to the study."""

from __future__ import annotations

import contextlib
import io
import json
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from mnistlab.errors import TrainingDiverged, UsageError
from mnistlab.training.callbacks import Callback
from mnistlab.training.state import FitState
from mnistlab.tune import study as st
from mnistlab.tune.space import ParamSpec, trial_config


@dataclass
class TrialContext:
    """What every trial of one process shares: the study, its search space and fixed settings, MLflow."""

    name: str
    folder: Path  # runs/<study>/
    storage: Any  # the RDBStorage
    study: Any
    specs: list[ParamSpec]
    base: dict[str, Any]
    metric: str
    threads: int | None
    tracking: Any = None  # a mnistlab.tracking.Tracking, with --mlflow
    mlflow_checkpoints: bool = False
    parent_run_id: str | None = None


@dataclass
class Outcome:
    """How a trial ended, as trials.csv and the log line show it."""

    number: int
    state: str  # COMPLETE, PRUNED or FAIL
    value: float | None
    params: dict[str, Any]
    run_folder: str | None = None
    stop_reason: str = ""
    epochs: int = 0
    seconds: float = 0.0
    attrs: dict[str, Any] = field(default_factory=dict)


class ReportToTrial(Callback):
    """Reports the metric to the Optuna trial after each validation; stops the run when the pruner says so.

    The run then ends as any stopped run does: the epoch's checkpoint is written, the test split is
    scored, and summary.json says `stop_reason: pruned at epoch N`.
    """

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric = trial, metric
        self.path: Path | None = None
        self.pruned_at: int | None = None

    def on_fit_start(self, trainer: Any, state: FitState) -> None:
        self.path = trainer.path
        self.trial.set_user_attr("run_folder", str(trainer.path.resolve()))

    def on_validation_end(self, trainer: Any, state: FitState) -> None:
        value = (state.row or {}).get(self.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        self.trial.report(float(value), state.epoch)
        if state.stop_reason is None and self.trial.should_prune():
            self.pruned_at = state.epoch
            state.stop(f"pruned at epoch {state.epoch}")


@contextlib.contextmanager
def heartbeat(storage: Any, trial_id: int) -> Iterator[None]:
    """Tell the storage every few seconds that this trial's process is alive (other machines watch it)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(st.HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):  # a storage hiccup must not end the trial
                storage.record_heartbeat(trial_id)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


@contextlib.contextmanager
def _kept(output: io.StringIO, reporter: ReportToTrial) -> Iterator[None]:
    """Save what the run printed as RUN/train.log (as a sweep does), however the trial ends."""
    try:
        yield
    finally:
        if reporter.path is not None and output.getvalue():
            with contextlib.suppress(OSError):
                (reporter.path / "train.log").write_text(output.getvalue(), encoding="utf-8")


def value_at_best(run: Any, metric: str) -> float | None:
    """The metric at the run's best epoch (the checkpoint the trial hands back), else its last epoch."""
    history, best = run.history, run.summary.get("best_epoch")
    rows = [r for r in history if r.get("epoch") == best] or history[-1:]
    value = rows[0].get(metric) if rows else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _train_config(ctx: TrialContext, number: int, values: dict[str, Any]) -> Any:
    from mnistlab.config import TrainConfig

    config = trial_config(ctx.base, ctx.specs, values)
    return TrainConfig.from_dict({
        **config, "out": str(ctx.folder), "name": f"trial-{number:04d}", "resume": None, "progress": "quiet",
        "threads": ctx.threads, "mlflow": None, "mlflow_checkpoints": False,
    }, f"trial {number}")


def _tracker(ctx: TrialContext, trial: Any) -> Any:
    """The trial's MLflow tracker (nested under the study's run), or None without --mlflow."""
    if ctx.tracking is None:
        return None
    from mnistlab.training.callbacks import MlflowTracker

    return MlflowTracker(ctx.tracking.uri, checkpoints=ctx.mlflow_checkpoints, parent_run_id=ctx.parent_run_id,
                         tags={"study": ctx.name, "trial": str(trial.number)}, tracking=ctx.tracking)


def run_trial(ctx: TrialContext, trial: Any) -> Outcome:
    """Train the trial's run and tell the study how it ended. A Ctrl-C marks the trial lost (queued again)
    and is raised on; an error other than divergence or a bad value is the trial's failure, raised on."""
    import mnistlab

    values = {s.name: s.suggest(trial) for s in ctx.specs}
    outcome = Outcome(trial.number, "FAIL", None, values)
    reporter, tracker = ReportToTrial(trial, ctx.metric), _tracker(ctx, trial)
    start = time.perf_counter()
    trial_id = ctx.storage.get_trial_id_from_study_id_trial_number(st.study_id(ctx.storage, ctx.study), trial.number)
    output = io.StringIO()  # the run's own lines go to its train.log; the tune prints one line per trial
    with heartbeat(ctx.storage, trial_id), _kept(output, reporter):
        try:
            with contextlib.redirect_stdout(output):
                run = mnistlab.train(_train_config(ctx, trial.number, values),
                                     callbacks=[reporter, *([tracker] if tracker else [])])
        except (TrainingDiverged, UsageError) as exc:  # this trial's own failure: it counts, the search goes on
            outcome.attrs["error"] = str(exc)
        except KeyboardInterrupt as exc:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the bookkeeping short
            st.mark_lost(ctx.storage, ctx.study, trial, f"lost: interrupted during trial {trial.number}")
            raise type(exc)(f"interrupted during trial {trial.number} ({reporter.path}); it runs again when "
                            "the study continues") from None
        except Exception as exc:
            outcome.attrs["error"] = f"{type(exc).__name__}: {exc}"
            _finish(ctx, trial, outcome, reporter, tracker, time.perf_counter() - start)
            raise
        else:
            outcome.value = value_at_best(run, ctx.metric)
            outcome.state = "PRUNED" if reporter.pruned_at else "COMPLETE" if outcome.value is not None else "FAIL"
            if outcome.state == "FAIL":
                outcome.attrs["error"] = f"the run recorded no {ctx.metric}"
    _finish(ctx, trial, outcome, reporter, tracker, time.perf_counter() - start)
    return outcome


def _finish(ctx: TrialContext, trial: Any, outcome: Outcome, reporter: ReportToTrial, tracker: Any,
            seconds: float) -> None:
    """Record the outcome on the trial (attrs, then its state), in its summary.json and in MLflow."""
    import optuna
    from optuna.trial import TrialState

    outcome.seconds = seconds
    outcome.run_folder = str(reporter.path) if reporter.path else None
    summary = _read_summary(reporter.path)
    outcome.stop_reason = outcome.attrs.get("error") or str(summary.get("stop_reason") or "")
    outcome.epochs = int(summary.get("epochs_run") or 0)
    attrs = {**outcome.attrs, "stop_reason": outcome.stop_reason, "epochs": outcome.epochs,
             "seconds": round(seconds, 3)}
    try:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        state = TrialState[outcome.state]
        ctx.study.tell(trial, outcome.value if state == TrialState.COMPLETE else None, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Another process took this trial's process for dead (no heartbeat for a long time) and
        # failed it; its retry runs elsewhere. This run folder stays as it is.
        outcome.state, outcome.stop_reason = "FAIL", "lost: marked failed by another process while it ran"
        return
    if reporter.path and summary:
        record = {"study": ctx.name, "number": trial.number, "state": outcome.state, "value": outcome.value,
                  "params": outcome.params}
        _write_summary(reporter.path, {**summary, "trial": record})
        if tracker is not None and tracker.run_id:  # the MLflow copy of summary.json gets the record too
            ctx.tracking.log_tags(tracker.run_id, {"optuna_state": outcome.state})
            ctx.tracking.log_files(tracker.run_id, reporter.path, ["summary.json"])


def _read_summary(path: Path | None) -> dict[str, Any]:
    try:
        return json.loads((path / "summary.json").read_text(encoding="utf-8")) if path else {}
    except (OSError, ValueError):
        return {}


def _write_summary(path: Path, summary: dict[str, Any]) -> None:
    from mnistlab.runs import write_json

    write_json(path / "summary.json", summary)


"""MLflow tracking as a callback: a run's params, per-epoch metrics, test metrics and files in MLflow.

Built in with `--mlflow [URI]` (TrainConfig.mlflow); attach it yourself to any Trainer with
`callbacks=[MlflowTracker("http://host:5000")]`. A tracking store that fails costs one warning,
never the run (see mnistlab.tracking).
"""

from __future__ import annotations

import os
from typing import Any

from mnistlab.runs import METRIC_COLUMNS
from mnistlab.tracking import PARENT_ENV, Tracking, base_tags, numeric, param_values, require_mlflow
from mnistlab.training.callbacks.base import Callback
from mnistlab.training.state import FitState

# What a run folder uploads at the end (those present); checkpoints/ only when asked for.
RUN_FILES = ("config.yaml", "summary.json", "metrics.csv", "environment.json", "vocab.json", "labels.json",
             "report.md", "report.html", "plots")
# The run's end in mnistlab words -> MLflow's run status.
STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


class MlflowTracker(Callback):
    """Log the run to an MLflow tracking store.

    - at the start: the resolved config as params (model options as `model_options.NAME`), tags
      model, dataset, mnistlab_version, host, run_folder (and `tags`);
    - after every epoch: each metrics.csv column as a metric with `step` = the epoch;
    - at the end: the test metrics (`test_accuracy`, `test_f1_macro`, ...), the `stop_reason` tag,
      the run folder's files (config.yaml, summary.json, metrics.csv, plots/, report) and, with
      `checkpoints=True`, checkpoints/; then the status FINISHED, FAILED or KILLED (Ctrl-C).

    A resumed run continues its MLflow run (the run id is saved in the checkpoints).

    Args:
        uri: the tracking URI; None or "default": $MLFLOW_TRACKING_URI, else ./mlruns.
        checkpoints: also upload checkpoints/ at the end.
        parent_run_id: nest the run under this MLflow run (default: $MNISTLAB_MLFLOW_PARENT_RUN_ID).
        tags: more tags for the run.
        tracking: a shared mnistlab.tracking.Tracking (e.g. one per study, so a dead server is
            warned about once for all its trials); default: one of its own.
    """

    state_key = "mlflow"

    def __init__(self, uri: str | None = "default", *, checkpoints: bool = False,
                 parent_run_id: str | None = None, tags: dict[str, str] | None = None,
                 tracking: Tracking | None = None) -> None:
        require_mlflow()
        self.uri, self.checkpoints, self.tags = uri, checkpoints, dict(tags or {})
        self.parent_run_id = parent_run_id
        self.tracking = tracking
        self.run_id: str | None = None
        self._saved: dict[str, Any] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "uri": self.tracking.uri} if self.run_id and self.tracking else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._saved = dict(state)

    def on_fit_start(self, trainer: Any, state: FitState) -> None:
        if self.tracking is None:
            self.tracking = Tracking(self.uri, trainer.reporter.warn)
        t, cfg = self.tracking, trainer.cfg
        known: dict[str, str] | None = None
        saved_id = self._saved.get("run_id")
        if state.resumed and saved_id and self._saved.get("uri") == t.uri:
            known = t.reopen(saved_id)
            self.run_id = saved_id if known is not None else None
        else:
            tags = {**base_tags(cfg.model, cfg.dataset, trainer.path), **self.tags}
            parent = self.parent_run_id or os.environ.get(PARENT_ENV) or None
            self.run_id = t.start_run(trainer.path.name, tags, parent)
        if self.run_id:
            t.log_params(self.run_id, param_values(trainer.task.config_record(cfg)), known=known)

    def on_epoch_end(self, trainer: Any, state: FitState) -> None:
        if self.run_id and self.tracking and state.row:
            row = {k: state.row.get(k) for k in METRIC_COLUMNS if k != "epoch"}
            self.tracking.log_metrics(self.run_id, numeric(row), step=int(state.row["epoch"]))

    def on_fit_end(self, trainer: Any, state: FitState) -> None:
        if self.run_id and self.tracking:
            self.tracking.log_metrics(self.run_id, numeric(state.test or {}, prefix="test_"), step=state.epoch)
        self._finish(trainer, state)

    def on_exception(self, trainer: Any, state: FitState) -> None:
        self._finish(trainer, state)

    def _finish(self, trainer: Any, state: FitState) -> None:
        t, run_id = self.tracking, self.run_id
        if not run_id or t is None:
            return
        t.log_tags(run_id, {"stop_reason": str(state.stop_reason), "status": state.status})
        t.log_files(run_id, trainer.path, RUN_FILES + (("checkpoints",) if self.checkpoints else ()))
        t.end(run_id, STATUS.get(state.status, "FAILED"))

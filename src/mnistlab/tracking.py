"""MLflow tracking shared by the run tracker (a Callback) and the parent runs of sweeps and studies.

A tracking store that is down, slow or refusing writes must never cost a local run: every call
goes through `Tracking.call`, which warns once on the first failure and turns every later call
into a no-op. The run folder is the record; MLflow is a copy of it.

MLflow is an optional extra (`mnistlab[mlflow]`) and is imported only here, inside functions.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

from mnistlab.errors import UsageError

# Runs started while this is set nest under that MLflow run (a sweep sets it for its training processes).
PARENT_ENV = "MNISTLAB_MLFLOW_PARENT_RUN_ID"
# The experiment runs go to unless MLFLOW_EXPERIMENT_NAME says otherwise.
EXPERIMENT = "mnistlab"
# MLflow's HTTP client retries a dead server for about four minutes by default; a training run
# must not stall that long before it can warn and go on. The user's own settings win.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
BATCH = 100  # params or tags per log_batch request (MLflow's limit)

T = TypeVar("T")


def require_mlflow() -> None:
    """--mlflow needs the optional `mlflow` package: say how to get it, before anything starts."""
    try:
        import mlflow  # noqa: F401 - imported lazily: optional extra
    except ImportError:
        raise UsageError(
            "--mlflow needs the mlflow package: pip install 'mnistlab[mlflow]' (or pip install mlflow)"
        ) from None


def resolve_uri(value: str | None) -> str:
    """The tracking URI for `--mlflow [URI]`: the one given, else $MLFLOW_TRACKING_URI, else ./mlruns.

    The local default is an SQLite store in ./mlruns/mlflow.db with the files beside it
    (MLflow's plain-folder store is retired); view it with
    `mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`.
    """
    if value not in (None, "", "default"):
        return str(value)
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    folder = Path("mlruns").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def param_values(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A config as MLflow params: nested keys joined with dots, lists comma-joined, all strings."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(param_values(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(str(v) for v in value)[:MAX_PARAM_LENGTH]
        else:
            out[name] = str(value)[:MAX_PARAM_LENGTH]
    return out


def numeric(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The number entries of a dict (bools, strings, None and nested values left out), keys prefixed."""
    return {f"{prefix}{k}": float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _quiet_loggers() -> None:
    # MLflow's database migrations and store messages would interleave with the run's own lines.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Tracking:
    """One connection to an MLflow tracking store that never stops a run.

    The first failed call prints one warning (through `warn`) and marks the connection broken;
    every call after that returns None without trying, so a dead server costs one timeout at most.
    """

    def __init__(self, uri: str | None, warn: Callable[[str], None]) -> None:
        require_mlflow()
        self.uri = resolve_uri(uri)
        self.warn = warn
        self.broken = False
        self._client: Any = None
        self._experiments: dict[str, str] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)
            _quiet_loggers()
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def call(self, what: str, fn: Callable[..., T] | str, *args: Any, **kwargs: Any) -> T | None:
        """`fn(*args, **kwargs)` (a string: that MlflowClient method), or None once the store has failed
        (the first failure is warned about). The client itself is made inside, so a store MLflow cannot
        open is one more failure, not an error."""
        if self.broken:
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MLflow's and its database layer's own deprecations
                method = getattr(self.client, fn) if isinstance(fn, str) else fn
                return method(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking must never end a run
            self.broken = True
            text = " ".join(str(exc).split())[:300] or type(exc).__name__
            self.warn(f"MLflow tracking at {self.uri} failed while {what} ({text}); training goes on, "
                      "the run folder keeps everything, and nothing more is sent to MLflow from this run")
            return None

    def experiment_id(self, parent_run_id: str | None = None) -> str | None:
        """The parent's experiment, else $MLFLOW_EXPERIMENT_NAME or `mnistlab` (created when missing)."""
        if parent_run_id:
            run = self.call("reading the parent run", lambda: self.client.get_run(parent_run_id))
            return None if run is None else run.info.experiment_id
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or EXPERIMENT
        if name not in self._experiments:
            found = self.call("finding the experiment", self._experiment, name)
            if found is None:
                return None
            self._experiments[name] = found
        return self._experiments[name]

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            return str(existing.experiment_id)
        try:
            return str(self.client.create_experiment(name))
        except MlflowException:  # another process created it just now
            return str(self.client.get_experiment_by_name(name).experiment_id)

    def start_run(self, name: str, tags: dict[str, str], parent_run_id: str | None = None) -> str | None:
        """A new run (nested under `parent_run_id` when given); its id, or None when the store failed."""
        experiment = self.experiment_id(parent_run_id)
        if experiment is None:
            return None
        tags = {**tags, **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})}
        run = self.call("creating the run", lambda: self.client.create_run(experiment, tags=tags, run_name=name))
        return None if run is None else str(run.info.run_id)

    def reopen(self, run_id: str) -> dict[str, str] | None:
        """Mark an existing run RUNNING again (a resumed run); its params, or None when it is gone."""
        def go() -> dict[str, str]:
            params = dict(self.client.get_run(run_id).data.params)
            self.client.update_run(run_id, status="RUNNING")
            return params

        return self.call("reopening the run", go)

    def log_params(self, run_id: str, params: dict[str, str], *, known: dict[str, str] | None = None) -> None:
        """Log params in batches; those in `known` (already on the run: MLflow refuses changes) are skipped."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items() if k not in (known or {})]
        for i in range(0, len(items), BATCH):
            self.call("logging params", "log_batch", run_id, params=items[i:i + BATCH])

    def log_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), BATCH):
            self.call("logging tags", "log_batch", run_id, tags=items[i:i + BATCH])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in metrics.items()]
        if items:
            self.call("logging metrics", "log_batch", run_id, metrics=items)

    def log_files(self, run_id: str, folder: Path, names: Iterable[str]) -> None:
        """Upload the files and folders of `folder` named in `names` that exist (folders keep their name)."""
        for name in names:
            path = folder / name
            if path.is_dir() and any(path.iterdir()):
                self.call(f"uploading {name}/", "log_artifacts", run_id, str(path), name)
            elif path.is_file():
                self.call(f"uploading {name}", "log_artifact", run_id, str(path))

    def end(self, run_id: str, status: str) -> None:
        """FINISHED, FAILED or KILLED."""
        self.call("ending the run", "set_terminated", run_id, status)


def base_tags(model: str, dataset: str, folder: Path | None = None) -> dict[str, str]:
    """The tags of every mnistlab run in MLflow: model, dataset, mnistlab version, host (and run folder)."""
    from mnistlab import __version__

    tags = {"model": str(model), "dataset": str(dataset), "mnistlab_version": __version__,
            "host": socket.gethostname()}
    if folder is not None:
        tags["run_folder"] = str(folder.resolve())
    return tags


@dataclass
class ParentRun:
    """The MLflow run a sweep's runs nest under; set `failed` to end it FAILED instead of FINISHED."""

    tracking: Tracking
    run_id: str | None
    failed: bool = False


@contextmanager
def parent_run(uri: str | None, name: str, *, tags: dict[str, str], params: dict[str, str],
               warn: Callable[[str], None]) -> Iterator[ParentRun]:
    """An MLflow run for a group of runs: those started inside (also in child processes, through
    PARENT_ENV) nest under it. It ends FINISHED, FAILED (`failed` set, or an error) or KILLED (Ctrl-C)."""
    tracking = Tracking(uri, warn)
    run_id = tracking.start_run(name, tags)
    parent = ParentRun(tracking, run_id)
    if run_id:
        tracking.log_params(run_id, params)
    before = os.environ.get(PARENT_ENV)
    if run_id:
        os.environ[PARENT_ENV] = run_id
    status = "FAILED"
    try:
        yield parent
        status = "FAILED" if parent.failed else "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if before is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = before
        if run_id:
            tracking.end(run_id, status)

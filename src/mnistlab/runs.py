"""Run folders: one per experiment, holding everything needed to read, compare or rerun it.

    runs/<name>/
        config.yaml        resolved config (+ package version): `mnistlab train --config` reruns it
        metrics.csv        one row per epoch
        summary.json       status, stop reason, timings and the test metrics
        environment.json   torch version, device, threads, platform
        checkpoints/best.pt, checkpoints/last.pt
        plots/, report.md  (written by mnistlab.report)

Every file is written atomically (temp file + rename), so a run killed at any moment
keeps its previous good files.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.errors import MnistlabError, UsageError
from mnistlab.runfolder import check_run_folder, checkpoint_file

METRIC_COLUMNS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_accuracy",
    "lr",
    "train_seconds",
    "epoch_seconds",
]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=,-]{0,120}$")


def _atomic_text(path: Path, text: str) -> None:
    from mnistlab.training.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, lambda fh: fh.write(text.encode("utf-8")))


def write_json(path: Path, data: Any) -> None:
    """Atomically write pretty JSON."""
    _atomic_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_yaml(path: Path, data: Any) -> None:
    """Atomically write YAML (block style, keys in insertion order)."""
    import yaml

    _atomic_text(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None))


def write_metrics_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomically rewrite metrics.csv from the full history (small: one row per epoch)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRIC_COLUMNS})
    _atomic_text(path, buf.getvalue())


def read_metrics_csv(path: Path) -> list[dict[str, Any]]:
    """Read metrics.csv back into typed rows (missing values become None)."""
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return [_metrics_row(raw) for raw in csv.DictReader(fh)]
    except (UnicodeDecodeError, ValueError, TypeError, csv.Error) as exc:
        raise MnistlabError(f"{path} is damaged ({exc}): restore it or delete it (the epochs are then not shown)") from None


def _metrics_row(raw: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in raw.items():
        if key is None or not isinstance(value, str):  # more cells than headers, or fewer
            raise ValueError("a row does not match the header")
        if value == "":
            row[key] = None
        elif key == "epoch":
            row[key] = int(float(value))
        else:
            try:
                row[key] = float(value)
            except ValueError:
                row[key] = value
    return row


def run_summary(
    base: dict[str, Any],
    *,
    status: str,
    stop_reason: str,
    history: list[dict[str, Any]],
    best_epoch: int,
    best_valid_loss: float,
    train_seconds: float,
    total_seconds: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary.json of a run (image or text): status, stop reason, best epoch and timings, plus `extra`."""
    import math

    return {
        **base,
        "status": status,
        "stop_reason": stop_reason,
        "epochs_run": len(history),
        "best_epoch": best_epoch or None,
        "best_valid_loss": best_valid_loss if math.isfinite(best_valid_loss) else None,
        "best_valid_accuracy": next((r["valid_accuracy"] for r in history if r["epoch"] == best_epoch), None),
        "train_seconds": train_seconds,
        "total_seconds": total_seconds,
        **(extra or {}),
    }


def _square_counts(matrix: Any) -> bool:
    """Whether `matrix` is a list of n lists of n non-negative whole numbers (bool is no count)."""
    return isinstance(matrix, list) and all(
        isinstance(row, list) and len(row) == len(matrix)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and float(v).is_integer()
                for v in row)
        for row in matrix)


def check_run_name(name: str) -> str:
    """A run name is one safe path component: no separators, no `..`, no leading dot."""
    if not _NAME_RE.match(name) or ".." in name:
        raise UsageError(
            f"bad run name {name!r}: use letters, digits and . _ - + = , (no slashes, not starting with a dot)"
        )
    return name


def create_run_dir(out: str | Path, name: str) -> Path:
    """Make `out/name`, or `out/name-2`, `-3`, ... if taken: an existing run is never overwritten."""
    check_run_name(name)
    root = Path(out)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MnistlabError(f"cannot create runs folder {root}: {exc.strerror or exc}") from None
    for i in range(1, 10_000):
        candidate = root / (name if i == 1 else f"{name}-{i}")
        try:
            candidate.mkdir()  # atomic: two processes never get the same folder
        except FileExistsError:
            continue
        except OSError as exc:
            raise MnistlabError(f"cannot create run folder {candidate}: {exc.strerror or exc}") from None
        (candidate / "checkpoints").mkdir()
        return candidate
    raise MnistlabError(f"too many runs named {name!r} in {root}")


@dataclass
class Run:
    """A run folder on disk, as `mnistlab.train` returns it and `load_run` reads it."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)  # mnistlab.Run("runs/fast") as well as Run(Path(...))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> dict[str, Any]:
        import yaml

        return yaml.safe_load((self.path / "config.yaml").read_text(encoding="utf-8")) or {}

    @property
    def summary(self) -> dict[str, Any]:
        p = self.path / "summary.json"
        if not p.is_file():
            return {}
        try:
            summary = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise MnistlabError(f"{p} is damaged ({exc}): restore it or delete it") from None
        if not isinstance(summary, dict):
            raise MnistlabError(f"{p} is damaged (it holds a {type(summary).__name__}, not an object): restore it or delete it")
        return summary

    @property
    def status(self) -> str:
        """summary.json's status (running, completed, failed, interrupted; "unknown" without one), where a
        "running" run that no process trains (killed: nothing holds its RUN/.lock) is "interrupted"."""
        from mnistlab.locks import folder_locked

        status = str(self.summary.get("status") or "unknown")
        if status == "running" and folder_locked(self.path / ".lock") is False:
            return "interrupted"
        return status

    @property
    def history(self) -> list[dict[str, Any]]:
        return read_metrics_csv(self.path / "metrics.csv")

    @property
    def test_metrics(self) -> dict[str, Any]:
        """The test metrics of summary.json (accuracy, f1_macro, ..., loss, split, checkpoint); {} if none.

        They sit at the top level of summary.json, next to `"split": "test"`; older runs nested
        them under a `test` key, which is still read.
        """
        from mnistlab.metrics import METRIC_KEYS  # numpy: only when metrics are read

        summary = self.summary
        if "accuracy" in summary:
            # Which split and checkpoint were scored, then evaluation.score's dict (the metrics and the loss).
            keys = ("split", "checkpoint", "epoch", *METRIC_KEYS, "loss")
            return {k: summary[k] for k in keys if k in summary}
        return dict(summary.get("test") or {})

    def checkpoint_path(self, which: str = "best") -> Path:
        return checkpoint_file(self.path, which)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # ------------------------------------------------------------------ in a notebook

    def _repr_html_(self) -> str:
        """Jupyter's display: name, model, dataset, status, the test metrics and the curves (embedded)."""
        from mnistlab.display import run_html

        try:
            config = self.config
        except Exception:  # noqa: BLE001 - a half-written config.yaml still deserves a display
            config = {}
        damaged = []
        parts: list[Any] = []
        summary = lambda: {**self.summary, "status": self.status} if self.summary else {}
        for read, empty in ((summary, {}), (lambda: self.history, []), (lambda: self.test_metrics, {})):
            try:
                parts.append(read())
            except MnistlabError as exc:  # a damaged file is said, and the rest still shows
                damaged.append(str(exc))
                parts.append(empty)
        return run_html(self.name, str(self.path), config, *parts, damaged=damaged)

    def plot(self) -> Any:
        """The training curves (loss and accuracy per epoch, best epoch marked) as a matplotlib Figure.

        In a notebook it shows inline; `fig.savefig("curves.png")` writes it. Raises MnistlabError when
        no epoch has finished yet.
        """
        from mnistlab.plots import curves_figure

        history = self.history
        if not history:
            raise MnistlabError(f"run {self.path} has no finished epoch to plot yet")
        return curves_figure(history, best_epoch=self.summary.get("best_epoch"), title=self.name)

    def confusion_matrix(self) -> Any:
        """The test split's confusion matrix as a matplotlib Figure (counts and row-normalised, side by side).

        The counts themselves are `run.test_metrics["confusion_matrix"]` (a list of rows, true class
        first). Raises MnistlabError when the run has no test metrics (it did not finish).
        """
        from mnistlab.display import confusion_picture

        metrics = self.test_metrics
        matrix = metrics.get("confusion_matrix")
        if not matrix:
            raise MnistlabError(f"run {self.path} has no test metrics (status {self.status})")
        if not _square_counts(matrix):  # a summary.json edited by hand
            raise MnistlabError(f"{self.path / 'summary.json'}: confusion_matrix is not a square list of rows of counts")
        total = sum(map(sum, matrix))
        return confusion_picture(metrics, title=f"{self.name}: test split, {total:,} samples")

    def predict(self, images: Any, *, checkpoint: str = "best", preprocess: str = "auto",
                model_code: str | Path | None = None, allow_changed_code: bool = False, model: Any = None) -> Any:
        """Predict images with this run's model: `labels, probabilities = run.predict(images)`.

        Args:
            images: a path (an image file, a folder of them, or a CSV/.npy/.npz/IDX file, as
                `mnistlab predict` reads them), a PIL image, a numpy array or torch tensor ([H, W] one
                image, [N, H, W] or [N, C, H, W], [H, W, 3] or [N, H, W, 3], and for a colour run [3, H, W] one
                image; uint8 0-255 or floats 0-1),
                or a list of these.
            preprocess: "auto": image files, PIL images and arrays of another size than the model's
                (a drawn canvas) get the MNIST-style preprocessing of `mnistlab predict` (see
                mnistlab.predict), arrays of the model's size keep their pixels; "photo": every
                image is preprocessed; "none": none is (arrays must be of the model's size).
            model_code, allow_changed_code: for a run of a user's model file, that file (as
                `--model-code`); model: for a run of a module object given to mnistlab.fit, a fresh instance.

        Returns:
            Predictions(labels, probabilities): the predicted class name of each image ("7"), in input
            order, and the float32 probabilities [N, classes].
        """
        from mnistlab.models.usercode import ModelCode
        from mnistlab.predict import Predictor
        from mnistlab.predict_files import predict_objects

        predictor = Predictor.from_run(self, checkpoint, ModelCode.of(model_code, allow_changed_code), model)
        return predict_objects(predictor, images, preprocess=preprocess)


def load_run(path: str | Path | Run) -> Run:
    """Open an existing run folder, with a clear error when it is not one."""
    if isinstance(path, Run):
        return path
    return Run(check_run_folder(path))

"""Compare run folders side by side: one row per run, as a table, CSV or Markdown.

`mnistlab compare RUN...` and the summary a sweep writes share `collect_runs`,
`run_row` and `format_rows`, so both show the same columns computed the same way.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import html
import io
import math
import sys
import types
from pathlib import Path
from typing import Any, Iterable, Sequence

from mnistlab.errors import MnistlabError, UsageError
from mnistlab.runs import Run, load_run

# Column key -> header, in display order.
COLUMNS: dict[str, str] = {
    "name": "name",
    "model": "model",
    "options": "options",
    "parameters": "params",
    "epochs": "epochs",
    "train_seconds": "train s",
    "best_valid_accuracy": "best valid acc",
    "test_accuracy": "test acc",
    "f1": "macro F1",
    "auc": "AUC",
    "status": "status",
}

# --sort key -> (column, descending). Scores sort best first; sizes, times and names ascending.
SORT_KEYS: dict[str, tuple[str, bool]] = {
    "name": ("name", False),
    "model": ("model", False),
    "parameters": ("parameters", False),
    "epochs": ("epochs", False),
    "train_seconds": ("train_seconds", False),
    "best_valid_accuracy": ("best_valid_accuracy", True),
    "valid_accuracy": ("best_valid_accuracy", True),
    "test_accuracy": ("test_accuracy", True),
    "accuracy": ("test_accuracy", True),
    "f1": ("f1", True),
    "f1_macro": ("f1", True),
    "auc": ("auc", True),
    "auc_macro": ("auc", True),
}

FORMATS = ("table", "csv", "markdown")

# Recipe settings worth naming in the options column when a run deviates from its model's recipe.
_MAIN_FIELDS = (
    "init", "optimizer", "lr", "momentum", "nesterov", "batch_size", "epochs", "scheduler", "weight_decay",
    "label_smoothing", "augment", "rotate", "zoom", "patience", "monitor", "clip_grad", "valid_fraction", "seed",
    "dataset", "channels", "image_size", "labels",
    "ema", "accumulate", "class_weights", "tta",
)
_GLOB_CHARS = set("*?[")


def check_sort_key(key: str | None) -> tuple[str, bool] | None:
    """The (column, descending) of a --sort key; UsageError listing the keys otherwise."""
    if key is None:
        return None
    norm = key.strip().lower().replace("-", "_")
    if norm not in SORT_KEYS:
        raise UsageError(f"unknown sort key {key!r}: choose one of {', '.join(SORT_KEYS)}")
    return SORT_KEYS[norm]


def is_run_dir(path: Path) -> bool:
    """A run folder has a config.yaml (written first thing by `train`)."""
    return path.is_dir() and (path / "config.yaml").is_file()


def collect_runs(args: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Expand RUN arguments into run folders, in order and without duplicates.

    Each argument may be a run folder, a folder holding runs (e.g. a sweep folder, one level
    down), or a glob (`runs/*`), expanded here because not every shell does it.

    Returns:
        (run folders, notes about arguments that were skipped, for stderr).
    """
    found: list[Path] = []
    notes: list[str] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            found.append(p)

    for arg in args:
        text = str(arg)
        paths = [Path(p) for p in sorted(glob.glob(text))] if _GLOB_CHARS & set(text) else [Path(text)]
        if not paths:
            notes.append(f"{text}: no match")
        for p in paths:
            if is_run_dir(p):
                add(p)
            elif p.is_dir():
                children = [c for c in sorted(p.iterdir()) if c.is_dir() and not c.name.startswith(".")]
                runs = [c for c in children if is_run_dir(c)]
                if runs:
                    for c in runs:
                        add(c)
                    # Inside a folder of runs, other folders are only worth a note when named explicitly.
                    for c in children:
                        if not is_run_dir(c) and c.name not in ("checkpoints", "plots", "tensorboard"):
                            notes.append(f"{c}: not a run folder (no config.yaml), skipped")
                else:
                    notes.append(f"{p}: not a run folder (no config.yaml), skipped")
            elif p.exists():
                notes.append(f"{p}: not a folder, skipped")
            else:
                notes.append(f"{p}: does not exist, skipped")
    return found, notes


def short_value(value: Any) -> str:
    """A setting as the options column writes it: `true`, `784,128`, `0.001`."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(short_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def key_options(config: dict[str, Any]) -> str:
    """The run's model options and main recipe settings that differ from its model's defaults, short.

    e.g. `hidden_dims=784,128,128,128 init=zeros batch_size=128`. Text runs (`task: text`) name
    their text settings (bidirectional, hidden, embed_dim, layers, dropout, ...) and the training
    settings that differ from `mnistlab text train`'s defaults. Unknown models (a registry that
    changed since the run) show every model option and no deviations.
    """
    from mnistlab.config import as_recorded

    config = as_recorded(config)  # a run from before --rotate trained without it, whatever its recipe says now
    options, defaults = _options_and_defaults(config)
    parts: list[str] = []
    for key, value in options.items():
        default = None if defaults is None else defaults["model_options"].get(key)
        if defaults is None or short_value(value) != short_value(default):
            parts.append(f"{key}={short_value(value)}")
    if defaults is not None:
        for key in _MAIN_FIELDS:
            value = config.get(key)
            if value is not None and short_value(value) != short_value(defaults.get(key)):
                parts.append(f"{key}={short_value(value)}")
    return " ".join(parts)


def _options_and_defaults(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The run's options, and the resolved default config (its `model_options`: the options' defaults)
    they are measured against; None when the model is unknown."""
    from mnistlab.config import TrainConfig, resolve_config

    if config.get("task") == "text":
        from mnistlab.text.settings import TextSettings
        from mnistlab.text.settings import resolve_text as resolve_text_config  # the text defaults, as train resolves them

        text = TextSettings()
        names = [f.name for f in dataclasses.fields(TextSettings) if f.name not in ("data", "model")]
        defaults = resolve_text_config(text, TrainConfig()).to_dict()
        defaults["model_options"] = {k: getattr(text, k) for k in names}
        return {k: config[k] for k in names if k in config}, defaults
    from mnistlab.models import get_model_info

    options = dict(config.get("model_options") or {})
    try:
        info = get_model_info(config.get("model", ""))
        defaults = resolve_config(TrainConfig(model=config["model"])).to_dict()
        defaults["model_options"] = dict(getattr(info, "options", {}) or {})
    except (MnistlabError, KeyError, TypeError):
        return options, None
    return options, defaults


def run_row(run: Run | Path | str) -> dict[str, Any]:
    """One comparison row for a run folder (missing values are None)."""
    run = load_run(run)
    try:
        config = run.config
    except Exception:  # noqa: BLE001 - a half-written config still deserves a row
        config = {}
    summary = run.summary
    history = run.history
    status = run.status if summary.get("status") else ("running" if history else "unknown")
    valid = [r["valid_accuracy"] for r in history if r.get("valid_accuracy") is not None]
    best_valid = summary.get("best_valid_accuracy")
    if best_valid is None and valid:
        best_valid = max(valid)
    train_seconds = summary.get("train_seconds")
    epochs = summary.get("epochs_run")
    # summary.json of a run still training was written at its start: the epochs so far are in metrics.csv.
    if status in ("running", "interrupted") or epochs is None:
        epochs = len(history) if history else epochs
        train_seconds = sum(r.get("train_seconds") or 0.0 for r in history) if history else train_seconds
    try:
        options = key_options(config) if config else ""
    except Exception:  # noqa: BLE001 - the options column is a convenience, never a reason to fail
        options = ""
    test = run.test_metrics
    return {
        "name": run.name,
        "model": config.get("model") or summary.get("model"),
        "options": options,
        "parameters": summary.get("parameters"),
        "epochs": epochs,
        "train_seconds": train_seconds,
        "best_valid_accuracy": best_valid,
        "test_accuracy": test.get("accuracy"),
        "f1": test.get("f1_macro"),
        "auc": test.get("auc_macro"),
        "status": status,
        "path": str(run.path),
    }


def missing_row(name: str, status: str, model: str | None = None, options: str = "") -> dict[str, Any]:
    """A row for a run that has no folder (e.g. it failed before creating one)."""
    row: dict[str, Any] = {k: None for k in COLUMNS}
    row.update(name=name, model=model, options=options, status=status, path=None)
    return row


def sort_rows(rows: list[dict[str, Any]], key: str | None) -> list[dict[str, Any]]:
    """Rows sorted by a --sort key; runs without that value go last whatever the direction."""
    spec = check_sort_key(key)
    if spec is None:
        return list(rows)
    column, descending = spec

    def has(row: dict[str, Any]) -> bool:
        v = row.get(column)
        return v is not None and not (isinstance(v, float) and math.isnan(v))

    present = [r for r in rows if has(r)]
    absent = [r for r in rows if not has(r)]
    if column in ("name", "model"):
        present.sort(key=lambda r: str(r[column]).lower(), reverse=descending)
    else:
        present.sort(key=lambda r: float(r[column]), reverse=descending)
    return present + absent


def _cell(column: str, value: Any) -> str:
    """Human formatting: 4 decimals for scores, 1 for seconds, thousands separators for sizes."""
    if value is None:
        return "-"
    if column in ("best_valid_accuracy", "test_accuracy", "f1", "auc"):
        return f"{float(value):.4f}"
    if column == "train_seconds":
        return f"{float(value):.1f}"
    if column == "parameters":
        return f"{int(value):,}"
    return str(value)


def format_rows(rows: Sequence[dict[str, Any]], fmt: str = "table") -> str:
    """Render rows as an aligned text table, CSV (raw numbers) or a Markdown table."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    columns = list(COLUMNS)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
        return buf.getvalue()
    headers = [COLUMNS[c] for c in columns]
    cells = [[_cell(c, row.get(c)) for c in columns] for row in rows]
    numeric = {"parameters", "epochs", "train_seconds", "best_valid_accuracy", "test_accuracy", "f1", "auc"}
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |"]
        lines.append("|" + "|".join("---:" if c in numeric else "---" for c in columns) + "|")
        for r in cells:
            lines.append("| " + " | ".join(v.replace("|", "\\|") for v in r) + " |")
        return "\n".join(lines) + "\n"
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if c in numeric else v.ljust(w) for v, w, c in zip(values, widths, columns)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells]) + "\n"


def compare_runs(
    args: Iterable[str | Path], *, sort: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows for every run found in `args` (see collect_runs), sorted by `sort`; plus the skip notes.

    Example:
        >>> rows, notes = compare_runs(["runs/*"], sort="test_accuracy")   # doctest: +SKIP
        >>> print(format_rows(rows, "markdown"))                           # doctest: +SKIP
    """
    check_sort_key(sort)  # a bad key fails before any folder is read
    paths, notes = collect_runs(args)
    rows = []
    for p in paths:
        try:
            rows.append(run_row(p))
        except MnistlabError as exc:
            notes.append(f"{p}: {exc}, skipped")
    return sort_rows(rows, sort), notes


class RunTable:
    """What `mnistlab.compare` returns: one row per run (the columns of `mnistlab compare`), shown as an
    HTML table in a notebook and as the text table by print(); `to_pandas()` makes a DataFrame.

    `rows` holds the raw values (dicts keyed by COLUMNS, plus `path`); `notes` says which arguments
    were skipped and why.
    """

    def __init__(self, rows: list[dict[str, Any]], notes: list[str]) -> None:
        self.rows, self.notes = rows, notes

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Any:
        return iter(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]

    def __str__(self) -> str:
        return format_rows(self.rows, "table") + "".join(f"note: {n}\n" for n in self.notes)

    def __repr__(self) -> str:
        return f"<RunTable of {len(self.rows)} runs>"

    def _repr_html_(self) -> str:
        from mnistlab.display import html_table

        cells = [[_cell(c, row.get(c)) for c in COLUMNS] for row in self.rows]
        notes = "".join(f"<p>note: {html.escape(n)}</p>" for n in self.notes)
        return html_table(list(COLUMNS.values()), cells) + notes

    def to_pandas(self) -> Any:
        """A pandas DataFrame of the rows (raw numbers), indexed by run name. Needs pandas (not a dependency)."""
        try:
            import pandas as pd
        except ImportError:
            raise UsageError("to_pandas() needs pandas: pip install pandas (or pip install 'mnistlab[notebook]')") from None
        return pd.DataFrame([{c: row.get(c) for c in [*COLUMNS, "path"]} for row in self.rows],
                            columns=[*COLUMNS, "path"]).set_index("name")


def compare(*runs: str | Path | Run, sort: str | None = None) -> RunTable:
    """Runs side by side, as `mnistlab compare RUN...` shows them: `mnistlab.compare("runs/*", sort="accuracy")`.

    Args:
        *runs: run folders, Runs, folders of runs (a sweep) or globs, or lists of them. None found
            raises MnistlabError, as `mnistlab compare` does.
        sort: a --sort key (test_accuracy, f1, train_seconds, name, ...); None keeps the given order.

    Returns:
        A RunTable (HTML in a notebook, `.rows`, `.to_pandas()`).
    """
    given = [r for arg in runs for r in (arg if isinstance(arg, (list, tuple)) else [arg])]  # compare(runs) too
    if not given:
        raise UsageError('compare needs run folders, folders of runs or globs: mnistlab.compare("runs/*")')
    rows, notes = compare_runs([r.path if isinstance(r, Run) else r for r in given], sort=sort)
    if not rows:  # as `mnistlab compare` says: a mistyped folder is not an empty table
        raise MnistlabError("no run folders found in " + " ".join(map(str, given)) + "".join(f"; {n}" for n in notes))
    return RunTable(rows, notes)


class _CallableModule(types.ModuleType):
    """`mnistlab.compare(...)` calls `compare`: importing this module sets the package's attribute
    `compare` to the module itself (Python does that for every submodule), which must stay callable."""

    def __call__(self, *runs: str | Path | Run, sort: str | None = None) -> RunTable:
        return compare(*runs, sort=sort)


sys.modules[__name__].__class__ = _CallableModule


def plot_valid_curves(paths: Sequence[str | Path], out: str | Path) -> Path:
    """Overlay the valid-accuracy (train accuracy where a run had no validation) curves of runs."""
    from mnistlab.plots import plot_accuracy_overlay

    curves: dict[str, list[tuple[int, float]]] = {}
    for p in paths:
        run = load_run(p)
        history = run.history
        key = "valid_accuracy" if any(r.get("valid_accuracy") is not None for r in history) else "train_accuracy"
        points = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
        if points:
            curves[run.name if key == "valid_accuracy" else f"{run.name} (train)"] = points
    if not curves:
        raise MnistlabError("none of these runs has a finished epoch to plot")
    return plot_accuracy_overlay(curves, out, title="validation accuracy per epoch")

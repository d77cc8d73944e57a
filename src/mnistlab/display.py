"""How results show in a notebook, and the pieces the run report shares with it.

A Run, the table of `mnistlab.compare` and the metrics of `mnistlab.evaluate` display as HTML in
Jupyter (`_repr_html_`); their pictures are embedded as base64 PNG, never linked to a file, so a
notebook that is moved, shared or rendered elsewhere keeps them. The facts and metrics tables are
built here once, for these displays and for report.md/report.html alike.

This module reads only plain dicts and lists (a run's config, summary.json, metrics.csv rows),
never a Run itself, so that `mnistlab.runs` can use it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

# evaluate's keys, as the metrics tables name them.
METRIC_HEADERS = {
    "accuracy": "accuracy", "precision_macro": "precision (macro)", "recall_macro": "recall (macro)",
    "f1_macro": "F1 (macro)", "auc_macro": "AUC (macro, OvR)", "loss": "loss",
}


def num(value: Any, digits: int = 4) -> str:
    """A number as the tables write it: floats with `digits` decimals, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def run_facts(config: dict[str, Any], summary: dict[str, Any], history: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(what, value) rows about a run: its model, data, size, how it ended and how long it took."""
    params = summary.get("parameters")
    train_s, total_s = summary.get("train_seconds"), summary.get("total_seconds")
    timing = None
    if isinstance(train_s, (int, float)):
        timing = f"{train_s:.1f} s in the training steps" + (f", {total_s:.1f} s in all" if total_s else "")
    return [
        ("model", config.get("model")),
        ("dataset", config.get("dataset") or config.get("data")),
        ("parameters", f"{params:,}" if isinstance(params, int) else params),
        ("status", summary.get("status", "unknown")),
        ("stop reason", summary.get("stop_reason")),
        ("epochs run", summary.get("epochs_run", len(history))),
        ("best epoch", summary.get("best_epoch")),
        ("best valid loss / accuracy", f"{num(summary.get('best_valid_loss'))} / {num(summary.get('best_valid_accuracy'))}"),
        ("training time", timing),
    ]


def metrics_table(metrics: dict[str, Any], counted: str = "images") -> tuple[list[str], list[list[str]]]:
    """(headers, one row) of the overall metrics; `counted` names the samples column (images, texts)."""
    headers = [*METRIC_HEADERS.values(), counted]
    return headers, [[num(metrics.get(key)) for key in METRIC_HEADERS] + [num(metrics.get("samples"))]]


def per_class_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the per-class precision, recall, F1 and support."""
    rows = [[str(r["class"]), num(r["precision"]), num(r["recall"]), num(r["f1"]), str(r["support"])]
            for r in metrics.get("per_class") or []]
    return ["class", "precision", "recall", "F1", "support"], rows


def html_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table, every cell escaped; no header row when all headers are empty."""
    e = html.escape
    out = ["<table>"]
    if any(headers):
        out.append("<tr>" + "".join(f"<th>{e(str(h))}</th>" for h in headers) + "</tr>")
    out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows]
    out.append("</table>")
    return "\n".join(out)


def png_img(png: bytes, alt: str) -> str:
    """An <img> holding the PNG itself (a data: URI)."""
    data = base64.b64encode(png).decode("ascii")
    return f"<img src='data:image/png;base64,{data}' alt='{html.escape(alt)}' style='max-width:100%'>"


def figure_img(fig: Any, alt: str) -> str:
    """A matplotlib figure as an embedded <img>."""
    from mnistlab.plots import figure_png

    return png_img(figure_png(fig), alt)


def confusion_picture(metrics: dict[str, Any], title: str | None = None) -> Any:
    """The confusion matrix of a metrics dict (evaluate's, or a run's test metrics) as a figure."""
    from mnistlab.errors import MnistlabError
    from mnistlab.plots import confusion_figure

    matrix = metrics.get("confusion_matrix")
    if not matrix:
        raise MnistlabError("these metrics hold no confusion matrix (the run has no test metrics yet)")
    classes = [str(r["class"]) for r in metrics.get("per_class") or []] or [str(k) for k in range(len(matrix))]
    return confusion_figure(matrix, classes, title=title)


def metrics_html(metrics: dict[str, Any], counted: str = "images") -> str:
    """The overall metrics, the confusion matrix as a picture, and the per-class scores (folded)."""
    where = ", ".join(f"{k} {metrics[k]}" for k in ("split", "checkpoint", "epoch") if metrics.get(k) is not None)
    parts = [f"<p>{html.escape(where)}</p>"] if where else []
    parts.append(html_table(*metrics_table(metrics, counted)))
    if metrics.get("confusion_matrix"):
        parts.append(figure_img(confusion_picture(metrics), "confusion matrix (rows: true class)"))
    headers, rows = per_class_table(metrics)
    if rows:
        parts.append(f"<details><summary>per class</summary>{html_table(headers, rows)}</details>")
    return "\n".join(parts)


class Metrics(dict):
    """The metrics dict of `mnistlab.evaluate`: a plain dict (JSON, `metrics["accuracy"]`, `==`) that shows
    as tables and the confusion matrix picture in a notebook."""

    def __init__(self, metrics: Any = (), counted: str = "images") -> None:
        super().__init__(metrics)
        self.counted = counted  # what the samples are: "texts" for a text run's metrics

    def _repr_html_(self) -> str:
        return metrics_html(self, self.counted)


def run_html(name: str, path: str, config: dict[str, Any], summary: dict[str, Any],
             history: list[dict[str, Any]], metrics: dict[str, Any], damaged: Sequence[str] = ()) -> str:
    """A run as a notebook shows it: its facts, the test metrics and the curves (embedded)."""
    from mnistlab.plots import curves_figure

    e = html.escape
    facts = [(k, v) for k, v in run_facts(config, summary, history) if v is not None] + [("folder", path)]
    parts = [f"<div><strong>Run {e(name)}</strong>", html_table(["", ""], facts)]
    parts += [f"<p>{e(note)}</p>" for note in dict.fromkeys(damaged)]
    counted = "texts" if config.get("task") == "text" else "images"
    if metrics.get("accuracy") is not None:
        parts += ["<p><strong>Test metrics</strong></p>", html_table(*metrics_table(metrics, counted))]
    else:
        parts.append(f"<p>No test metrics yet (status {e(str(summary.get('status', 'unknown')))}).</p>")
    if history:
        fig = curves_figure(history, best_epoch=summary.get("best_epoch"), title=name)
        parts.append(figure_img(fig, f"training curves of {name}"))
    parts.append("</div>")
    return "\n".join(parts)

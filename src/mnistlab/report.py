"""A run's pictures and its readable report: plots/*.png, report.md and report.html.

`write_run_report(run, test_logits)` is called at the end of `mnistlab train` and by
`mnistlab evaluate` (test split). Every picture is drawn independently: one that fails
is listed in the report and the others, and the report itself, are still written.

    plots/curves.png            train/valid loss and accuracy per epoch, best epoch marked
    plots/confusion_matrix.png  counts and row-normalised
    plots/misclassified.png     the most confident test mistakes
    plots/samples.png           training inputs as the model saw them (augmented if the run was)
    report.md, report.html      config, parameters, metrics (overall, per class), timings, the pictures

Text runs (`mnistlab text train`) get the curves and the confusion matrix; in place of the
two image grids their report lists the most confident test mistakes as text.
"""

from __future__ import annotations

import html
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mnistlab.display import html_table, metrics_table, per_class_table, run_facts
from mnistlab.display import num as _num
from mnistlab.runs import Run, _atomic_text, load_run

PLOTS = ("curves", "confusion_matrix", "misclassified", "samples")
_CAPTIONS = {
    "curves": "Training curves (loss and accuracy per epoch; dashed line: best epoch)",
    "confusion_matrix": "Confusion matrix on the test split (rows: true class)",
    "misclassified": "The most confident mistakes on the test split",
    "samples": "Training samples as the model saw them",
}
MAX_MISTAKES = 24
MAX_SAMPLES = 24


@dataclass
class ReportResult:
    """What write_run_report produced: picture paths, the failures by plot name, and the reports."""

    plots: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    markdown: Path | None = None
    html: Path | None = None


class _Lazy:
    """The run's dataset, loaded on first use only (curves need none of it) and at most once."""

    def __init__(self, config: dict[str, Any], data: Any = None) -> None:
        self.config = config
        self._data: Any = data

    def __call__(self) -> Any:
        if self._data is None:
            from mnistlab.data import load_dataset
            from mnistlab.data.sources import data_options

            shape = self.config.get("image_shape")  # set by write_run_report from summary.json
            recorded = {"in_channels": shape[0], "image_size": shape[-1]} if shape else None
            self._data = load_dataset(
                self.config["dataset"], self.config.get("data_dir"), seed=int(self.config.get("seed") or 0),
                **data_options(self.config, recorded),
            )
        return self._data


def write_run_report(
    run: Run | str | Path, test_logits: Any = None, *, test_texts: list[str] | None = None,
    test_labels: Any = None, checkpoint: str | None = None, checkpoint_epoch: int | None = None,
    data: Any = None,
) -> ReportResult:
    """Draw the run's plots and write report.md and report.html into its folder.

    Args:
        run: the run folder.
        test_logits: float logits [N, K] for the test split, in order (torch tensor or array).
            Without them the confusion matrix comes from summary.json and there is no
            misclassified grid (or, for a text run, no list of mistakes).
        test_texts, test_labels: a text run's test split (its texts and class indices), in
            the order of test_logits. Image runs read their test split from the dataset.
        checkpoint, checkpoint_epoch: which checkpoint ("best" or "last") and epoch test_logits
            come from, for the report's "checkpoint scored"; None: the one summary.json says
            train scored.
        data: the run's dataset as loaded (by train or evaluate; the only copy of data given to
            mnistlab.fit); None: loaded from the run's config, in the shape summary.json records.

    Returns:
        A ReportResult; `failed` maps each plot that could not be drawn to its error.
    """
    run = load_run(run)
    config, summary, history = run.config, run.summary, run.history
    is_text = config.get("task") == "text"
    data = _Lazy({**config, "image_shape": summary.get("image_shape")}, data)
    result, plots_dir = ReportResult(), run.path / "plots"
    plots_dir.mkdir(exist_ok=True)

    logits = None
    if test_logits is not None:
        logits = test_logits.detach().cpu().float().numpy() if hasattr(test_logits, "detach") else np.asarray(test_logits)
    metrics = _test_metrics(run, logits, test_labels, data, result)

    # A text run trained with --test-fraction 0 has no test split to draw or list.
    no_test = is_text and summary.get("test_texts") == 0
    jobs = _plot_jobs(run, history, summary, metrics, logits, data, is_text, no_test)
    for name, job in jobs.items():
        try:
            result.plots[name] = job(plots_dir / f"{name}.png")
        except Exception as exc:  # noqa: BLE001 - each plot on its own: one failure keeps the rest
            result.failed[name] = f"{type(exc).__name__}: {exc}".strip()
            print(f"warning: {run.path}/plots/{name}.png not written: {result.failed[name]}", file=sys.stderr)

    mistakes = None
    if no_test:
        result.failed["mistakes"] = "this run has no test split (test fraction 0)"
    elif is_text:
        try:
            mistakes = _text_mistakes(logits, test_labels, test_texts, metrics)
        except Exception as exc:  # noqa: BLE001 - the report is still written without the list
            result.failed["mistakes"] = f"{type(exc).__name__}: {exc}"
    scored = _scored_label(summary, checkpoint, checkpoint_epoch)
    blocks = _report_blocks(run, config, summary, history, metrics, result, list(jobs), mistakes, scored)
    result.markdown, result.html = run.path / "report.md", run.path / "report.html"
    _atomic_text(result.markdown, _to_markdown(blocks))
    _atomic_text(result.html, _to_html(blocks, f"mnistlab run {run.name}"))
    return result


def _test_metrics(run: Run, logits: Any, test_labels: Any, data: Any, result: ReportResult) -> dict[str, Any]:
    """The test metrics: recomputed from the logits when given (evaluate may use another checkpoint
    than train did), else those summary.json recorded (also when recomputing fails)."""
    from mnistlab.metrics import classification_metrics, softmax

    metrics: dict[str, Any] = run.test_metrics
    if logits is None:
        return metrics
    try:
        if run.config.get("task") == "text":
            if test_labels is None:
                raise ValueError("a text run's report needs test_labels with its test_logits")
            labels = np.asarray(test_labels, dtype=np.int64)
            classes = [r["class"] for r in metrics.get("per_class") or []]
        else:
            d = data()
            labels = d.test_labels.cpu().numpy().astype(np.int64)
            classes = list(d.classes)
        metrics = classification_metrics(logits, labels, classes)
        # The mean cross-entropy, as evaluation.score adds it (classification_metrics has no loss).
        picked = softmax(logits)[np.arange(len(labels)), labels]
        metrics["loss"] = float(-np.log(np.clip(picked, 1e-45, None)).mean()) if len(labels) else None
    except Exception as exc:  # noqa: BLE001 - fall back to the recorded metrics
        result.failed["metrics"] = f"{type(exc).__name__}: {exc}"
    return metrics


def _plot_jobs(run: Run, history: list[dict[str, Any]], summary: dict[str, Any], metrics: dict[str, Any],
               logits: Any, data: Any, is_text: bool, no_test: bool) -> dict[str, Callable[[Path], Path]]:
    """The plots this run gets, each a function of the file it writes."""
    jobs: dict[str, Callable[[Path], Path]] = {"curves": lambda p: _curves(p, history, summary, run.name)}
    if not no_test:
        jobs["confusion_matrix"] = lambda p: _confusion(p, metrics, data, "texts" if is_text else "images")
    if not is_text:
        jobs["misclassified"] = lambda p: _misclassified(p, logits, data)
        jobs["samples"] = lambda p: _samples(p, run.config, data)
    return jobs


# ----------------------------------------------------------------------------- the plots

def _curves(path: Path, history: list[dict[str, Any]], summary: dict[str, Any], name: str) -> Path:
    from mnistlab.plots import plot_curves

    if not history:
        raise ValueError("no finished epoch in metrics.csv")
    return plot_curves(history, path, best_epoch=summary.get("best_epoch"), title=name)


def _confusion(path: Path, metrics: dict[str, Any], data: _Lazy, what: str = "images") -> Path:
    from mnistlab.plots import plot_confusion_matrix

    cm = metrics.get("confusion_matrix")
    if not cm:
        raise ValueError("no test metrics (the run has not finished)")
    classes = [r["class"] for r in metrics.get("per_class") or []] or list(data().classes)
    return plot_confusion_matrix(cm, classes, path, title=f"test split, {int(np.sum(cm)):,} {what}")


def _misclassified(path: Path, logits: np.ndarray | None, data: _Lazy) -> Path:
    from mnistlab.metrics import softmax
    from mnistlab.plots import save_image_grid, save_message

    if logits is None:
        raise ValueError("no test logits given (evaluate the run to draw it)")
    d = data()
    labels = d.test_labels.cpu().numpy()
    if len(labels) != len(logits):
        raise ValueError(f"{len(logits)} logits for {len(labels)} test images")
    probs = softmax(logits)
    preds = probs.argmax(1)
    wrong = np.flatnonzero(preds != labels)
    if len(wrong) == 0:
        return save_message(path, "no misclassified test images")
    # Highest confidence first: the mistakes the model is surest about are the telling ones.
    conf = probs[wrong, preds[wrong]]
    worst = wrong[np.argsort(-conf, kind="stable")][:MAX_MISTAKES]
    classes = [str(c) for c in d.classes]
    titles = [f"true {classes[labels[i]][:8]}\npred {classes[preds[i]][:8]} {probs[i, preds[i]]:.2f}" for i in worst]
    images = _loaded(d.test_images[torch_index(worst)])
    return save_image_grid(
        images, titles, path, ncols=8,
        title=f"{len(worst)} most confident of {len(wrong):,} mistakes ({len(wrong) / len(labels):.2%} of the test split)",
    )


def _text_mistakes(
    logits: np.ndarray | None, labels: Any, texts: list[str] | None, metrics: dict[str, Any]
) -> tuple[str, list[list[str]]]:
    """A text run's most confident test mistakes: (a caption, table rows of text, true, predicted, confidence)."""
    from mnistlab.metrics import softmax

    if logits is None or labels is None or texts is None:
        raise ValueError("no test logits and texts given (evaluate the run to list them)")
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels) == len(texts) == len(logits):
        raise ValueError(f"{len(logits)} logits for {len(labels)} labels and {len(texts)} texts")
    classes = [str(r["class"]) for r in metrics.get("per_class") or []]
    probs = softmax(logits)
    preds = probs.argmax(1)
    wrong = np.flatnonzero(preds != labels)
    conf = probs[wrong, preds[wrong]]
    worst = wrong[np.argsort(-conf, kind="stable")][:MAX_MISTAKES]
    name = (lambda k: classes[k]) if classes else str
    rows = [[texts[i] if len(texts[i]) <= 200 else texts[i][:199] + "…", name(int(labels[i])), name(int(preds[i])),
             f"{probs[i, preds[i]]:.2f}"] for i in worst]
    caption = (f"{len(worst)} most confident of {len(wrong):,} mistakes ({len(wrong) / max(len(labels), 1):.2%} "
               f"of the test split)" if len(wrong) else "No misclassified test texts.")
    return caption, rows


def _loaded(images: Any) -> Any:
    """A tensor of the images (a streamed Dataset's view is read)."""
    return images.load() if hasattr(images, "load") else images


def torch_index(idx: np.ndarray) -> Any:
    """numpy indices -> a torch LongTensor (for indexing the dataset's tensors)."""
    import torch

    return torch.as_tensor(np.asarray(idx, dtype=np.int64))


def _samples(path: Path, config: dict[str, Any], data: _Lazy) -> Path:
    """The first batch of epoch 1 as the training loop builds it, normalised and rendered back."""
    import torch

    from mnistlab.data import BatchIterator, split_indices
    from mnistlab.data.augment import augment_kind, augment_text
    from mnistlab.data.loader import normalisation
    from mnistlab.plots import save_image_grid

    d = data()
    seed = int(config.get("seed") or 0)
    train_idx, _ = split_indices(d.train_labels, float(config.get("valid_fraction") or 0.0), seed,
                                 bool(config.get("stratify", False)))
    augment = augment_kind(config.get("augment"), d.in_channels, d.image_size, config.get("rotate"),
                           config.get("zoom"))
    if isinstance(d.train_images, torch.Tensor):
        batches = BatchIterator(
            d.train_images[train_idx], d.train_labels[train_idx], batch_size=MAX_SAMPLES, mean=d.mean, std=d.std,
            shuffle=True, seed=seed, augment=augment,
        )
    else:  # a Dataset streamed from disk: its first batch, read as training reads it
        from mnistlab.data.given import StreamBatches

        batches = StreamBatches(d.train_images[train_idx], d.train_labels[train_idx], batch_size=MAX_SAMPLES,
                                mean=d.mean, std=d.std, seed=seed, device="cpu")
    batches.set_epoch(1)
    x, y = next(iter(batches))
    # Undo the normalisation exactly as applied: x = pixel * scale + shift.
    scale, shift = normalisation(d.mean, d.std, x.shape[1])
    pixels = ((x - shift.to(x.dtype)) / scale.to(x.dtype)).round().clamp(0, 255).to(torch.uint8)
    classes = [str(c) for c in d.classes]
    how = f"augmented ({augment_text(augment)}), " if augment else ""
    return save_image_grid(
        pixels, [classes[int(k)][:10] for k in y], path, ncols=8,
        title=f"training inputs, {how}normalised with mean {_fmt_list(d.mean)} std {_fmt_list(d.std)} and rendered back",
    )


def _fmt_list(values: Any) -> str:
    vals = list(values) if isinstance(values, (list, tuple)) else [values]
    return ",".join(f"{float(v):.3f}" for v in vals)


# ----------------------------------------------------------------------------- the report

Block = tuple[Any, ...]


def _scored_label(summary: dict[str, Any], checkpoint: str | None, epoch: int | None) -> str | None:
    """`last (epoch 7)`: the checkpoint whose test metrics the report shows."""
    if checkpoint is None:
        # Written by train: it scored best.pt (the best epoch), or last.pt when no epoch improved.
        checkpoint = summary.get("checkpoint")
        epoch = summary.get("best_epoch") if checkpoint == "best" else summary.get("epochs_run")
    if checkpoint is None:
        return None
    return f"{checkpoint} (epoch {epoch})" if epoch is not None else str(checkpoint)


def _report_blocks(
    run: Run, config: dict[str, Any], summary: dict[str, Any], history: list[dict[str, Any]],
    metrics: dict[str, Any], result: ReportResult, plots: list[str],
    mistakes: tuple[str, list[list[str]]] | None = None, scored: str | None = None,
) -> list[Block]:
    import yaml

    b: list[Block] = [("h1", f"Run {run.name}")]
    facts = [*run_facts(config, summary, history), ("checkpoint scored", scored)]
    b.append(("table", ["run", "value"], [[k, "-" if v is None else str(v)] for k, v in facts]))

    b.append(("h2", "Test metrics"))
    if metrics.get("accuracy") is not None:
        b.append(("table", *metrics_table(metrics, "texts" if config.get("task") == "text" else "images")))
        headers, per = per_class_table(metrics)
        if per:
            b.append(("h3", "Per class"))
            b.append(("table", headers, per))
    elif summary.get("test_texts") == 0:
        b.append(("p", "No test metrics: this run has no test split (test fraction 0)."))
    else:
        b.append(("p", "No test metrics yet (the run did not finish)."))

    for name in plots:
        b.append(("h2", _CAPTIONS[name]))
        if name in result.plots:
            b.append(("img", _CAPTIONS[name], f"plots/{name}.png"))
        else:
            b.append(("p", f"Not drawn: {result.failed.get(name, 'unknown error')}"))
    if config.get("task") == "text":
        b.append(("h2", "The most confident mistakes on the test split"))
        if mistakes is None:
            b.append(("p", f"Not listed: {result.failed.get('mistakes', 'unknown error')}"))
        else:
            caption, rows = mistakes
            b.append(("p", caption))
            if rows:
                b.append(("table", ["text", "true", "predicted", "confidence"], rows))

    if history:
        b.append(("h2", "Per epoch"))
        b.append(("table", ["epoch", "train loss", "train acc", "valid loss", "valid acc", "lr", "seconds"],
                  [[str(r["epoch"]), _num(r.get("train_loss")), _num(r.get("train_accuracy")),
                    _num(r.get("valid_loss")), _num(r.get("valid_accuracy")),
                    "-" if r.get("lr") is None else f"{r['lr']:.3g}", _num(r.get("train_seconds"), 1)]
                   for r in history]))

    b.append(("h2", "Config"))
    b.append(("pre", yaml.safe_dump(config, sort_keys=False, default_flow_style=None).rstrip()))
    if result.failed:
        b.append(("h2", "Problems while writing this report"))
        b.append(("ul", [f"{k}: {v}" for k, v in result.failed.items()]))
    return b


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            out += [block[1], ""]
        elif kind == "table":
            headers, rows = block[1], block[2]
            out.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
            out.append("|" + "|".join("---" for _ in headers) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
            out.append("")
        elif kind == "img":
            out += [f"![{block[1]}]({block[2]})", ""]
        elif kind == "pre":
            out += ["```yaml", block[1], "```", ""]
        elif kind == "ul":
            out += [f"- {item}" for item in block[1]] + [""]
    return "\n".join(out)


def _to_html(blocks: list[Block], title: str) -> str:
    e = html.escape
    out = [
        "<!doctype html>", "<html><head><meta charset='utf-8'>", f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "td:first-child{text-align:left}img{max-width:100%}pre{background:#f4f4f4;padding:.5em}</style>",
        "</head><body>",
    ]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{e(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(block[1])}</p>")
        elif kind == "table":
            out.append(html_table(block[1], block[2]))
        elif kind == "img":
            out.append(f"<p><img src='{e(block[2])}' alt='{e(block[1])}'></p>")
        elif kind == "pre":
            out.append(f"<pre>{e(block[1])}</pre>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in block[1]) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"

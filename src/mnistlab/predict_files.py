"""Predicting many images: every input streamed through the model in batches, the predictions written
as they come (to stdout, or atomically to a CSV file), and the metrics of the inputs that have labels.

Two CSV layouts:

- `kaggle`: exactly `ImageId,Label`, ImageId counting from 1 over all inputs in order (the
  submission file of Kaggle's digit-recognizer);
- `full`: `source,index,prediction,confidence`, then `top1_label,top1_probability,...` for the
  top-k classes. `source` is the input (an image file's path, a CSV, an array file, NAME:SPLIT),
  `index` the image's position in it, from 0.

Memory stays bounded by the batch size: a batch is read, predicted and written before the next
is read. Only the logits of labelled images are kept, 4 bytes per class per image, for the metrics.

Example:
    >>> from mnistlab.predict import Predictor                                # doctest: +SKIP
    >>> predictor = Predictor.from_run("runs/fast")                            # doctest: +SKIP
    >>> sources = open_inputs(["test.csv"], predictor)                         # doctest: +SKIP
    >>> outcome = predict_to_csv(predictor, sources, "submission.csv", "kaggle")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from mnistlab.errors import DataError, UsageError
from mnistlab.predict import Batch, Predictor, probabilities
from mnistlab.predict_inputs import object_sources
from mnistlab.predict_inputs import open_inputs  # noqa: F401 - part of this module's API (see the example)
from mnistlab.signals import sigterm_as_interrupt

FORMATS = ("auto", "kaggle", "full")
PREPROCESS = ("auto", "photo", "none")


@dataclass
class Outcome:
    """What a prediction pass did: images predicted, seconds (read + predict + write), metrics if labelled."""

    images: int = 0
    seconds: float = 0.0
    labelled: int = 0
    metrics: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        """Throughput of the whole pass."""
        return self.images / self.seconds if self.seconds > 0 else 0.0


def choose_format(fmt: str, sources: Sequence[Any]) -> str:
    """`auto` is kaggle when every input is a CSV without labels (Kaggle's test.csv), else full."""
    if fmt not in FORMATS:
        raise UsageError(f"bad format {fmt!r}: choose {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    return "kaggle" if all(s.kind == "csv" and not s.has_labels for s in sources) else "full"


def uses_photo_preprocessing(preprocess: str, source: Any) -> bool:
    """`auto`: image files get the MNIST-style preprocessing, arrays (CSV, .npy, IDX, datasets) do not."""
    if preprocess not in PREPROCESS:
        raise UsageError(f"bad --preprocess {preprocess!r}: choose {', '.join(PREPROCESS)}")
    return source.kind == "images" if preprocess == "auto" else preprocess == "photo"


def _places(source: Any, batch: Batch) -> list[tuple[str, int]]:
    """(source, index) of each image of a batch: an image file is its own source, at index 0."""
    if batch.names:
        return [(name, 0) for name in batch.names]
    return [(source.name, batch.start + i) for i in range(len(batch.images))]


class KaggleWriter:
    """`ImageId,Label` rows, ImageId from 1 across every input."""

    def __init__(self, text: IO[str], classes: Sequence[str]) -> None:
        self.rows = csv.writer(text, lineterminator="\n")
        self.rows.writerow(["ImageId", "Label"])
        self.classes = list(classes)
        self.next_id = 1

    def write(self, source: Any, batch: Batch, probs: np.ndarray) -> None:
        """Write one batch's rows."""
        labels = [self.classes[i] for i in probs.argmax(axis=1)]
        self.rows.writerows(zip(range(self.next_id, self.next_id + len(labels)), labels))
        self.next_id += len(labels)


class FullWriter:
    """`source,index,prediction,confidence` and the top-k `label,probability` pairs."""

    def __init__(self, text: IO[str], classes: Sequence[str], top_k: int = 3) -> None:
        self.rows = csv.writer(text, lineterminator="\n")
        self.classes = list(classes)
        self.k = max(1, min(int(top_k), len(self.classes)))
        pairs = [f"top{i}_{what}" for i in range(1, self.k + 1) for what in ("label", "probability")]
        self.rows.writerow(["source", "index", "prediction", "confidence", *pairs])

    def write(self, source: Any, batch: Batch, probs: np.ndarray) -> None:
        """Write one batch's rows."""
        order = np.argsort(-probs, axis=1, kind="stable")[:, : self.k]
        top = np.take_along_axis(probs, order, axis=1)
        rows = []
        for (name, index), classes, ps in zip(_places(source, batch), order, top):
            pairs = [v for c, p in zip(classes, ps) for v in (self.classes[c], f"{p:.6f}")]
            rows.append([name, index, self.classes[classes[0]], f"{ps[0]:.6f}", *pairs])
        self.rows.writerows(rows)


class LineWriter:
    """`mnistlab predict`'s lines on stdout: `name  digit  confidence`, the top-k pairs, or JSON."""

    def __init__(self, predictor: Predictor, stream: IO[str], *, as_json: bool = False, top_k: int = 1,
                 pairs: bool = False) -> None:
        self.predictor, self.stream, self.as_json, self.pairs = predictor, stream, as_json, pairs
        self.k = max(1, min(int(top_k), len(predictor.classes)))

    def write(self, source: Any, batch: Batch, probs: np.ndarray) -> None:
        """Print one batch's lines (an array's images are named SOURCE:INDEX)."""
        lines = []
        for (name, index), p in zip(_places(source, batch), probs):
            r = self.predictor.to_prediction(name if batch.names else f"{name}:{index}", p, self.k)
            lines.append(json.dumps(r.to_json()) if self.as_json else r.to_line(self.k if self.pairs else 1))
        if lines:
            self.stream.write("\n".join(lines) + "\n")


def predict_sources(predictor: Predictor, sources: Sequence[Any], sink: Any, *, batch_size: int = 1000,
                    preprocess: str = "auto") -> Outcome:
    """Stream every source through the model, `batch_size` images at a time, into `sink.write`.

    Returns:
        The Outcome; its `metrics` (the keys of `mnistlab evaluate --json`, from
        `mnistlab.scoring.score`) cover the images that have labels, None when none has.
    """
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    outcome = Outcome()
    logits_parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    started = time.perf_counter()
    for source in sources:
        photo = uses_photo_preprocessing(preprocess, source)
        for batch in source.batches(batch_size, photo):
            logits = predictor.predict_logits(batch.images)
            sink.write(source, batch, probabilities(logits))
            outcome.images += len(logits)
            if batch.labels is not None:
                logits_parts.append(logits)
                label_parts.append(batch.labels)
    outcome.seconds = time.perf_counter() - started
    outcome.errors = [message for source in sources for message in source.errors]
    if label_parts:
        outcome.metrics = _score(np.concatenate(logits_parts), np.concatenate(label_parts), predictor.classes)
        outcome.metrics["tta"] = bool(predictor.tta)
        outcome.labelled = int(outcome.metrics["samples"])
    return outcome


def _score(logits: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    import torch

    from mnistlab.scoring import score

    return score(torch.from_numpy(logits), torch.from_numpy(labels), list(classes))


def predict_to_csv(predictor: Predictor, sources: Sequence[Any], out: str | Path, fmt: str = "auto", *,
                   top_k: int = 3, batch_size: int = 1000, preprocess: str = "auto") -> Outcome:
    """Predict every source into the CSV file `out`, written atomically (temp file, then rename).

    `fmt` is kaggle, full or auto (see `choose_format`). If anything fails (a bad row, Ctrl-C,
    SIGTERM) or nothing could be predicted, no file is left under `out` (a previous file stays as it was).
    """
    from mnistlab.training.checkpoint import atomic_write_bytes

    fmt = choose_format(fmt, sources)
    outcomes: list[Outcome] = []

    def write(fh: IO[bytes]) -> None:
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        try:
            sink = KaggleWriter(text, predictor.classes) if fmt == "kaggle" else \
                FullWriter(text, predictor.classes, top_k)
            result = predict_sources(predictor, sources, sink, batch_size=batch_size, preprocess=preprocess)
            if not result.images:
                raise DataError(f"nothing was predicted, so {out} was not written")
            outcomes.append(result)
        finally:
            text.flush()
            text.detach()  # atomic_write_bytes closes the file itself

    with sigterm_as_interrupt():  # `timeout`, a scheduler: the temp file goes too, as on Ctrl-C
        atomic_write_bytes(Path(out), write)
    return outcomes[0]


class Predictions(NamedTuple):
    """What `Run.predict` returns: `labels, probabilities = run.predict(images)`."""

    labels: list[str]  # the predicted class of each image (its name: "7" for MNIST's digit 7), in input order
    probabilities: np.ndarray  # float32 [N, K]: column k is the k-th class of the model (MNIST: digit k)


class _Collect:
    """A sink keeping every batch's probabilities, in order."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []

    def write(self, source: Any, batch: Batch, probs: np.ndarray) -> None:
        self.parts.append(probs)


def predict_objects(predictor: Predictor, images: Any, *, preprocess: str = "auto",
                    batch_size: int = 1000) -> Predictions:
    """Predict Python objects and paths (see `predict_inputs.object_sources`) in input order.

    Raises:
        DataError: an image that cannot be read or used (nothing is skipped silently: the labels
            line up with the inputs), or no image at all (an empty folder).
    """
    if preprocess not in PREPROCESS:
        raise UsageError(f"bad preprocess {preprocess!r}: choose {', '.join(PREPROCESS)}")
    sink = _Collect()
    outcome = predict_sources(predictor, object_sources(images, predictor, preprocess), sink,
                              batch_size=batch_size, preprocess=preprocess)
    if outcome.errors:
        more = f" (and {len(outcome.errors) - 1} more)" if len(outcome.errors) > 1 else ""
        raise DataError(f"{outcome.errors[0]}{more}")
    if not sink.parts:
        raise DataError("nothing to predict: no image found in the input")
    probs = np.concatenate(sink.parts)
    return Predictions([predictor.classes[int(k)] for k in probs.argmax(axis=1)], probs)

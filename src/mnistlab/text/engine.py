"""Text runs: `train_text` on a labelled CSV, and using a trained text run (load, predict, evaluate, similarity).

Training is the shared trainer with a `mnistlab.tasks.text.TextTask`, so text runs get the same
loop, checkpoints, early stopping, metrics.csv, summary.json, callbacks and resume as image runs,
and `mnistlab evaluate` and the results tooling read them alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from mnistlab.config import TrainConfig
from mnistlab.errors import MnistlabError, UsageError
from mnistlab.runs import Run, load_run
from mnistlab.scoring import score
from mnistlab.tasks.text import TextTask, saved_classes
from mnistlab.text.csvdata import TextData, read_text_csv, split_text_indices
from mnistlab.text.model import TextClassifier, encode_texts, model_from_checkpoint, pad_batch, text_logits
from mnistlab.text.settings import TEXT_KEYS, TRAIN_KEYS, TextSettings, absolute_data, resolve_text
from mnistlab.text.vocab import Vocab
from mnistlab.training.callbacks import Callback
from mnistlab.training.checkpoint import load_checkpoint
from mnistlab.training.hardware import select_device
from mnistlab.training.resume import resume_changes, resumed_run
from mnistlab.training.strategy import make_strategy
from mnistlab.training.trainer import Trainer

__all__ = [
    "TextRun", "TextSettings", "cosine_similarity", "encode_texts", "evaluate_text", "load_text_run", "predict_text",
    "text_logits", "train_text", "write_text_report",
]


def train_text(
    data: str = "builtin:sentiment", config: TrainConfig | dict[str, Any] | None = None, *,
    callbacks: Iterable[Callback] | None = None, **settings: Any,
) -> Run:
    """Train a recurrent text classifier on a labelled CSV and return its run folder.

    Args:
        data: a CSV path with a header row, or `builtin:sentiment` (the shipped
            English/Korean sentiment set).
        config: training settings (optimizer, lr, epochs, batch_size, seed, valid_fraction,
            patience, device, out, name, progress, plots, tensorboard...) as a TrainConfig or a
            dict; None means the text defaults (adam, lr 3e-3, 10 epochs, batch 32, clip-grad 1).
        callbacks: extra `mnistlab.Callback`s, called after the built-in ones at each hook.
        **settings: TextSettings fields (text_column, label_column, model, bidirectional,
            embed_dim, hidden, layers, dropout, max_len, vocab_size, min_freq,
            test_fraction) or TrainConfig fields that override `config`'s.

    Returns:
        The Run: config.yaml (task: text), metrics.csv, summary.json (test metrics),
        environment.json, vocab.json, labels.json, checkpoints/best.pt and last.pt.

    Example:
        >>> run = train_text("builtin:sentiment", epochs=5, model="gru")   # doctest: +SKIP
        >>> run.summary["accuracy"]                                        # doctest: +SKIP
    """
    if config is None:
        cfg = TrainConfig(epochs=None)
    elif isinstance(config, dict):
        cfg = TrainConfig.from_dict({k: v for k, v in config.items() if k in TRAIN_KEYS}, "config")
    else:
        cfg = config
    unknown = set(settings) - TEXT_KEYS - TRAIN_KEYS
    if unknown:
        raise UsageError(f"unknown text setting(s): {', '.join(sorted(unknown))}")
    train_over = {k: v for k, v in settings.items() if k in TRAIN_KEYS and k not in ("model", "dataset")}
    cfg = dataclasses.replace(cfg, **train_over)
    if cfg.resume:
        text, cfg, resume_from = _resume_text_config(cfg, data, settings)
    else:
        text = TextSettings(data=absolute_data(data), **{k: v for k, v in settings.items() if k in TEXT_KEYS - {"data"}})
        cfg, resume_from = resolve_text(text, cfg), None
    strategy = make_strategy(cfg.device, cfg.threads)
    return Trainer(TextTask(text), cfg, strategy=strategy, callbacks=callbacks or (), resume_from=resume_from).fit()


def _resume_text_config(
    requested: TrainConfig, data: str, settings: dict[str, Any]
) -> tuple[TextSettings, TrainConfig, Run]:
    """The resumed text run's own settings; only RESUME_MAY_CHANGE (and where its CSV is) come from the request."""
    run = resumed_run(requested, "text", also_given={k: v for k, v in settings.items() if k in TEXT_KEYS - {"data"}})
    saved = run.config
    text = TextSettings(**{k: v for k, v in saved.items() if k in TEXT_KEYS})
    if not data.startswith("builtin:"):
        text = dataclasses.replace(text, data=absolute_data(data))  # --data with --resume: its CSV, moved
    cfg = TrainConfig.from_dict({k: v for k, v in saved.items() if k in TRAIN_KEYS}, f"{run.path}/config.yaml")
    return text, resolve_text(text, dataclasses.replace(cfg, **resume_changes(requested, cfg, run))), run


def write_text_report(
    run: Run, logits: torch.Tensor | None, texts: list[str], labels: torch.Tensor, warn: Callable[[str], None],
    checkpoint: str | None = None, checkpoint_epoch: int | None = None,
) -> None:
    """Plots and report.md/html of a text run's test split (scored with `checkpoint` of that epoch); a failure
    is a warning, never an error."""
    try:
        from mnistlab import report
    except ImportError:  # matplotlib missing: the run itself is complete
        return
    try:
        report.write_run_report(run, test_logits=logits, test_texts=texts, test_labels=labels.cpu().numpy(),
                                checkpoint=checkpoint, checkpoint_epoch=checkpoint_epoch)
    except Exception as exc:  # noqa: BLE001 - a plot must never lose a finished run
        warn(f"could not write plots/report for {run.path}: {exc}")


# ----------------------------------------------------------------------------- using a trained run

@dataclass
class TextRun:
    """A trained text run loaded for use: its model (eval mode), vocabulary, classes and settings."""

    run: Run
    model: TextClassifier
    vocab: Vocab
    classes: list[str]
    config: dict[str, Any]
    epoch: int | None

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return encode_texts(texts, self.vocab, int(self.config.get("max_len") or 200))


def load_text_run(run: str | Path | Run, checkpoint: str = "best") -> TextRun:
    """Open a text run folder: rebuild its model from a checkpoint and read vocab.json / labels.json."""
    if checkpoint not in ("best", "last"):
        raise UsageError(f"bad checkpoint {checkpoint!r}: choose best or last")
    run = load_run(run)
    config = run.config
    if config.get("task") != "text":
        raise UsageError(f"{run.path} is not a text run (its config.yaml has no `task: text`)")
    path = run.checkpoint_path(checkpoint)
    if not path.is_file() and checkpoint == "best":
        path = run.checkpoint_path("last")  # a run stopped before its first epoch ended has only last.pt
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, str(path))
    vocab = Vocab.load(run.path / "vocab.json")
    classes = saved_classes(run, ckpt)
    if len(vocab) != model.embedding.num_embeddings:
        raise MnistlabError(
            f"{run.path}/vocab.json has {len(vocab)} entries but the model has {model.embedding.num_embeddings}"
        )
    return TextRun(run, model, vocab, classes, config, ckpt.get("epoch"))


def predict_text(
    run: str | Path | Run | TextRun, texts: Sequence[str], *, checkpoint: str = "best"
) -> list[dict[str, Any]]:
    """Classify texts with a trained text run.

    Returns:
        One dict per text: text, label (the most likely class), confidence (its softmax
        probability) and probabilities ({class: probability}).

    Example:
        >>> predict_text("runs/text-lstm", ["what a great film"])[0]["label"]   # doctest: +SKIP
        'positive'
    """
    tr = run if isinstance(run, TextRun) else load_text_run(run, checkpoint)
    if not texts:
        return []
    probs = torch.softmax(text_logits(tr.model, tr.encode(texts)), dim=1)
    out = []
    for t, p in zip(texts, probs.tolist()):
        k = max(range(len(p)), key=p.__getitem__)
        out.append({"text": t, "label": tr.classes[k], "confidence": p[k],
                    "probabilities": dict(zip(tr.classes, p))})
    return out


def evaluate_text(
    run: str | Path | Run, split: str = "test", *, checkpoint: str = "best", device: str = "auto",
    plots: bool = False,
) -> dict[str, Any]:
    """Metrics of a text run on one split of its CSV, recreated from the run's seed and fractions.

    Returns the same dict as `mnistlab.evaluate` for image runs: accuracy, precision_macro,
    recall_macro, f1_macro, auc_macro, confusion_matrix, per_class, samples, loss, split,
    checkpoint, epoch. With plots (and split "test"), also rewrites the run's plots and report.
    """
    if split not in ("test", "valid", "train"):
        raise UsageError(f"bad split {split!r}: choose test, valid or train")
    tr = load_text_run(run, checkpoint)
    c = tr.config
    rows: TextData = read_text_csv(c["data"], c.get("text_column", "text"), c.get("label_column", "label"),
                                   classes=tr.classes)
    train_idx, valid_idx, test_idx = split_text_indices(
        len(rows.texts), float(c.get("test_fraction", 0.2)), float(c.get("valid_fraction") or 0.0),
        int(c.get("seed", 0)),
    )
    idx = {"train": train_idx, "valid": valid_idx, "test": test_idx}[split]
    if not idx:
        raise UsageError(f"this run has no {split} split (its fraction was 0)")
    dev = select_device(device)
    model = tr.model.to(dev)
    logits = text_logits(model, tr.encode([rows.texts[i] for i in idx]), device=dev,
                         batch_size=int(c.get("eval_batch_size") or 512))
    labels = torch.tensor([rows.labels[i] for i in idx], dtype=torch.long)
    metrics = score(logits, labels, tr.classes)
    metrics.update(split=split, checkpoint=checkpoint, epoch=tr.epoch)
    if plots and split == "test":
        import sys

        write_text_report(load_run(run), logits, [rows.texts[i] for i in idx], labels,
                          lambda message: print(f"warning: {message}", file=sys.stderr), checkpoint, tr.epoch)
    return metrics


def cosine_similarity(
    run: str | Path | Run | TextRun, a: str, b: str, method: str = "embedding", *, checkpoint: str = "best"
) -> float:
    """Cosine similarity in [-1, 1] of two texts under a trained text run.

    Args:
        run: a text run folder (or a loaded TextRun, to avoid reloading for many pairs).
        a, b: the two texts (tokenized like the training data; unknown words are <unk>).
        method: "embedding" — the mean of the texts' word embeddings, padding excluded
            (a bag of words: word order does not matter); "encoder" — the recurrent
            encoder's final hidden state, the features the classifier reads (order matters,
            and texts the model scores alike tend to be close).

    Returns:
        A float in [-1, 1]; identical texts give 1.0. If both vectors are all zeros the
        texts are treated as identical (1.0); if only one is, 0.0.

    Example:
        >>> cosine_similarity("runs/text-lstm", "great movie", "great movie")   # doctest: +SKIP
        1.0
    """
    if method not in ("embedding", "encoder"):
        raise UsageError(f"bad method {method!r}: choose embedding or encoder")
    tr = run if isinstance(run, TextRun) else load_text_run(run, checkpoint)
    x = pad_batch(tr.encode([a, b]))
    with torch.no_grad():
        vecs = (tr.model.embed_mean(x) if method == "embedding" else tr.model.encode(x)).double()
    u, v = vecs[0], vecs[1]
    nu, nv = float(u.norm()), float(v.norm())
    if nu == 0.0 or nv == 0.0:
        return 1.0 if nu == nv else 0.0
    # float64 so identical texts come out at 1.0 to ~1e-15; clamp removes any rounding past +-1.
    return float(torch.clamp(torch.dot(u, v) / (nu * nv), -1.0, 1.0))

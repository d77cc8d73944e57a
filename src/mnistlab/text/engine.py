"""Text runs: CSV -> tokens -> vocabulary -> recurrent classifier, with the image engine's loop and run folder.

The flow mirrors `mnistlab.training.engine._Trainer.run` (same optimizer, scheduler, epoch
loop, early stopping, checkpoints, metrics.csv and summary.json), so `mnistlab evaluate`
and the results tooling read text runs like image runs. What differs: the data (a CSV,
split into train/valid/test by seed), the batches ((ids, lengths), labels) and the
extra files vocab.json and labels.json that predict needs to reproduce the encoding.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.nn import functional as F

import mnistlab
from mnistlab.config import GLOBAL_DEFAULTS, TrainConfig, validate
from mnistlab.errors import MnistlabError, TrainingDiverged, UsageError
from mnistlab.evaluation import score
from mnistlab.runs import Run, create_run_dir, load_run, run_summary, write_json, write_metrics_csv, write_yaml
from mnistlab.text.csvdata import TextData, read_text_csv, split_text_indices
from mnistlab.text.model import TextBatches, TextClassifier, pad_batch
from mnistlab.text.tokenizer import tokenize
from mnistlab.text.vocab import Vocab
from mnistlab.training.checkpoint import load_checkpoint, load_model_state, save_training_checkpoint
from mnistlab.training.early_stopping import EarlyStopping
from mnistlab.training.engine import (
    _find_run, build_optimizer, build_scheduler, early_stop_reason, environment_info, epoch_row,
    restore_last_checkpoint, resume_changes, run_epoch, run_task, seed_everything, select_device, set_rng_state,
    training_state,
)
from mnistlab.training.progress import Reporter


@dataclass
class TextSettings:
    """The text-specific settings of a run (written to config.yaml beside the TrainConfig fields)."""

    data: str = "builtin:sentiment"
    text_column: str = "text"
    label_column: str = "label"
    model: str = "lstm"  # rnn, lstm or gru
    bidirectional: bool = False
    embed_dim: int = 64
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.0
    max_len: int = 200  # tokens kept per text (the first ones)
    vocab_size: int = 20_000  # including <pad> and <unk>
    min_freq: int = 1
    test_fraction: float = 0.2


# Training defaults for text runs where the caller sets nothing: small data, small batches.
TEXT_TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 10, "batch_size": 32, "lr": 3e-3, "optimizer": "adam", "clip_grad": 1.0,
}
_TEXT_KEYS = {f.name for f in dataclasses.fields(TextSettings)}
_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}


def _resolve(settings: TextSettings, cfg: TrainConfig) -> TrainConfig:
    """Fill the TrainConfig's Nones (text defaults, then global ones) and validate, without the image model registry."""
    values = dataclasses.asdict(cfg)
    for key, default in {**GLOBAL_DEFAULTS, **TEXT_TRAIN_DEFAULTS}.items():
        if values.get(key) is None:
            values[key] = TEXT_TRAIN_DEFAULTS.get(key, default)
    values["betas"] = tuple(float(b) for b in values["betas"])
    values.update(model=settings.model, dataset=settings.data, model_options={})
    resolved = TrainConfig(**values)
    validate(resolved)
    if not 0 <= settings.test_fraction < 1:
        raise UsageError(f"bad test-fraction {settings.test_fraction!r}: must be in [0, 1)")
    for name in ("max_len", "min_freq", "vocab_size"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "vocab_size" else 1):
            raise UsageError(f"bad {name.replace('_', '-')} {value!r}: expected a larger whole number")
    return resolved


def _abs_data(data: str) -> str:
    # A relative CSV path is stored absolute so evaluate/predict work from any directory.
    return data if data.startswith("builtin:") else str(Path(data).expanduser().resolve())


def encode_texts(texts: Sequence[str], vocab: Vocab, max_len: int) -> list[list[int]]:
    """Tokenize and index texts exactly as training did (empty -> [<unk>], cut to max_len)."""
    return [vocab.encode(tokenize(t), max_len) for t in texts]



@torch.no_grad()
def text_logits(
    model: TextClassifier, seqs: Sequence[Sequence[int]], *, device: torch.device | str = "cpu", batch_size: int = 512
) -> torch.Tensor:
    """Float32 logits [N, K] on the CPU, in eval mode (dropout off)."""
    was_training = model.training
    model.eval()
    outs = [model(x).float().cpu() for x, _ in TextBatches(seqs, [0] * len(seqs), batch_size=batch_size, device=device)]
    model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0, model.classifier.out_features)


def train_text(
    data: str = "builtin:sentiment", config: TrainConfig | dict[str, Any] | None = None, **settings: Any
) -> Run:
    """Train a recurrent text classifier on a labelled CSV and return its run folder.

    Args:
        data: a CSV path with a header row, or `builtin:sentiment` (the shipped
            English/Korean sentiment set).
        config: training settings (optimizer, lr, epochs, batch_size, seed, valid_fraction,
            patience, device, out, name, progress...) as a TrainConfig or a dict; None means
            the text defaults (adam, lr 3e-3, 10 epochs, batch 32, clip-grad 1).
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
        cfg = TrainConfig.from_dict({k: v for k, v in config.items() if k in _TRAIN_KEYS}, "config")
    else:
        cfg = config
    unknown = set(settings) - _TEXT_KEYS - _TRAIN_KEYS
    if unknown:
        raise UsageError(f"unknown text setting(s): {', '.join(sorted(unknown))}")
    text = TextSettings(data=data, **{k: v for k, v in settings.items() if k in _TEXT_KEYS and k != "data"})
    train_over = {k: v for k, v in settings.items() if k in _TRAIN_KEYS and k not in ("model", "dataset")}
    cfg = dataclasses.replace(cfg, **train_over)
    if cfg.resume:
        text, cfg, resume_from = _resume_text_config(cfg)
        return _TextTrainer(text, cfg, resume_from).run()
    text = dataclasses.replace(text, data=_abs_data(text.data))
    return _TextTrainer(text, _resolve(text, cfg)).run()


def _resume_text_config(requested: TrainConfig) -> tuple[TextSettings, TrainConfig, Run]:
    """The resumed text run's own settings; only epochs (to extend), device and progress may change."""
    run = _find_run(requested.resume, requested.out)
    if run_task(run) != "text":
        raise UsageError(f"{run.path} is not a text run: resume it with mnistlab train --resume {run.path}")
    saved = run.config
    text = TextSettings(**{k: v for k, v in saved.items() if k in _TEXT_KEYS})
    cfg = TrainConfig.from_dict({k: v for k, v in saved.items() if k in _TRAIN_KEYS}, f"{run.path}/config.yaml")
    return text, _resolve(text, dataclasses.replace(cfg, **resume_changes(requested, cfg, run))), run


class _TextTrainer:
    """One text run, top to bottom (the same stages as the image _Trainer)."""

    def __init__(self, text: TextSettings, cfg: TrainConfig, resume_from: Run | None = None) -> None:
        self.text, self.cfg, self.resume_from = text, cfg, resume_from
        self.reporter = Reporter(cfg.progress)

    def run(self) -> Run:
        text, cfg, rep = self.text, self.cfg, self.reporter
        started = time.perf_counter()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = select_device(cfg.device)
        seed_everything(cfg.seed)

        # data: split first, then the vocabulary from the training split only
        rows = read_text_csv(text.data, text.text_column, text.label_column)
        train_idx, valid_idx, test_idx = split_text_indices(
            len(rows.texts), text.test_fraction, cfg.valid_fraction, cfg.seed
        )
        if not train_idx:
            raise MnistlabError(f"{rows.source} has too few rows ({len(rows.texts)}) to train on")
        if cfg.patience > 0 and not valid_idx:
            raise UsageError("--patience needs a validation split: set --valid-fraction above 0")
        tokens = [tokenize(t) for t in rows.texts]
        if self.resume_from is not None:
            # The run's own vocabulary and classes: a CSV edited since then must not re-index the words.
            vocab = Vocab.load(self.resume_from.path / "vocab.json")
            saved_classes = load_text_run(self.resume_from, "last").classes
            if list(rows.classes) != list(saved_classes):
                raise MnistlabError(
                    f"{rows.source} now has classes {list(rows.classes)}, but {self.resume_from.path} was trained "
                    f"on {list(saved_classes)}: restore the CSV or start a new run"
                )
        else:
            vocab = Vocab.build((tokens[i] for i in train_idx), min_freq=text.min_freq, max_size=text.vocab_size)
        seqs = [vocab.encode(t, text.max_len) for t in tokens]
        labels = torch.tensor(rows.labels, dtype=torch.long)

        def part(idx: list[int]) -> tuple[list[list[int]], torch.Tensor]:
            return [seqs[i] for i in idx], labels[idx]

        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = part(train_idx), part(valid_idx), part(test_idx)

        # model
        options = {
            "vocab_size": len(vocab), "num_classes": len(rows.classes), "cell": text.model,
            "embed_dim": text.embed_dim, "hidden": text.hidden, "layers": text.layers,
            "bidirectional": text.bidirectional, "dropout": text.dropout,
        }
        model = TextClassifier(**options).to(device)
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        # fp32 only: bf16 gains little for small recurrent nets and costs accuracy.
        autocast = nullcontext()

        batches = TextBatches(train_x, train_y.tolist(), batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
                              drop_last=cfg.drop_last, device=device)
        steps_per_epoch = len(batches)
        if steps_per_epoch == 0:
            raise UsageError(
                f"batch size {cfg.batch_size} is larger than the {len(train_x)} training texts with drop_last"
            )
        total_epochs = math.ceil(cfg.epochs)
        total_steps = max(1, round(cfg.epochs * steps_per_epoch))
        optimizer = build_optimizer(cfg, model, device)
        scheduler = build_scheduler(cfg, optimizer, total_steps, steps_per_epoch)
        early = EarlyStopping(patience=cfg.patience)
        data_meta = {
            "task": "text", "name": text.data, "classes": list(rows.classes), "text_column": text.text_column,
            "label_column": text.label_column, "max_len": text.max_len,
        }

        # run folder (or the resumed one)
        history: list[dict[str, Any]] = []
        start_epoch, train_seconds = 1, 0.0
        if self.resume_from is not None:
            path = self.resume_from.path
            resumed = restore_last_checkpoint(self.resume_from, model, optimizer, scheduler, early, epochs=cfg.epochs)
            set_rng_state(resumed.checkpoint["rng"])
            history, start_epoch, train_seconds = resumed.history, resumed.start_epoch, resumed.train_seconds
            rep.info(f"resuming {path} from epoch {start_epoch}")
        else:
            path = create_run_dir(cfg.out, cfg.name or f"text-{text.model}{'-bi' if text.bidirectional else ''}")
        run = Run(path)
        cfg = dataclasses.replace(cfg, name=path.name, resume=None)
        write_yaml(path / "config.yaml", {
            "task": "text", **dataclasses.asdict(text), **cfg.to_dict(), "package_version": mnistlab.__version__,
        })
        write_json(path / "environment.json", environment_info(device, False, False))
        vocab.save(path / "vocab.json")
        write_json(path / "labels.json", list(rows.classes))
        base_summary = {
            "name": path.name, "task": "text", "model": text.model, "dataset": text.data, "parameters": params,
            "vocab_size": len(vocab), "train_texts": len(train_x), "valid_texts": len(valid_x),
            "test_texts": len(test_x), "mnistlab_version": mnistlab.__version__,
        }

        def checkpoint(epoch: int, best: bool) -> None:
            payload = {
                "model": {"name": f"text-{text.model}", "options": options},
                "data": data_meta,
                **training_state(model, optimizer, scheduler, early, epoch=epoch, history=history,
                                 train_seconds=train_seconds),
                "config": {"task": "text", **dataclasses.asdict(text), **cfg.to_dict()},
            }
            save_training_checkpoint(path / "checkpoints", payload, best)

        def write_summary(status: str, stop_reason: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
            summary = run_summary(
                base_summary, status=status, stop_reason=stop_reason, history=history, best_epoch=early.best_epoch,
                best_valid_loss=early.best, train_seconds=train_seconds,
                total_seconds=time.perf_counter() - started, extra=extra,
            )
            write_json(path / "summary.json", summary)
            return summary

        if self.resume_from is None:
            checkpoint(0, best=False)  # even a run killed in its first epoch can be resumed
        write_summary("running", "running")
        rep.info(
            f"training text {text.model}{' (bidirectional)' if text.bidirectional else ''} ({params:,} parameters, "
            f"vocabulary {len(vocab):,}) on {text.data}: {len(train_x):,} train / {len(valid_x):,} valid / "
            f"{len(test_x):,} test texts, {cfg.epochs:g} epochs of {steps_per_epoch} steps, {cfg.optimizer} "
            f"lr {cfg.lr:g}, batch {cfg.batch_size}, {device} -> {path}"
        )

        stop_reason = f"completed {cfg.epochs:g} epochs"
        epoch = start_epoch - 1
        try:
            for epoch in range(start_epoch, total_epochs + 1):
                t0 = time.perf_counter()
                result = run_epoch(
                    model, batches, optimizer, scheduler, cfg, epoch=epoch, total_epochs=total_epochs,
                    steps_per_epoch=steps_per_epoch, total_steps=total_steps, autocast=autocast, device=device,
                    reporter=rep,
                )
                train_seconds += result.seconds
                row = epoch_row(epoch, result, optimizer)
                if valid_x:
                    logits = text_logits(model, valid_x, device=device, batch_size=cfg.eval_batch_size)
                    row["valid_loss"] = float(F.cross_entropy(logits, valid_y).item())
                    row["valid_accuracy"] = float((logits.argmax(1) == valid_y).float().mean().item())
                    monitored = row["valid_loss"]
                else:
                    monitored = result.loss
                improved = early.update(monitored, epoch)
                row["epoch_seconds"] = time.perf_counter() - t0
                history.append(row)
                checkpoint(epoch, best=improved)
                write_metrics_csv(path / "metrics.csv", history)
                rep.epoch(row, cfg.epochs)
                if early.should_stop:
                    stop_reason = early_stop_reason(cfg, early)
                    break
        except TrainingDiverged as exc:
            write_summary("failed", f"diverged: {exc}")
            raise TrainingDiverged(
                f"training diverged: {exc} (lr {cfg.lr:g}); checkpoints are in {path}. Try a lower --lr."
            ) from None
        except KeyboardInterrupt:
            write_summary("interrupted", f"interrupted during epoch {epoch}")
            raise KeyboardInterrupt(
                f"interrupted during epoch {epoch}; resume with: mnistlab text train --resume {path}"
            ) from None

        # test metrics with the best checkpoint
        which = "best" if (path / "checkpoints" / "best.pt").is_file() else "last"
        best_model = _model_from_checkpoint(load_checkpoint(path / "checkpoints" / f"{which}.pt"), which).to(device)
        test_logits = text_logits(best_model, test_x, device=device, batch_size=cfg.eval_batch_size)
        test = score(test_logits, test_y, list(rows.classes)) if test_x else {}
        summary = write_summary("completed", stop_reason, {"split": "test", "checkpoint": which, **test})
        if cfg.plots:
            write_text_report(run, test_logits if test_x else None, [rows.texts[i] for i in test_idx], test_y, rep.warn)
        if test_x:
            rep.result(summary, str(path))
        else:
            rep.info(f"no test split (test_fraction 0); run folder: {path}")
        return run


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


def _model_from_checkpoint(ckpt: dict[str, Any], source: str) -> TextClassifier:
    try:
        model = TextClassifier(**ckpt["model"]["options"])
        load_model_state(model, ckpt["state_dict"], source)
    except (KeyError, TypeError) as exc:
        raise MnistlabError(f"checkpoint {source} is not a complete text checkpoint (lacks {exc})") from None
    return model.eval()


def load_text_run(run: str | Path | Run, checkpoint: str = "best") -> TextRun:
    """Open a text run folder: rebuild its model from a checkpoint and read vocab.json / labels.json."""
    import json

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
    model = _model_from_checkpoint(ckpt, str(path))
    vocab = Vocab.load(run.path / "vocab.json")
    try:
        classes = list(json.loads((run.path / "labels.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        classes = list(ckpt["data"]["classes"])
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


def write_text_report(
    run: Run, logits: torch.Tensor | None, texts: list[str], labels: torch.Tensor, warn: Callable[[str], None]
) -> None:
    """Plots and report.md/html of a text run's test split; a failure is a warning, never an error."""
    try:
        from mnistlab import report
    except ImportError:  # matplotlib missing: the run itself is complete
        return
    try:
        report.write_run_report(run, test_logits=logits, test_texts=texts, test_labels=labels.cpu().numpy())
    except Exception as exc:  # noqa: BLE001 - a plot must never lose a finished run
        warn(f"could not write plots/report for {run.path}: {exc}")


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
                          lambda message: print(f"warning: {message}", file=sys.stderr))
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

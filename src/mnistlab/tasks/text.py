"""Text runs: a labelled CSV -> tokens -> vocabulary (train split only) -> a recurrent classifier.

What differs from image runs: the data (a CSV split into train/valid/test by seed), the
batches ((ids, lengths), labels), and the files vocab.json and labels.json that predict needs
to reproduce the encoding. Everything else (loop, checkpoints, report) is the shared trainer's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

import mnistlab
from mnistlab.config import TrainConfig
from mnistlab.errors import MnistlabError, UsageError
from mnistlab.runs import write_json
from mnistlab.tasks.base import Prepared
from mnistlab.text.csvdata import read_text_csv, split_text_indices
from mnistlab.text.model import TextBatches, TextClassifier, model_from_checkpoint, text_logits
from mnistlab.text.settings import TextSettings
from mnistlab.text.tokenizer import tokenize
from mnistlab.text.vocab import Vocab
from mnistlab.training.checkpoint import load_checkpoint
from mnistlab.training.hardware import environment_info

if TYPE_CHECKING:  # pragma: no cover
    from mnistlab.runs import Run
    from mnistlab.training.progress import Reporter
    from mnistlab.training.state import FitState
    from mnistlab.training.strategy import SingleProcess


def _digest(texts: list[str], labels: list[int]) -> str:
    """The rows' sha256: a resumed run checks it trains on the rows it was trained on."""
    h = hashlib.sha256()
    for text, label in zip(texts, labels, strict=True):
        h.update(f"{label}\t{text}\n".encode())
    return h.hexdigest()


def saved_classes(run: "Run", ckpt: dict[str, Any] | None = None) -> list[str]:
    """A text run's classes: its labels.json, else the data entry of `ckpt` (default: its last checkpoint)."""
    try:
        return list(json.loads((run.path / "labels.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return list((ckpt or load_checkpoint(run.checkpoint_path("last")))["data"]["classes"])


class TextTask:
    """A recurrent classifier (TextSettings) on a CSV's text and label columns."""

    def resume_line(self, path: Path) -> str:
        return f"mnistlab text train --resume {path}"

    def __init__(self, text: TextSettings) -> None:
        self.text = text
        self.vocab: Vocab | None = None
        self.classes: list[str] = []
        self.test_texts: list[str] = []
        self.test_y = torch.zeros(0, dtype=torch.long)

    def prepare(self, cfg: TrainConfig, strategy: "SingleProcess", reporter: "Reporter",
                resume_from: "Run | None") -> Prepared:
        if strategy.world_size > 1:
            raise UsageError("text runs train in one process: run mnistlab text train without torchrun")
        text, device = self.text, strategy.device
        rows = read_text_csv(text.data, text.text_column, text.label_column)
        train_idx, valid_idx, test_idx = split_text_indices(len(rows.texts), text.test_fraction, cfg.valid_fraction,
                                                            cfg.seed)
        if not train_idx:
            raise MnistlabError(f"{rows.source} has too few rows ({len(rows.texts)}) to train on")
        if cfg.patience > 0 and not valid_idx:
            raise UsageError("--patience needs a validation split: set --valid-fraction above 0")
        tokens = [tokenize(t) for t in rows.texts]
        self.classes = list(rows.classes)
        self.vocab = vocab = self._vocab(tokens, train_idx, rows, resume_from)
        seqs = [vocab.encode(t, text.max_len) for t in tokens]
        labels = torch.tensor(rows.labels, dtype=torch.long)

        def part(idx: list[int]) -> tuple[list[list[int]], torch.Tensor]:
            return [seqs[i] for i in idx], labels[idx]

        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = part(train_idx), part(valid_idx), part(test_idx)
        self.test_texts, self.test_y = [rows.texts[i] for i in test_idx], test_y
        options = {
            "vocab_size": len(vocab), "num_classes": len(rows.classes), "cell": text.model,
            "embed_dim": text.embed_dim, "hidden": text.hidden, "layers": text.layers,
            "bidirectional": text.bidirectional, "dropout": text.dropout,
        }
        model = TextClassifier(**options).to(device)
        batches = TextBatches(train_x, train_y.tolist(), batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
                              drop_last=cfg.drop_last, device=device)
        if len(batches) == 0:
            raise UsageError(f"batch size {cfg.batch_size} is larger than the {len(train_x)} training texts with drop_last")
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)

        def predict(net: nn.Module, items: list[list[int]]) -> torch.Tensor:
            return text_logits(net, items, device=device, batch_size=cfg.eval_batch_size)

        # fp32 only: bf16 gains little for small recurrent nets and costs accuracy.
        return Prepared(
            model=model, step_model=model, batches=batches, steps_per_epoch=len(batches), autocast=nullcontext(),
            classes=self.classes, valid=valid_x, valid_labels=valid_y, test=test_x, test_labels=test_y,
            predict=predict, model_spec={"name": f"text-{text.model}", "options": options},
            data_spec={"task": "text", "name": text.data, "classes": self.classes, "text_column": text.text_column,
                       "label_column": text.label_column, "max_len": text.max_len,
                       "sha256": _digest(rows.texts, rows.labels)},
            summary={"task": "text", "model": text.model, "dataset": text.data, "parameters": params,
                     "vocab_size": len(vocab), "train_texts": len(train_x), "valid_texts": len(valid_x),
                     "test_texts": len(test_x), "mnistlab_version": mnistlab.__version__},
            environment=environment_info(device, False, False),
            describe=(
                f"training text {text.model}{' (bidirectional)' if text.bidirectional else ''} ({params:,} parameters, "
                f"vocabulary {len(vocab):,}) on {text.data}: {len(train_x):,} train / {len(valid_x):,} valid / "
                f"{len(test_x):,} test texts, {cfg.epochs:g} epochs of {len(batches)} steps, {cfg.optimizer} "
                f"lr {cfg.lr:g}, batch {cfg.batch_size}, {device}"
            ),
            no_test="no test split (test_fraction 0)",
            class_counts=torch.bincount(train_y, minlength=len(self.classes)).tolist(),
        )

    def _vocab(self, tokens: list[list[str]], train_idx: list[int], rows: Any, resume_from: "Run | None") -> Vocab:
        """The vocabulary of the training split; a resumed run keeps its own (and its classes)."""
        if resume_from is None:
            return Vocab.build((tokens[i] for i in train_idx), min_freq=self.text.min_freq,
                               max_size=self.text.vocab_size)
        # A CSV edited since then must not re-index the words.
        trained_on = saved_classes(resume_from)
        if list(rows.classes) != trained_on:
            raise MnistlabError(
                f"{rows.source} now has classes {list(rows.classes)}, but {resume_from.path} was trained "
                f"on {trained_on}: restore the CSV or start a new run"
            )
        return Vocab.load(resume_from.path / "vocab.json")

    def default_name(self, cfg: TrainConfig) -> str:
        return cfg.name or f"text-{self.text.model}{'-bi' if self.text.bidirectional else ''}"

    def config_record(self, cfg: TrainConfig) -> dict[str, Any]:
        return {"task": "text", **dataclasses.asdict(self.text), **cfg.to_dict()}

    def write_files(self, path: Path) -> None:
        self.vocab.save(path / "vocab.json")
        write_json(path / "labels.json", self.classes)

    def rebuild(self, ckpt: dict[str, Any], source: str, device: torch.device) -> nn.Module:
        return model_from_checkpoint(ckpt, source).to(device)

    def report(self, run: "Run", state: "FitState") -> None:
        from mnistlab import report

        report.write_run_report(run, test_logits=state.test_logits, test_texts=self.test_texts,
                                test_labels=self.test_y.cpu().numpy())

"""The callbacks that show a run: progress lines, TensorBoard scalars, plots and the report."""

from __future__ import annotations

from typing import Any

from mnistlab.errors import UsageError
from mnistlab.training.callbacks.base import Callback
from mnistlab.training.progress import in_notebook
from mnistlab.training.state import FitState


class Progress(Callback):
    """What the terminal (or a --jsonl reader) sees: the start line, one line per epoch, the result."""

    def on_fit_start(self, trainer: Any, state: FitState) -> None:
        if state.resumed:
            trainer.reporter.info(f"resuming {trainer.path} from epoch {state.start_epoch}")
        trainer.reporter.info(f"{trainer.prep.describe}{tools_note(trainer.cfg)} -> {trainer.path}")

    def on_epoch_end(self, trainer: Any, state: FitState) -> None:
        trainer.reporter.epoch(state.row, trainer.budget.epochs)

    def on_fit_end(self, trainer: Any, state: FitState) -> None:
        if state.test:
            trainer.reporter.result(state.summary, str(trainer.path))
        else:
            trainer.reporter.info(f"{trainer.prep.no_test}; run folder: {trainer.path}")

    def on_exception(self, trainer: Any, state: FitState) -> None:
        # In a notebook the stop button raises KeyboardInterrupt: say how to go on in Python, where the
        # user is (the exception's message names the command line's way).
        if state.status == "interrupted" and in_notebook():
            trainer.reporter.info(f"{state.stop_reason}: {len(state.history)} finished epochs are saved in "
                                  f"{trainer.path}. Resume with: {python_resume(trainer)}")


def python_resume(trainer: Any) -> str:
    """The Python call that resumes the trainer's run (the task's own line when that is a call already)."""
    line, path = trainer.task.resume_line(trainer.path), str(trainer.path)
    if not line.startswith("mnistlab "):
        return line  # mnistlab.fit(Net(...), data, resume=...): a model object or data given to fit
    if line.startswith("mnistlab text train"):
        return f"mnistlab.text.train_text(resume={path!r})"
    model = str(trainer.cfg.model)
    code = f", model_code={model.rsplit(':', 1)[0]!r}" if ".py:" in model else ""
    return f"mnistlab.train(resume={path!r}{code})"


def tools_note(cfg: Any) -> str:
    """The start line's mention of the training tools a run uses: ", ema 0.999, 4 batches a step, ..." or ""."""
    parts = []
    if cfg.ema:
        parts.append(f"ema {cfg.ema:g}")
    if (cfg.accumulate or 1) > 1:
        parts.append(f"{cfg.accumulate} batches a step (batch {cfg.batch_size * cfg.accumulate} in effect)")
    if cfg.class_weights:
        parts.append(f"class weights {cfg.class_weights}")
    if cfg.tta:
        parts.append("test-time augmentation")
    return "".join(f", {part}" for part in parts)


def require_tensorboard() -> None:
    """--tensorboard needs the optional `tensorboard` package: say how to get it, before any run folder exists."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401 - imported lazily: optional extra
    except ImportError:
        raise UsageError(
            "--tensorboard needs the tensorboard package: pip install tensorboard (or pip install 'mnistlab[tensorboard]')"
        ) from None


class TensorBoard(Callback):
    """Each epoch's numbers as scalars in RUN/tensorboard/ (loss/train, accuracy/valid, epoch/lr, ...)."""

    def __init__(self) -> None:
        require_tensorboard()
        self.writer: Any = None

    def on_fit_start(self, trainer: Any, state: FitState) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(trainer.path / "tensorboard"))

    def on_epoch_end(self, trainer: Any, state: FitState) -> None:
        row = state.row
        for key, value in row.items():
            if key in ("epoch", "steps", "samples", "batches", "loss_sum") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            split, _, metric = key.partition("_")
            tag = f"{metric}/{split}" if split in ("train", "valid") and metric in ("loss", "accuracy") else f"epoch/{key}"
            self.writer.add_scalar(tag, value, int(row["epoch"]))
        self.writer.flush()  # a killed run loses nothing

    def on_fit_end(self, trainer: Any, state: FitState) -> None:
        self._close()

    def on_exception(self, trainer: Any, state: FitState) -> None:
        self._close()

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Report(Callback):
    """plots/*.png and report.md/html at the end of a run; a failure is a warning, never a lost run."""

    def on_fit_end(self, trainer: Any, state: FitState) -> None:
        try:
            import matplotlib  # noqa: F401 - the report's one optional need
        except ImportError:
            return
        try:
            trainer.task.report(trainer.run, state)
        except Exception as exc:  # noqa: BLE001 - a plot must never lose a finished run
            trainer.reporter.warn(f"could not write plots/report for {trainer.path}: {exc}")

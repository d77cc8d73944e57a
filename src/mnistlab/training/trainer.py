"""The one training loop: a Task's data and model, a Strategy's processes, and callbacks around each epoch.

    Trainer(task, cfg, strategy=..., callbacks=[...]).fit() -> Run

fit() goes top to bottom: task.prepare (data, model) -> optimizer and schedule -> run folder
(or the resumed one) -> epochs -> test pass on the best checkpoint. Each epoch: train its
steps -> validate -> on_validation_end (decide) -> checkpoint, metrics.csv, progress
(on_epoch_end) -> one agreement across ranks on whether to stop. Every way a run ends
leaves a true status in summary.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch.nn import functional as F

import mnistlab
from mnistlab.class_weights import imbalance, imbalance_advice, loss_weights
from mnistlab.config import TrainConfig
from mnistlab.errors import MnistlabError, Terminated, TrainingDiverged
from mnistlab.locks import folder_lock
from mnistlab.runs import Run, write_json, write_yaml
from mnistlab.scoring import score
from mnistlab.signals import sigterm_as_interrupt
from mnistlab.tasks.base import Prepared, Task
from mnistlab.training import epoch as epoch_loop
from mnistlab.training.callbacks import Callback, CallbackList, default_callbacks
from mnistlab.training.checkpoint import EMA_KEY, load_checkpoint
from mnistlab.training.epoch import EpochResult, StepBudget, epoch_row, merge_rows
from mnistlab.training.hardware import seed_everything
from mnistlab.training.optim import build_optimizer, build_scheduler
from mnistlab.training.progress import Reporter
from mnistlab.training.resume import check_same_data, restore_last_checkpoint
from mnistlab.training.state import FitState, training_state
from mnistlab.training.strategy import SingleProcess


RUN_LOCK = ".lock"  # in the run folder: held by the process training it


class Trainer:
    """One run. Callbacks may read every attribute; see mnistlab.Callback for what each hook may change.

    Attributes (set by fit): cfg, task, strategy, reporter, prep (the task's Prepared), model
    (the plain module), optimizer, scheduler, budget (StepBudget: optimizer steps), run and path (the
    run folder), class_weights (the loss's per-class weights, or None). `eval_model` is the module
    validation scores, `model` unless a callback sets another in on_fit_start (EMA sets its average).
    """

    def __init__(
        self, task: Task, cfg: TrainConfig, *, strategy: SingleProcess, callbacks: Iterable[Callback] = (),
        resume_from: Run | None = None, reporter: Reporter | None = None,
        builtins: list[Callback] | None = None,
    ) -> None:
        self.task, self.cfg, self.strategy, self.resume_from = task, cfg, strategy, resume_from
        self.reporter = reporter or Reporter(cfg.progress, enabled=strategy.is_main)  # only rank 0 prints
        if builtins is None:
            builtins = default_callbacks(cfg.patience, plots=cfg.plots, tensorboard=cfg.tensorboard,
                                         mlflow=cfg.mlflow, mlflow_checkpoints=cfg.mlflow_checkpoints,
                                         ema=cfg.ema or 0.0, monitor=cfg.monitor or "valid_loss")
        self.callbacks = CallbackList([*builtins, *callbacks], is_main=strategy.is_main)
        self.callbacks.state_dicts()  # a state that checkpoints cannot hold is refused before any run folder
        self.prep: Prepared
        self.budget: StepBudget
        self.run: Run
        self.path: Path

    def fit(self) -> Run:
        """Train, test and write the run folder; returns the Run. Errors leave summary.json true to what happened."""
        state = FitState()
        self._setup()
        with self._open(state), sigterm_as_interrupt(self.strategy.world_size == 1):
            try:
                self.callbacks.call("on_fit_start", self, state)
                self._train(state)
                self._test(state)
                state.status = "completed"
                self.callbacks.call("on_fit_end", self, state)
            except (Exception, KeyboardInterrupt, SystemExit) as exc:
                error = self._ending(state, exc)
                self.callbacks.call_safely("on_exception", self, state, self.reporter.warn)
                if error is exc:
                    raise
                raise error from None
        return self.run

    # ------------------------------------------------------------------ set-up

    def _setup(self) -> None:
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        self.prep = self.task.prepare(cfg, self.strategy, self.reporter, self.resume_from)
        self.model = self.eval_model = self.prep.model
        # The budget counts optimizer steps: with --accumulate N, one per N batches (and the epoch's rest).
        self.budget = StepBudget.plan(cfg.epochs, math.ceil(self.prep.steps_per_epoch / self._accumulate))
        self.class_weights: list[float] | None = None
        self._loss_weight: torch.Tensor | None = None
        if self.resume_from is None:  # a resumed run takes its checkpoint's (in _open)
            self._weigh_classes(None)
        self.optimizer = build_optimizer(cfg, self.model, self.strategy.device)
        self.scheduler = build_scheduler(cfg, self.optimizer, self.budget.total_steps, self.budget.steps_per_epoch)

    @contextlib.contextmanager
    def _open(self, state: FitState) -> Iterator[None]:
        """The run folder (a new one, or the resumed run's, brought back to its last checkpoint), locked
        for this process while the block runs: two processes never train one run."""
        if self.resume_from is None:
            self.run = Run(self.strategy.make_run_dir(self.cfg.out, self.task.default_name(self.cfg)))
        path = self.resume_from.path if self.resume_from is not None else self.run.path
        busy = f"{path} is being trained by another process right now; wait for it to end (or stop it)"
        with folder_lock(path / RUN_LOCK, busy) if self.strategy.is_main else contextlib.nullcontext():
            self._restore(state, path)
            yield

    def _restore(self, state: FitState, path: Path) -> None:
        cfg = self.cfg
        if self.resume_from is not None:
            resumed = restore_last_checkpoint(
                self.resume_from, self.model, self.optimizer, self.scheduler, self.callbacks,
                budget=self.budget, epochs=cfg.epochs, tidy=self.strategy.is_main,
            )
            check_same_data(resumed.checkpoint.get("data") or {}, self.prep.data_spec, self.resume_from)
            self.strategy.restore_rng(resumed.checkpoint, cfg.seed)
            self._weigh_classes(resumed.checkpoint.get("class_weights"))  # as trained, even if the file changed
            state.resumed, state.history, state.global_step = True, resumed.history, resumed.global_step
            state.train_seconds, state.seconds_before = resumed.train_seconds, resumed.total_seconds
            state.start_epoch = resumed.start_epoch(self.budget.steps_per_epoch)
            state.partial_epoch = state.start_epoch if resumed.partial_row is not None else None
            state.epoch = state.start_epoch - 1
            state.checkpointed_epoch = int(resumed.checkpoint["epoch"])
        self.run, self.path = Run(path), path
        self.cfg = cfg = dataclasses.replace(cfg, name=path.name, resume=None)
        if self.strategy.is_main:
            write_yaml(path / "config.yaml", {**self.task.config_record(cfg), "package_version": mnistlab.__version__})
            write_json(path / "environment.json", {**self.prep.environment, **self.strategy.describe()})
            self.task.write_files(path)

    @property
    def _accumulate(self) -> int:
        return int(self.cfg.accumulate or 1)

    def _weigh_classes(self, saved: list[float] | None) -> None:
        """The loss's class weights: `saved` (a resumed run's, as it trained even if its file changed since),
        else from cfg.class_weights and the training split's counts, with a warning if they are imbalanced."""
        prep, cfg = self.prep, self.cfg
        counts = prep.class_counts or []
        if saved is None:
            warning = imbalance(counts, prep.classes)
            if warning and (cfg.class_weights is None or 0 in counts):
                self.reporter.warn(f"{warning}; {imbalance_advice(counts)}")
            saved = loss_weights(cfg.class_weights, counts, prep.classes)
        self.class_weights = saved
        if saved is not None:
            self._loss_weight = torch.tensor(self.class_weights, dtype=torch.float32, device=self.strategy.device)
            prep.summary["class_weights"] = self.class_weights

    # ------------------------------------------------------------------ the loop

    def _train(self, state: FitState) -> None:
        for epoch in range(state.start_epoch, self.budget.epochs + 1):
            if self._epoch(state, epoch):
                break
        state.stop(f"completed {self.cfg.epochs:g} epochs")  # kept only if nothing stopped the run

    def _epoch(self, state: FitState, epoch: int) -> bool:
        """Train, validate and record epoch `epoch`; True when the run should stop after it."""
        t0 = time.perf_counter()
        state.epoch, state.row, state.improved = epoch, None, False
        self.callbacks.call("on_epoch_start", self, state)
        self.strategy.before_epoch(epoch)
        lr = float(self.optimizer.param_groups[0]["lr"])
        result = self._steps(epoch, skip=max(0, state.global_step - (epoch - 1) * self.budget.steps_per_epoch))
        # The epoch's train numbers over all ranks, not rank 0's shard alone.
        result.loss, result.accuracy = self.strategy.mean([result.loss, result.accuracy])
        state.train_seconds += result.seconds
        state.global_step += result.steps
        row, carried = epoch_row(epoch, result, lr), 0.0
        if epoch == state.partial_epoch:  # the rest of an epoch a fractional run left half-done
            first = state.history.pop()
            row, carried = merge_rows(first, row), float(first.get("epoch_seconds") or 0.0)
        self._validate(row)
        state.row = row
        self.callbacks.call("on_validation_end", self, state)
        row["epoch_seconds"] = time.perf_counter() - t0 + carried
        state.history.append(row)
        self.callbacks.call("on_epoch_end", self, state)
        # Rank 0 decides; all ranks follow, so they leave the loop together.
        return self.strategy.agree(state.stop_reason is not None)

    def _steps(self, epoch: int, skip: int) -> EpochResult:
        """The epoch's optimizer steps: its share of the budget, after `skip` steps already taken."""
        prep, cfg, n = self.prep, self.cfg, self._accumulate
        steps = self.budget.steps_in(epoch) - skip
        # Each step takes n batches; the epoch's last step takes those left.
        batches_left = min(self.budget.steps_in(epoch) * n, prep.steps_per_epoch) - skip * n
        prep.batches.set_epoch(epoch)  # the order of epoch e depends only on (seed, e)
        batches: Any = iter(prep.batches)
        if skip:
            batches = itertools.islice(batches, skip * n, None)
        bar = self.reporter.bar(batches_left, f"epoch {epoch}/{self.budget.epochs}")
        try:
            return epoch_loop.train_one_epoch(
                prep.step_model, batches, self.optimizer, self.scheduler, max_steps=steps,
                label_smoothing=cfg.label_smoothing, clip_grad=cfg.clip_grad, autocast=prep.autocast,
                device=self.strategy.device, bar=None if bar.disable else bar, epoch=epoch,
                accumulate=n, max_batches=batches_left, loss_weight=self._loss_weight,
            )
        finally:
            bar.close()

    def _validate(self, row: dict[str, Any]) -> None:
        prep = self.prep
        if not len(prep.valid_labels):
            return
        model = self.eval_model
        self.strategy.sync_buffers(model)  # every rank evaluates rank 0's BatchNorm statistics
        logits = self.strategy.predict(prep.predict, model, prep.valid)
        row["valid_loss"] = float(F.cross_entropy(logits, prep.valid_labels).item())
        row["valid_accuracy"] = float((logits.argmax(1) == prep.valid_labels).float().mean().item())

    # ------------------------------------------------------------------ the end

    def _test(self, state: FitState) -> None:
        """Score the test split with the best checkpoint (the last one if no epoch was best)."""
        state.phase = "test"
        folder = self.path / "checkpoints"
        which = "best" if (folder / "best.pt").is_file() else "last"
        ckpt = None
        if self.strategy.is_main:
            full = load_checkpoint(folder / f"{which}.pt")
            ckpt = {key: full[key] for key in ("model", "data", "state_dict", EMA_KEY) if key in full}
        # Only rank 0 surely sees the files (other nodes may not share its disk): it sends the weights.
        which, ckpt = self.strategy.broadcast((which, ckpt))
        model = self.task.rebuild(ckpt, which, self.strategy.device)
        state.checkpoint_scored, state.test = which, {}
        if len(self.prep.test_labels):
            predict = self.prep.test_predict or self.prep.predict  # TTA's, with --tta
            state.test_logits = self.strategy.predict(predict, model, self.prep.test)
            state.test = score(state.test_logits, self.prep.test_labels, self.prep.classes)
            state.test["tta"] = bool(self.cfg.tta)

    def checkpoint_payload(self, state: FitState) -> dict[str, Any] | None:
        """The checkpoint of the current epoch (None on ranks other than 0). A collective: every rank calls it."""
        rngs = self.strategy.gather_rng()
        if not self.strategy.is_main:
            return None
        return {
            "model": self.prep.model_spec,
            "data": self.prep.data_spec,
            **training_state(self.model, self.optimizer, self.scheduler, state, self.budget.steps_per_epoch),
            **({"rng_per_rank": rngs} if rngs else {}),
            **({"class_weights": self.class_weights} if self.class_weights is not None else {}),
            **self.callbacks.state_dicts(),
            "config": self.task.config_record(self.cfg),
        }

    def _ending(self, state: FitState, exc: BaseException) -> BaseException:
        """Record how the run ends (status and stop_reason in `state`) and return the error to raise."""
        state.error, cfg, path = exc, self.cfg, self.path
        if isinstance(exc, TrainingDiverged):
            state.status, state.stop_reason = "failed", f"diverged: {exc}"
            kept = f"the best checkpoint (epoch {state.best_epoch}) is kept" if state.best_epoch else "no epoch finished"
            return TrainingDiverged(
                f"training diverged: {exc} (lr {cfg.lr:g}); {kept} in {path}. Try a lower --lr or --clip-grad."
            )
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            return self._interrupted(state, exc)
        state.status = "failed"
        # e.g. a full disk while checkpointing: the run folder must not claim to be still running.
        known = isinstance(exc, (MnistlabError, OSError))
        state.stop_reason = f"error: {exc}" if known else f"error: {type(exc).__name__}: {exc}"
        return exc

    def _interrupted(self, state: FitState, exc: BaseException) -> BaseException:
        """Ctrl-C, SIGTERM or sys.exit(): the run is kept resumable and says how to go on."""
        resume = self.task.resume_line(self.path)
        if isinstance(exc, SystemExit):
            how = f"exited (sys.exit({exc.code!r}))"
        else:
            how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        if state.summary is not None:  # completed and tested: only the plots and report were cut short
            return exc if isinstance(exc, SystemExit) else type(exc)(
                f"{how} while writing the plots and report; the run is complete. Rewrite them with: "
                f"mnistlab evaluate {self.path}")
        state.status = "interrupted"
        if state.phase == "test":
            state.stop_reason, message = f"{how} while computing the test metrics", (
                f"{how} after training, while computing the test metrics; all {len(state.history)} epochs "
                f"are saved. Finish with: {resume}")
        else:
            state.stop_reason, message = f"{how} during epoch {state.epoch}", (
                f"{how} during epoch {state.epoch}; the checkpoint of epoch {state.checkpointed_epoch} is saved. "
                f"Resume with: {resume}")
        return exc if isinstance(exc, SystemExit) else type(exc)(message)

    def check_folder(self) -> None:
        """Stop (without writing anything more) when the run folder was deleted or moved while training."""
        if not (self.path / "config.yaml").is_file():
            raise MnistlabError(f"the run folder {self.path} was deleted or moved while training: stopped")



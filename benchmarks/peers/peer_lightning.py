"""PyTorch Lightning, as its docs teach it: a LightningModule, DataLoaders over TensorDatasets, Trainer.fit.

training_step computes the loss, logs it with self.log (as the docs' first example does) and
returns it; configure_optimizers returns Adam (and, for the one-cycle job, OneCycleLR stepped
every batch, `"interval": "step"`); trainer.test measures the test accuracy. The Trainer runs
one epoch with its progress bar, logger, checkpointing and model summary off, as mnistlab
runs with --quiet and no checkpoint inside its timed loop. `train_seconds` is the epoch
(Callback hooks on_train_epoch_start/end); `fit_seconds` is the whole Trainer.fit call,
Lightning's own set-up and tear-down included.
"""

from __future__ import annotations

import jobs
import pytorch_lightning as pl
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


class LitClassifier(pl.LightningModule):
    def __init__(self, job: jobs.Job) -> None:
        super().__init__()
        self.job = job
        self.net = jobs.torch_net(job.name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)  # as the docs' training_step does (kept, not printed: logger off)
        return loss

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("test_acc", (self(x).argmax(1) == y).float().mean(), batch_size=len(y))

    def configure_optimizers(self) -> object:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.job.lr, betas=self.job.betas)
        if not self.job.onecycle:
            return optimizer
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.job.lr, total_steps=self.trainer.estimated_stepping_batches,
            pct_start=jobs.PCT_START, div_factor=jobs.DIV_FACTOR, final_div_factor=jobs.FINAL_DIV_FACTOR,
            cycle_momentum=False)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class EpochTimer(pl.Callback):
    """Seconds of the training epoch alone (device work included)."""

    def __init__(self, device: str) -> None:
        self.device, self.start, self.seconds = device, 0.0, 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = jobs.clock(self.device)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = jobs.clock(self.device) - self.start


def main() -> None:
    args = jobs.parse_args()
    job = jobs.JOBS[args.job]
    pl.seed_everything(args.seed, verbose=False)
    x_train, y_train, x_test, y_test = jobs.load(args)
    train = TensorDataset(torch.from_numpy(x_train).unsqueeze(1), torch.from_numpy(y_train))
    test = TensorDataset(torch.from_numpy(x_test).unsqueeze(1), torch.from_numpy(y_test))
    model = LitClassifier(job)
    timer = EpochTimer(args.device)
    trainer = pl.Trainer(max_epochs=1, accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer])
    start = jobs.clock(args.device)
    trainer.fit(model, DataLoader(train, batch_size=job.batch_size, shuffle=True))
    fit_seconds = jobs.clock(args.device) - start
    steps = trainer.global_step
    result = trainer.test(model, DataLoader(test, batch_size=jobs.EVAL_BATCH), verbose=False)
    jobs.emit("lightning", pl.__version__, args, images=len(train), steps=steps, train_seconds=timer.seconds,
              fit_seconds=fit_seconds, accuracy=float(result[0]["test_acc"]))


if __name__ == "__main__":
    main()

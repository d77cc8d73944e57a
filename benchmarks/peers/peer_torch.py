"""Plain PyTorch, as its tutorials teach it: a TensorDataset, a DataLoader, the usual train loop.

The loop is the one of PyTorch's "Optimizing Model Parameters" tutorial (forward, loss,
backward, step, zero_grad), without its every-100-batches `loss.item()` print; the
one-cycle schedule is torch's OneCycleLR stepped per batch.
"""

from __future__ import annotations

import jobs
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def train_loop(loader: DataLoader, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None, device: str) -> int:
    model.train()
    steps = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if scheduler is not None:
            scheduler.step()
        steps += 1
    return steps


def test_loop(loader: DataLoader, model: nn.Module, device: str) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
    return correct / len(loader.dataset)


def main() -> None:
    args = jobs.parse_args()
    job = jobs.JOBS[args.job]
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = jobs.load(args)
    train = TensorDataset(torch.from_numpy(x_train).unsqueeze(1), torch.from_numpy(y_train))
    test = TensorDataset(torch.from_numpy(x_test).unsqueeze(1), torch.from_numpy(y_test))
    train_loader = DataLoader(train, batch_size=job.batch_size, shuffle=True)
    test_loader = DataLoader(test, batch_size=jobs.EVAL_BATCH)
    model = jobs.torch_net(job.name).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=job.lr, betas=job.betas)
    scheduler = None
    if job.onecycle:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=job.lr, total_steps=len(train_loader), pct_start=jobs.PCT_START,
            div_factor=jobs.DIV_FACTOR, final_div_factor=jobs.FINAL_DIV_FACTOR, cycle_momentum=False)
    start = jobs.clock(args.device)
    steps = train_loop(train_loader, model, nn.CrossEntropyLoss(), optimizer, scheduler, args.device)
    seconds = jobs.clock(args.device) - start
    jobs.emit("pytorch", torch.__version__, args, images=len(train), steps=steps, train_seconds=seconds,
              fit_seconds=seconds, accuracy=test_loop(test_loader, model, args.device))


if __name__ == "__main__":
    main()

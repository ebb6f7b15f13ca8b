"""An ImageNet-example-style script: meters and small helper objects.

Patterns: an `AverageMeter` made in `train()` before its step loop, updated in place by the
loop and read after it; a tracker object made before the epoch loop and changed in place; a
summary object made anew each epoch and read after the loop; a learning rate read from the
optimizer the script adjusts by hand (`adjust_learning_rate`).
"""

import argparse

import torch

import florql


class AverageMeter:
    def __init__(self):
        self.sum, self.count = 0.0, 0

    def update(self, value, n=1):
        self.sum += value * n
        self.count += n

    @property
    def avg(self):
        return self.sum / max(self.count, 1)


class Tracker:
    def __init__(self):
        self.best, self.epochs_since = float("inf"), 0

    def update(self, value):
        if value < self.best:
            self.best, self.epochs_since = value, 0
        else:
            self.epochs_since += 1


class Summary:
    def __init__(self, epoch, value):
        self.epoch, self.value = epoch, value


def adjust_learning_rate(optimizer, epoch, base):
    for group in optimizer.param_groups:
        group["lr"] = base * (0.5 ** (epoch // 2))


def train(model, optimizer, xs, ys):
    losses = AverageMeter()
    model.train()
    for step in florql.loop("step", range(3)):
        x, y = xs[step * 10 : step * 10 + 10], ys[step * 10 : step * 10 + 10]
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.update(loss.item(), x.shape[0])
        florql.log("loss", loss.item())
    # @@TRAIN@@
    return losses.avg


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()
    torch.manual_seed(5)
    torch.set_num_threads(1)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    florql.checkpointing(model=model, optimizer=optimizer)
    xs, ys = torch.randn(30, 4), torch.randn(30, 1)
    tracker = Tracker()
    summary = None
    for epoch in florql.loop("epoch", range(args.epochs)):
        adjust_learning_rate(optimizer, epoch, args.lr)
        avg = train(model, optimizer, xs, ys)
        tracker.update(avg)
        if summary is None or avg < summary.value:
            summary = Summary(epoch, avg)
        florql.log("avg", avg)
        # @@EPOCH@@
    florql.log("best_epoch", summary.epoch)
    # @@AFTER@@


if __name__ == "__main__":
    main()

"""A classifier script whose loops live in `main()` (locals, not globals).

Patterns: an optimizer and a scheduler the script never registers; a learning rate cut by hand
in a local when validation stalls; an early-stopping helper object and a history dict changed
in place, and a module list a helper function appends to; the best weights kept in a local dict of tensors; unseeded NumPy drawing in
evaluation; a generator carried across epochs (`stream`), which no checkpoint can
hold, so replay must re-execute from the start.
"""

import argparse
import copy

import numpy as np
import torch

import florql


class EarlyStopping:
    def __init__(self, patience):
        self.patience = patience
        self.bad = 0
        self.best = float("inf")

    def step(self, value):
        if value < self.best:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        return self.bad > self.patience


SEEN = []


def remember(value):
    SEEN.append(round(value, 3))


def noise_stream():
    k = 0
    while True:
        k += 1
        yield k * 1e-4


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(3)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(5, 12), torch.nn.ReLU(), torch.nn.Linear(12, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    florql.checkpointing(model=model)
    xs, ys = torch.randn(48, 5), torch.randint(0, 2, (48,))
    stopper = EarlyStopping(patience=1)
    history = {"val": []}
    best_state = None
    scale = 1.0
    stream = None
    for epoch in florql.loop("epoch", range(args.epochs)):
        if args.stream and stream is None:
            stream = noise_stream()
        bonus = next(stream) if stream is not None else 0.0
        total = 0.0
        for step in florql.loop("step", range(4)):
            x, y = xs[step * 12 : step * 12 + 12], ys[step * 12 : step * 12 + 12]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y) * scale
            loss.backward()
            opt.step()
            total += loss.item()
            florql.log("loss", loss.item())
        sched.step()
        pick = np.sort(np.random.choice(48, size=16, replace=False))
        with torch.no_grad():
            val = torch.nn.functional.cross_entropy(model(xs[pick]), ys[pick]).item() + bonus
        history["val"].append(val)
        remember(val)
        florql.log("val", val)
        # @@EPOCH@@
        if best_state is None or val <= min(history["val"]):
            best_state = copy.deepcopy(model.state_dict())
        if stopper.step(val):
            scale *= 0.5
    model.load_state_dict(best_state)
    florql.log("final", float(model[0].weight.sum()))
    # @@AFTER@@


if __name__ == "__main__":
    main()

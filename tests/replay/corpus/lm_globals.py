"""A language-model-style script (after PyTorch's word_language_model example).

Patterns: argparse settings; the inner loop inside a `train()` function that reads the
module-global `lr` and a module-global step counter; `lr /= 4.0` in the outer body when
validation stalls; best-so-far tracking in a module global; manual SGD (no optimizer object);
evaluation that draws from unseeded NumPy and Python `random`; the best model saved each
time validation improves and reloaded after the loop.
"""

import argparse
import math
import random

import numpy as np
import torch

import florql

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=20.0)
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--clip", type=float, default=0.25)
args = parser.parse_args()

torch.manual_seed(1)
torch.set_num_threads(1)
model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
criterion = torch.nn.CrossEntropyLoss()
train_x, train_y = torch.randn(64, 6), torch.randint(0, 3, (64,))
val_x, val_y = torch.randn(32, 6), torch.randint(0, 3, (32,))
florql.checkpointing(model=model)

lr = args.lr
best_val_loss = None
global_step = 0
history = []


def train(epoch):
    global global_step
    model.train()
    total = 0.0
    for step, i in florql.loop("step", enumerate(range(0, 64, 16))):
        x, y = train_x[i : i + 16], train_y[i : i + 16]
        model.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        total += loss.item()
        global_step += 1
        florql.log("loss", loss.item())
    return total / 4


def evaluate():
    model.eval()
    idx = np.arange(32)
    np.random.shuffle(idx)
    keep = sorted(idx[:24].tolist())
    noise = random.random() * 1e-3
    with torch.no_grad():
        return criterion(model(val_x[keep]), val_y[keep]).item() + noise


for epoch in florql.loop("epoch", range(1, args.epochs + 1)):
    train_loss = train(epoch)
    val_loss = evaluate()
    history.append(val_loss)
    florql.log("val_loss", val_loss)
    # @@EPOCH@@
    if best_val_loss is None or val_loss < best_val_loss:
        best_val_loss = val_loss
        torch.save(model.state_dict(), "best.pt")
    else:
        lr /= 4.0

florql.log("best", best_val_loss)
model.load_state_dict(torch.load("best.pt"))
florql.log("best_again", evaluate())
# @@AFTER@@

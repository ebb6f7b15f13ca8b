"""A small CNN trained on synthetic images: florql's example workload.

Ten classes of 1x28x28 images, each a fixed random pattern plus noise, all made from a fixed
seed; a shuffling DataLoader, dropout, SGD with momentum and a StepLR schedule. Logs `loss` per
step and `accuracy` per epoch.

    florql record examples/train_cnn.py                 # ~25 s on 2 CPU cores
    florql record --arg epochs=3 --arg samples=512 examples/train_cnn.py   # a few seconds

Test hook: `FLORQL_EXAMPLE_KILL_AT=EPOCH:STEP` makes the script SIGKILL itself at that step (a
crash for resume tests).
"""

import os
import random
import signal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import florql

epochs = florql.arg("epochs", 8)
samples = florql.arg("samples", 2560)
batch_size = florql.arg("batch_size", 64)
lr = florql.arg("lr", 0.05)
seed = florql.arg("seed", 0)
width = florql.arg("width", 1)  # channels x width: a heavier model, epochs as long as real ones
# torch's intra-op threads; a replay keeps the recorded count (it changes float reductions).
threads = florql.arg("threads", max(1, min(2, os.cpu_count() or 1)))
torch.set_num_threads(threads)

random.seed(seed)
np.random.seed(seed)
torch.manual_seed(seed)


def make_data(n: int, patterns: torch.Tensor, generator: torch.Generator) -> TensorDataset:
    labels = torch.randint(0, 10, (n,), generator=generator)
    images = patterns[labels] + 1.5 * torch.randn(n, 1, 28, 28, generator=generator)
    return TensorDataset(images, labels)


class Net(nn.Module):
    def __init__(self, width: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8 * width, 3, padding=1)
        self.conv2 = nn.Conv2d(8 * width, 16 * width, 3, padding=1)
        self.drop = nn.Dropout(0.25)
        self.fc1 = nn.Linear(16 * width * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = self.drop(torch.flatten(x, 1))
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def evaluate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
    model.train()
    return correct / len(loader.dataset)


data_gen = torch.Generator().manual_seed(1234 + seed)
# One pattern per class, shared by the training and the held-out set (fresh noise for each).
class_patterns = torch.randn(10, 1, 28, 28, generator=data_gen)
train_set = make_data(samples, class_patterns, data_gen)
test_set = make_data(max(256, samples // 4), class_patterns, data_gen)
train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=0)
test_loader = DataLoader(test_set, batch_size=256, shuffle=False, num_workers=0)

model = Net(width)
optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
loss_fn = nn.CrossEntropyLoss()
florql.checkpointing(model=model, optimizer=optimizer, scheduler=scheduler)

kill_at = os.environ.get("FLORQL_EXAMPLE_KILL_AT")
kill_epoch, kill_step = (int(v) for v in kill_at.split(":")) if kill_at else (-1, -1)

for epoch in florql.loop("epoch", range(epochs)):
    model.train()
    running = 0.0
    for step, (x, y) in florql.loop("step", enumerate(train_loader)):
        if (epoch, step) == (kill_epoch, kill_step):
            os.kill(os.getpid(), signal.SIGKILL)
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        running += loss.item()
        florql.log("loss", loss.item())
    florql.log("train_loss", running / len(train_loader))
    florql.log("accuracy", evaluate(model, test_loader))
    florql.log("lr", scheduler.get_last_lr()[0])
    scheduler.step()

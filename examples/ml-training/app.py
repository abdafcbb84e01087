"""ML training with a human in the loop.

Labels a generated data set, then trains a logistic-regression model one
epoch per step (plain gradient descent, no libraries). After each epoch it
waits for the "run" (a short durable sleep standing in for a GPU job),
evaluates the loss, and when the loss stops improving it asks a human for an
adjustment with `wait_for_event("adjust")`: a new learning rate, or stop.

Every epoch is a step: kill the host at any point and `weft resume` goes on
from the last finished epoch with the same weights.
"""

import math
import random

from workers import WorkflowEntrypoint


def make_dataset(n: int, seed: int) -> list[list[float]]:
    """Points around two centres; the label is which centre."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        cx, cy = (2.0, 2.0) if label else (-2.0, -1.0)
        rows.append([cx + rng.gauss(0, 1.5), cy + rng.gauss(0, 1.5), float(label)])
    return rows


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(z, 30.0), -30.0)))


def loss(w: list[float], rows: list[list[float]]) -> float:
    total = 0.0
    for x, y, label in rows:
        p = min(max(sigmoid(w[0] * x + w[1] * y + w[2]), 1e-9), 1 - 1e-9)
        total -= label * math.log(p) + (1 - label) * math.log(1 - p)
    return total / len(rows)


def epoch(w: list[float], rows: list[list[float]], lr: float) -> list[float]:
    g = [0.0, 0.0, 0.0]
    for x, y, label in rows:
        err = sigmoid(w[0] * x + w[1] * y + w[2]) - label
        g[0] += err * x
        g[1] += err * y
        g[2] += err
    n = len(rows)
    return [w[i] - lr * g[i] / n for i in range(3)]


class TrainingLoop(WorkflowEntrypoint):
    async def run(self, event, step):
        cfg = event["payload"] or {}
        lr = float(cfg.get("lr", 0.5))
        max_epochs = int(cfg.get("max_epochs", 40))
        patience = float(cfg.get("min_improvement", 0.002))
        poll = cfg.get("poll", "1 second")

        @step.do("label dataset")
        async def label():
            return make_dataset(int(cfg.get("samples", 400)), int(cfg.get("seed", 7)))

        rows = await label()
        weights = [0.0, 0.0, 0.0]
        best = math.inf
        history = []
        for n in range(max_epochs):

            @step.do(f"train epoch {n}")
            async def train():
                # Called at once, in this iteration: the closure sees this
                # epoch's weights and rate.
                return epoch(weights, rows, lr)

            weights = await train()
            await step.sleep(f"wait for run {n}", poll)

            @step.do(f"evaluate epoch {n}")
            async def evaluate():
                return loss(weights, rows)

            current = await evaluate()
            history.append(round(current, 4))
            if best - current >= patience:
                best = current
                continue

            @step.do(f"notify human {n}")
            async def notify():
                print(f"loss stopped improving at {current:.4f} (epoch {n}); "
                      f"send an `adjust` event: {{\"lr\": 0.1}} or {{\"stop\": true}}")
                return True

            await notify()
            decision = await step.wait_for_event(f"adjust {n}", "adjust", timeout=cfg.get("timeout", "1 day"))
            choice = decision["payload"] or {}
            if choice.get("stop"):
                break
            lr = float(choice.get("lr", lr / 2))
            best = current
        return {"epochs": len(history), "loss": history[-1], "weights": [round(v, 4) for v in weights], "history": history}

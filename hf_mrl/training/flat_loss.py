"""A warning when the training loss has not moved after the warm-up."""

from __future__ import annotations

import math
import statistics

import torch

__all__ = ["FLAT_LOSS_TOLERANCE", "FlatLossWatch"]

# A loss is called flat when it moved less than this share after the warm-up AND less than its own noise: a model
# trained from scratch often creeps down slowly at first, by more than its batch-to-batch noise, and is learning.
FLAT_LOSS_TOLERANCE = 0.01
NOISE_STANDARD_ERRORS = 2.0


class FlatLossWatch:
    """Tells once when the loss has not moved after the warm-up: the usual sign of a learning rate that makes a
    pretrained encoder collapse (e.g. every input to the majority class) or that is far too small. It reads the
    loss of the first steps only, so later steps never wait for the device.

    `pretrained`: whether the model started from pretrained weights (the advice differs); None when unknown."""

    def __init__(self, warmup_steps, learning_rate: float, window: int = 10, pretrained: bool | None = None):
        warmup = int(warmup_steps) if not (isinstance(warmup_steps, float) and warmup_steps < 1) else 0
        self.check_at = max(warmup, window) + window
        self.window = window
        self.learning_rate = learning_rate
        self.pretrained = pretrained
        self.losses: dict[int, float] = {}

    def update(self, step: int, loss: torch.Tensor) -> str | None:
        """The warning's text at the step it is due, else None; `step` counts optimizer steps from 1."""
        if step > self.check_at or self.losses.get(-1):
            return None
        self.losses[step] = float(loss.detach())  # the last micro-batch of a step stands for it
        if step < self.check_at:
            return None
        losses = [self.losses[key] for key in sorted(self.losses) if key > 0]
        if len(losses) < 2 * self.window:
            return None
        self.losses[-1] = 1.0  # told (or checked) once
        first, last = losses[: self.window], losses[-self.window:]
        start, now = statistics.fmean(first), statistics.fmean(last)
        if not (math.isfinite(start) and math.isfinite(now)):
            return None
        # the standard error of the difference of the two windows' means: what the loss moves by chance alone
        noise = math.sqrt((statistics.pvariance(first) + statistics.pvariance(last)) / self.window)
        moved = abs(start - now)
        if moved <= FLAT_LOSS_TOLERANCE * abs(start) and moved <= NOISE_STANDARD_ERRORS * noise:
            return (f"The training loss has not moved after the warm-up ({start:.4f} over the first {self.window} "
                    f"steps, {now:.4f} at step {step}, within its own step-to-step noise). {self._advice()}")
        return None

    def _advice(self) -> str:
        rate = f"The learning rate {self.learning_rate:g}"
        if self.pretrained:
            return f"{rate} may be too high for a pretrained encoder (try 2e-5 to 2e-4) or far too low."
        if self.pretrained is False:
            return (f"{rate} may be too low for a model trained from scratch (try 1e-4 to 1e-3 with a warm-up), or "
                    "too high for it to settle.")
        return (f"{rate} may be too high for a pretrained encoder (try 2e-5 to 2e-4) or too low for a model trained "
                "from scratch.")

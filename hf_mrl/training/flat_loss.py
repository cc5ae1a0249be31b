"""A warning when the training loss has not moved after the warm-up."""

from __future__ import annotations

import math

import torch

__all__ = ["FLAT_LOSS_TOLERANCE", "FlatLossWatch"]

# A loss that has moved less than this share after the warm-up is reported as not learning.
FLAT_LOSS_TOLERANCE = 0.01


class FlatLossWatch:
    """Tells once when the loss has not moved after the warm-up: the usual sign of a learning rate that makes a
    pretrained encoder collapse (e.g. every input to the majority class) or that is far too small. It reads the
    loss of the first steps only, so later steps never wait for the device."""

    def __init__(self, warmup_steps, learning_rate: float, window: int = 10):
        warmup = int(warmup_steps) if not (isinstance(warmup_steps, float) and warmup_steps < 1) else 0
        self.check_at = max(warmup, window) + window
        self.window = window
        self.learning_rate = learning_rate
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
        start = sum(losses[: self.window]) / self.window
        now = sum(losses[-self.window:]) / self.window
        if math.isfinite(start) and abs(start - now) <= FLAT_LOSS_TOLERANCE * abs(start):
            return (
                f"The training loss has not moved after the warm-up ({start:.4f} over the first {self.window} steps, "
                f"{now:.4f} at step {step}). The learning rate {self.learning_rate:g} may be too high for a "
                "pretrained encoder (try 2e-5 to 2e-4) or too low for a model trained from scratch."
            )
        return None

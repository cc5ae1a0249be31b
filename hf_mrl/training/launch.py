"""How the training scripts ask Accelerate for their processes."""

from __future__ import annotations

import os

import torch

__all__ = ["use_cpu"]


def use_cpu(cpu_flag: bool) -> bool:
    """`--cpu`, or several processes launched (torchrun / `accelerate launch --multi_gpu`) on a machine without
    GPUs: Accelerate then runs them as multi-CPU data parallel over gloo. Without `cpu=True` there, each
    process would silently train alone on its own copy of the data."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return cpu_flag or (launched and not torch.cuda.is_available())

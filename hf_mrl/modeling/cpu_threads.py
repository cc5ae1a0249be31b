"""How many CPU threads the fused losses' kernels run on: torch's thread count, but never more than the CPUs this
process may use.

With more torch threads than CPUs (a container whose `os.cpu_count()` shows the host, a launcher that sets
`OMP_NUM_THREADS` for a bigger machine), every parallel region of a chunked kernel waits for threads that share a
core; one large matmul hides that, a loss made of many smaller products does not. Measured on 2 CPUs, batch 256,
dim 2048, 100,000 labels, 4 torch threads: MRL-E's fused loss 2.02x one head + cross-entropy at 4 threads against
1.37x at 1 thread (fixed chunks). The losses therefore run their kernels within the usable CPUs and give torch's
setting back afterwards.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

__all__ = ["usable_cpus", "kernel_threads", "threads_within_cpus"]


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def kernel_threads(tensor: torch.Tensor) -> int:
    """Threads a fused kernel runs on for `tensor`: torch's CPU threads capped at the usable CPUs; 1 on an
    accelerator (what chunk sizes scale by)."""
    return _capped_threads() if tensor.device.type == "cpu" else 1


def _capped_threads() -> int:
    return max(1, min(torch.get_num_threads(), usable_cpus()))


@contextmanager
def threads_within_cpus(device: torch.device):
    """Runs the block with torch's CPU threads capped at the usable CPUs (for work on a CPU `device`), then
    restores the caller's setting, also on error."""
    requested = torch.get_num_threads()
    threads = _capped_threads() if device.type == "cpu" else requested  # no affinity lookup for an accelerator
    if threads == requested:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(requested)

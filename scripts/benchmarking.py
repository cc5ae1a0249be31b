"""Measuring helpers the benchmark scripts share: peak memory of one step, a clock that waits for CUDA, methods
timed taking turns, and the ratio of two methods timed so."""

from __future__ import annotations

import statistics
import time
import tracemalloc
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

__all__ = ["interleaved_times", "make_clock", "paired_ratio", "peak_memory", "PEAK_MEMORY_SOURCE"]

PEAK_MEMORY_SOURCE = {
    "cpu": "torch's profiler memory events + numpy's allocations (tracemalloc)",
    "cuda": "torch.cuda.max_memory_allocated",
}


def peak_memory(step: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Peak bytes allocated during one call of `step`, above what was allocated before it.

    CUDA: the caching allocator's peak. CPU: torch has no allocator statistics, so every allocation and free of
    torch's allocator is read from the profiler's memory events (`profile_memory=True`) and summed in time order;
    numpy arrays (the evaluators' embeddings) are counted by tracemalloc, and the two peaks added (an upper bound
    when they do not coincide). Run it on an untimed step: profiling slows the step down.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    start, _ = tracemalloc.get_traced_memory()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    _, python_peak = tracemalloc.get_traced_memory()
    if not tracing:
        tracemalloc.stop()
    events = sorted((event.start_ns(), event.nbytes()) for event in prof.profiler.kineto_results.events()
                    if event.name() == "[memory]" and event.device_type().name == "CPU")
    current = torch_peak = 0
    for _, nbytes in events:
        current += nbytes
        torch_peak = max(torch_peak, current)
    return torch_peak + max(0, python_peak - start)


def make_clock(kind: str = "wall", device: torch.device | str = "cpu") -> Callable[[], float]:
    """Wall (`perf_counter`) or this process's CPU seconds (`process_time`); on CUDA, read after the queued kernels
    have finished."""
    read = time.perf_counter if kind == "wall" else time.process_time
    device = torch.device(device)
    if device.type != "cuda":
        return read

    def clock() -> float:
        torch.cuda.synchronize(device)
        return read()

    return clock


def paired_ratio(times: list[float], baseline_times: list[float]) -> float:
    """The median of the per-repeat ratios of two methods timed interleaved (repeat i of each next to the other),
    so slow drifts of the machine's speed cancel out, where a ratio of medians would keep them."""
    return statistics.median(time / base for time, base in zip(times, baseline_times, strict=True))


def interleaved_times(runs: dict[str, Callable[[], object]], repeats: int,
                      clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds of each run, `repeats` times, the runs taking turns (repeat i of every method next to the others, so
    load from other processes and slow drifts of the machine's speed hit all alike), after one untimed call each."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = clock()
            run()
            times[name].append(clock() - start)
    return times

"""Forward + backward time of the nested Matryoshka heads against one full-dim `nn.Linear` head.

    python scripts/bench_heads.py                 # (256, 2048, 1,000) and (256, 2048, 100,000)
    python scripts/bench_heads.py --labels 1000 --repeats 10

Each head gets the upstream gradient of its own output shape (one (batch, labels) slice per nesting
dim for the nested heads), so the numbers are the heads' own cost; `--with-loss` adds the
cross-entropy (Matryoshka CE summed over dims for the nested heads). Methods are timed interleaved,
repeat by repeat, and the median is reported, so machine noise hits every method alike.
Targets: MRL-E <= 1.15x the single head; MRL (separate weights per dim, ~2x the FLOPs) <= 2.3x.
On a machine shared with other jobs, `--clock cpu --threads 1` times CPU seconds of this process,
which other processes disturb far less than wall time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from hf_mrl.losses import matryoshka_cross_entropy
from hf_mrl.nesting import NestedLinear, default_matryoshka_dims


def make_step(head: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, with_loss: bool, nested: bool):
    upstream = None

    def step():
        nonlocal upstream
        inputs.grad = None
        head.zero_grad(set_to_none=True)
        out = head(inputs)
        if with_loss:
            if nested:
                loss, _ = matryoshka_cross_entropy(out, labels, [1.0] * out.shape[0])
            else:
                loss = F.cross_entropy(out, labels)
            loss.backward()
        else:
            if upstream is None:
                upstream = torch.randn_like(out)
            out.backward(upstream)

    return step


def bench(batch: int, dim: int, labels: int, repeats: int, with_loss: bool, clock) -> dict[str, float]:
    torch.manual_seed(0)
    dims = default_matryoshka_dims(dim)
    inputs = torch.randn(batch, dim, requires_grad=True)
    targets = torch.randint(0, labels, (batch,))
    steps = {
        "single full-dim nn.Linear": make_step(nn.Linear(dim, labels), inputs, targets, with_loss, nested=False),
        f"MRL-E ({len(dims)} dims)": make_step(NestedLinear(dims, labels, efficient=True), inputs, targets, with_loss, True),
        f"MRL ({len(dims)} dims)": make_step(NestedLinear(dims, labels, efficient=False), inputs, targets, with_loss, True),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up
        step()
    for _ in range(repeats):
        for name, step in steps.items():
            start = clock()
            step()
            times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--labels", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--with-loss", action="store_true", help="include the (Matryoshka) cross-entropy")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="wall time or this process's CPU time")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, forward+backward, "
        f"{args.clock} clock, median of {args.repeats}"
    )
    for labels in args.labels:
        results = bench(args.batch, args.dim, labels, args.repeats, args.with_loss, clock)
        baseline = results["single full-dim nn.Linear"]
        print(f"\nbatch {args.batch}, dim {args.dim}, {labels:,} labels{' (with loss)' if args.with_loss else ''}")
        print(f"{'head':<28}{'ms':>10}{'ratio':>9}")
        for name, seconds in results.items():
            print(f"{name:<28}{seconds * 1e3:>10.1f}{seconds / baseline:>8.2f}x")


if __name__ == "__main__":
    main()

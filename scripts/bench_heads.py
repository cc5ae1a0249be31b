"""Forward + backward time and peak memory of the nested Matryoshka heads against one full-dim `nn.Linear` head.

    python scripts/bench_heads.py                 # (256, 2048, 1,000) and (256, 2048, 100,000)
    python scripts/bench_heads.py --labels 1000 --repeats 10
    python scripts/bench_heads.py --with-loss --with-unfused --clock cpu --threads 1
    python scripts/bench_heads.py --with-loss --with-floor
    python scripts/bench_heads.py --with-loss --device cuda

Each head gets the upstream gradient of its own output shape (one (batch, labels) slice per nesting
dim for the nested heads), so the numbers are the heads' own cost. `--with-loss` adds the cross-entropy:
the nested heads then run the fused heads + Matryoshka cross-entropy (`nested_heads_cross_entropy`, no
(num_dims, batch, labels) tensor), and `--with-unfused` adds the path it replaces (every dim's logits, then
`matryoshka_cross_entropy`) beside it. `--chunk-sizes` times the fused loss at several label-chunk sizes.
`--with-floor` adds each head's matrix products alone (no softmax, loss or autograd; see
`make_products_step`): what the fused loss costs over its own products, beside what cross-entropy costs
one head over its products.
Methods are timed interleaved, repeat by repeat; the table shows each method's median time, and its ratio to
the single head is the median of the per-repeat ratios (each method against the single head timed next to it),
so slow drifts of the machine's speed cancel out of the ratios. Peak memory is measured in one extra, untimed
step per method, from the memory events of torch's profiler (`profile_memory=True`: every CPU allocation and
free of torch's allocator), as the peak of the bytes allocated during the step above those held before it
(parameter gradients included).
Targets: MRL-E <= 1.15x the single head; MRL (separate weights per dim, ~2x the FLOPs) <= 2.3x.
On a machine shared with other jobs, `--clock cpu --threads 1` times CPU seconds of this process,
which other processes disturb far less than wall time. With `--device cuda` the clock is read after
`torch.cuda.synchronize()`, and peak memory is the allocator's (`torch.cuda.max_memory_allocated`).
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from benchmarking import PEAK_MEMORY_SOURCE, interleaved_times, make_clock, paired_ratio, peak_memory
from torch import nn

from hf_mrl.modeling.cpu_threads import kernel_threads
from hf_mrl.modeling.fused_cross_entropy import (
    DEFAULT_CHUNK_SIZE,
    _add_mm,
    _mm_into,
    nested_heads_cross_entropy,
)
from hf_mrl.modeling.losses import matryoshka_cross_entropy
from hf_mrl.modeling.nesting import NestedLinear, block_bounds, default_matryoshka_dims


def make_step(head: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, with_loss: bool, nested: bool,
              fused: bool = False, chunk_size: int | None = None):
    upstream = None

    def step():
        nonlocal upstream
        inputs.grad = None
        head.zero_grad(set_to_none=True)
        if with_loss and fused:
            loss = nested_heads_cross_entropy(head, inputs, labels, [1.0] * len(head.dims), chunk_size=chunk_size).loss
            loss.backward()
            return
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


def make_products_step(inputs: torch.Tensor, head: NestedLinear | nn.Linear, dims: list[int],
                       chunk_size: int | None = None):
    """The matrix products alone of a head + cross-entropy step, over the fused loss's chunks of labels and the
    whole batch, without softmax, loss, autograd or a memory limit: forward logits, then the input and weight
    gradients, with the logits standing in for their gradient. For the nested heads these are the per-block
    products and running sums (MRL-E: forward, and reversed over the dims' gradients in backward) or one product
    per head (MRL) that any exact implementation runs: the floor under the fused loss. The gradient products go
    through the fused loss's own helpers (`_mm_into`, `_add_mm`: narrow products transposed), so both run them alike."""
    if isinstance(head, nn.Linear):
        heads, bounds = [(head.weight, head.bias)], [(0, dims[-1])]
    elif head.efficient:
        heads, bounds = [(head.classifier.weight, head.classifier.bias)] * len(dims), block_bounds(dims)
    else:
        heads, bounds = [(h.weight, h.bias) for h in head.heads], [(0, dim) for dim in dims]
    running = isinstance(head, NestedLinear) and head.efficient
    batch, num_labels, last = inputs.shape[0], heads[0][0].shape[0], len(heads) - 1
    if chunk_size is None:  # the fused loss's default on this device
        chunk_size = DEFAULT_CHUNK_SIZE * kernel_threads(inputs)

    @torch.no_grad()
    def step():
        x = inputs.detach()
        grad_x = torch.empty_like(x)
        grad_weights = [torch.empty_like(weight) for weight in dict.fromkeys(weight for weight, _ in heads)]
        buffer = x.new_empty(len(heads), batch, min(chunk_size, num_labels))
        for start in range(0, num_labels, chunk_size):
            labels = slice(start, min(start + chunk_size, num_labels))
            outs = buffer[:, :, : labels.stop - start]
            for index, ((weight, bias), (low, high)) in enumerate(zip(heads, bounds)):
                previous = outs[index - 1] if running and index else bias[labels]
                torch.addmm(previous, x[:, low:high], weight[labels, low:high].t(), out=outs[index])
            for index in reversed(range(len(heads))):  # the largest dim first: it writes, the others add (MRL)
                (weight, _), (low, high) = heads[index], bounds[index]
                if running and index < last:
                    outs[index].add_(outs[index + 1])
                first = start == 0 and (running or index == last)
                (_mm_into if first else _add_mm)(grad_x[:, low:high], outs[index], weight[labels, low:high])
                grad_weight = grad_weights[0 if running else index][labels, low:high]
                _mm_into(grad_weight, outs[index].t(), x[:, low:high])
        return grad_x, grad_weights

    return step


def bench(batch: int, dim: int, labels: int, repeats: int, with_loss: bool, with_unfused: bool, with_floor: bool,
          chunk_sizes: list[int] | None, clock, device: torch.device) -> dict[str, tuple[float, float, int]]:
    """{method: (median seconds, median per-repeat ratio to the single head, peak bytes)}."""
    torch.manual_seed(0)
    dims = default_matryoshka_dims(dim)
    inputs = torch.randn(batch, dim, device=device, requires_grad=True)
    targets = torch.randint(0, labels, (batch,), device=device)
    single = nn.Linear(dim, labels).to(device)
    efficient = NestedLinear(dims, labels, efficient=True).to(device)
    separate = NestedLinear(dims, labels, efficient=False).to(device)

    def reset():
        inputs.grad = None
        for module in (single, efficient, separate):
            module.zero_grad(set_to_none=True)

    steps = {"single full-dim nn.Linear": make_step(single, inputs, targets, with_loss, nested=False)}
    if not with_loss:
        steps[f"MRL-E ({len(dims)} dims)"] = make_step(efficient, inputs, targets, False, True)
        steps[f"MRL ({len(dims)} dims)"] = make_step(separate, inputs, targets, False, True)
    for size in chunk_sizes or [None] * with_loss:  # None: the fused loss's default (scaled by CPU threads)
        suffix = f", chunk {size}" if chunk_sizes else ""
        steps[f"MRL-E fused{suffix}"] = make_step(efficient, inputs, targets, True, True, fused=True, chunk_size=size)
        steps[f"MRL fused{suffix}"] = make_step(separate, inputs, targets, True, True, fused=True, chunk_size=size)
    if with_loss and with_floor:
        steps["one head, products only"] = make_products_step(inputs, single, dims)
        steps["MRL-E products only"] = make_products_step(inputs, efficient, dims)
        steps["MRL products only"] = make_products_step(inputs, separate, dims)
    if with_loss and with_unfused:
        steps["MRL-E unfused"] = make_step(efficient, inputs, targets, True, True)
        steps["MRL unfused"] = make_step(separate, inputs, targets, True, True)
    times = interleaved_times(steps, repeats, clock)
    peaks = {}
    for name, step in steps.items():
        reset()  # frees the gradients the step would otherwise free inside the measurement
        peaks[name] = peak_memory(step, device)
    base = times["single full-dim nn.Linear"]
    return {name: (statistics.median(times[name]), paired_ratio(times[name], base), peaks[name]) for name in steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--labels", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--with-loss", action="store_true", help="include the (Matryoshka) cross-entropy, fused")
    parser.add_argument("--with-unfused", action="store_true",
                        help="with --with-loss: also time every dim's logits + matryoshka_cross_entropy (the unfused path)")
    parser.add_argument("--with-floor", action="store_true",
                        help="with --with-loss: also time the matrix products alone (no softmax, loss or autograd)")
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=None,
                        help=f"time the fused loss at these label-chunk sizes (default: the loss's own, {DEFAULT_CHUNK_SIZE} x CPU threads)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="wall time or this process's CPU time")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch threads, one run per value, e.g. 1 2 4 (default: torch's choice); several values end "
                             "with each method's ratio at each and its change from the first")
    parser.add_argument("--device", type=torch.device, default=torch.device("cpu"), help="cpu (default) or cuda")
    args = parser.parse_args()
    if args.chunk_sizes:
        args.with_loss = True
    if args.device.type == "cuda" and args.clock == "cpu":
        parser.error("--clock cpu times this process's CPU work, not the GPU's: use --clock wall with --device cuda")
    ratios = {}  # (labels, method) -> {threads: ratio to one head}
    for threads in args.threads or [None]:
        if threads is not None:
            torch.set_num_threads(threads)
        for key, ratio in run(args).items():
            ratios.setdefault(key, {})[torch.get_num_threads()] = ratio
    if args.threads and len(args.threads) > 1:
        print("\nratio to one head by threads (target: within +0.1 of the first):")
        for (labels, name), by_threads in ratios.items():
            first = next(iter(by_threads.values()))
            cells = ", ".join(f"{threads}: {ratio:.2f} ({ratio - first:+.2f})" for threads, ratio in by_threads.items())
            print(f"  {labels:>7,} labels  {name:<28} {cells}")


def run(args) -> dict[tuple[int, str], float]:
    """One side-by-side run at the current thread count; {(labels, method): time ratio to one head}."""
    clock = make_clock(args.clock, args.device)
    memory_source = PEAK_MEMORY_SOURCE[args.device.type]
    ratios = {}
    print(
        f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, float32, forward+backward, "
        f"{args.clock} clock, median of {args.repeats}; peak memory from {memory_source}"
    )
    for labels in args.labels:
        results = bench(args.batch, args.dim, labels, args.repeats, args.with_loss, args.with_unfused,
                        args.with_floor, args.chunk_sizes, clock, args.device)
        _, _, base_memory = results["single full-dim nn.Linear"]
        print(f"\nbatch {args.batch}, dim {args.dim}, {labels:,} labels{' (with loss)' if args.with_loss else ''}")
        print(f"{'head':<30}{'ms':>10}{'ratio':>9}{'peak MiB':>11}{'ratio':>9}")
        for name, (seconds, ratio, peak) in results.items():
            print(f"{name:<30}{seconds * 1e3:>10.1f}{ratio:>8.2f}x{peak / 2**20:>11.1f}{peak / base_memory:>8.2f}x")
            if name != "single full-dim nn.Linear":
                ratios[(labels, name)] = ratio
    return ratios


if __name__ == "__main__":
    main()

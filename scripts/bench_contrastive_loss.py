"""Forward + backward time of the Matryoshka contrastive loss against one full-dim CLIP loss.

Measured side by side in one run, on synthetic random embeddings (only the shapes matter for speed):
  (a) `hf_mrl.modeling.losses.matryoshka_contrastive_loss` over the nesting dims (symmetric, like CLIP);
  (b) one full-dim CLIP loss: normalise, one matmul, symmetric cross-entropy;
  (c) the naive per-dim loop: truncate, normalise, full matmul and symmetric cross-entropy at every dim.
Prints the median time of each (after warm-up) and the ratios (a)/(b) (target <= 1.3) and (c)/(b) (medians of
the per-repeat ratios), and the peak memory of one more, untimed step of each beside it
(`benchmarking.peak_memory`).

    python scripts/bench_contrastive_loss.py                  # batch 4096, dim 1024, 9 dims (4 ... 1024)
    python scripts/bench_contrastive_loss.py --batch 1024 --dim 512 --repeats 5 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from benchmarking import PEAK_MEMORY_SOURCE, paired_ratio, peak_memory

from hf_mrl.modeling.losses import matryoshka_contrastive_loss
from hf_mrl.testing_utils import matryoshka_contrastive_loss_reference


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4096, help="pairs per batch (the similarity matrix is batch^2)")
    parser.add_argument("--dim", type=int, default=1024, help="full embedding dim")
    parser.add_argument(
        "--dims",
        type=int,
        nargs="+",
        default=None,
        help="nesting dims; default: --dim halved 8 times (the MRL paper's nesting depth of 9), stopping at 1",
    )
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each loss (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--device", type=torch.device, default=torch.device("cpu"),
                        help="cpu (default) or cuda (the clock is read after torch.cuda.synchronize())")
    parser.add_argument("--skip-naive", action="store_true", help="skip (c), the slowest")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="CPU threads for torch, one run per value, e.g. 1 2 4 (default: torch's choice); several "
                             "values end with the ratio at each and its change from the first")
    args = parser.parse_args()
    for name in ("batch", "dim", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if any(threads < 1 for threads in args.threads or []):
        parser.error(f"--threads must all be >= 1, got {args.threads}")
    if args.dims and not all(1 <= dim <= args.dim for dim in args.dims):
        parser.error(f"--dims must lie in 1..--dim ({args.dim}), got {args.dims}")
    return args


def clip_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).t() / temperature
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


def time_forward_backward(loss_fn, image_embeds, text_embeds, device) -> float:
    image_embeds.grad = text_embeds.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    loss_fn(image_embeds, text_embeds).backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    ratios = {}
    for threads in args.threads or [None]:
        if threads:
            torch.set_num_threads(threads)
        ratios[torch.get_num_threads()] = run(args)
    if len(ratios) > 1:
        first, base = next(iter(ratios.items()))
        print("\nratio (a)/(b) by threads (target: within +0.1 of the first):")
        for threads, ratio in ratios.items():
            print(f"  {threads} thread(s): {ratio:.2f}  ({ratio - base:+.2f} vs {first})")


def run(args) -> float:
    """One side-by-side run at the current thread count; returns the ratio (a)/(b)."""
    device = args.device
    dtype = getattr(torch, args.dtype)
    dims = args.dims or sorted({args.dim >> shift for shift in range(9)} - {0})
    weights = [1.0] * len(dims)
    generator = torch.Generator(device="cpu").manual_seed(0)
    image_embeds = torch.randn(args.batch, args.dim, generator=generator, dtype=dtype).to(device).requires_grad_()
    text_embeds = torch.randn(args.batch, args.dim, generator=generator, dtype=dtype).to(device).requires_grad_()

    candidates = {
        "(a) matryoshka_contrastive_loss": lambda x, y: (
            matryoshka_contrastive_loss(x, y, dims, weights, args.temperature).loss
        ),
        "(b) full-dim CLIP loss": lambda x, y: clip_loss(x, y, args.temperature),
    }
    if not args.skip_naive:
        candidates["(c) naive per-dim loop"] = lambda x, y: (
            matryoshka_contrastive_loss_reference(x, y, dims, weights, args.temperature).loss
        )

    print(
        f"batch {args.batch}, dim {args.dim}, {len(dims)} nesting dims {dims}, {args.dtype} on {device} "
        f"({torch.get_num_threads()} CPU threads); forward + backward, median of {args.repeats} "
        f"after {args.warmup} warm-up; peak memory from {PEAK_MEMORY_SOURCE[device.type]}"
    )
    for _ in range(args.warmup):
        for loss_fn in candidates.values():
            time_forward_backward(loss_fn, image_embeds, text_embeds, device)
    # Interleaved repeats, so that load from other processes hits every candidate alike.
    times = {name: [] for name in candidates}
    for _ in range(args.repeats):
        for name, loss_fn in candidates.items():
            times[name].append(time_forward_backward(loss_fn, image_embeds, text_embeds, device))
    medians = {name: statistics.median(values) for name, values in times.items()}
    peaks = {}
    for name, loss_fn in candidates.items():
        image_embeds.grad = text_embeds.grad = None
        peaks[name] = peak_memory(lambda loss_fn=loss_fn: loss_fn(image_embeds, text_embeds).backward(), device)
    base_peak = peaks["(b) full-dim CLIP loss"]
    for name, median in medians.items():
        spread = ", ".join(f"{value:.3f}" for value in times[name])
        print(f"  {name:34s} {median * 1e3:9.1f} ms   peak {peaks[name] / 2**20:8.1f} MiB "
              f"({peaks[name] / base_peak:.2f}x)   (runs: {spread} s)")
    baseline = times["(b) full-dim CLIP loss"]
    ratio = paired_ratio(times["(a) matryoshka_contrastive_loss"], baseline)
    print(f"  ratio (a)/(b) = {ratio:.2f}   (target <= 1.3; median of the per-repeat ratios)")
    if "(c) naive per-dim loop" in medians:
        print(f"  ratio (c)/(b) = {paired_ratio(times['(c) naive per-dim loop'], baseline):.2f}")
    return ratio


if __name__ == "__main__":
    main()
